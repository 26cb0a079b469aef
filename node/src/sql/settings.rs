//! Session settings for `SET` / `SHOW`: the PostgreSQL parameters clients
//! set or ask for, Quiver's own `quiver.*` settings, and DataFusion's
//! `datafusion.*` options (forwarded to the session's DataFusion config).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use parking_lot::RwLock;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Value};

use super::error::SqlError;

/// Defaults of the parameters a session knows.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lc_messages", "C"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("quiver.executor_slow_start_interval", "10ms"),
    ("quiver.max_adaptive_executor_pool_size", "16"),
    ("quiver.max_cached_conns_per_worker", "1"),
    ("quiver.max_shared_pool_size", "0"),
    ("quiver.shard_count", "32"),
    ("quiver.shard_replication_factor", "1"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", "15.0"),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// The settings of one session.
///
/// The map is shared with the session's `current_setting()` function.
#[derive(Debug, Clone)]
pub struct Settings {
    shared: Arc<RwLock<BTreeMap<String, String>>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shared: Arc::new(RwLock::new(
                DEFAULTS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
        }
    }
}

/// `current_setting(name)` for one session.
pub fn current_setting_udf(settings: &Settings) -> ScalarUDF {
    let shared = settings.shared.clone();
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arr = match &args[0] {
                ColumnarValue::Scalar(s) => s.to_array()?,
                ColumnarValue::Array(a) => a.clone(),
            };
            let names = datafusion::arrow::compute::cast(&arr, &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("current_setting: not text".into()))?;
            let map = shared.read();
            let mut out = Vec::with_capacity(names.len());
            for n in names.iter() {
                match n {
                    None => out.push(None),
                    Some(n) => match map.get(&show_key(&n.to_ascii_lowercase())) {
                        Some(v) => out.push(Some(v.clone())),
                        None => {
                            return Err(DataFusionError::External(Box::new(SqlError::new(
                                "42704",
                                format!("unrecognized configuration parameter \"{n}\""),
                            ))))
                        }
                    },
                }
            }
            let out: ArrayRef = Arc::new(StringArray::from(out));
            Ok(match &args[0] {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(out),
            })
        }),
    )
}

fn value_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

impl Settings {
    /// Sets a value before the session starts (node-wide defaults from the
    /// config file, e.g. `[sharding] shard_count`).
    pub fn set_default(&self, name: &str, value: &str) {
        self.shared
            .write()
            .insert(name.to_ascii_lowercase(), value.to_owned());
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.shared.read().get(&name.to_ascii_lowercase()).cloned()
    }

    /// Applies `SET`; returns the command tag.
    pub fn apply_set(&mut self, set: &Set, ctx: &SessionContext) -> Result<String, SqlError> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable
                    .0
                    .iter()
                    .map(|p| p.to_string().trim_matches('"').to_string())
                    .collect::<Vec<_>>()
                    .join(".")
                    .to_ascii_lowercase();
                let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
                self.set(&name, &value, ctx)?;
            }
            Set::SetTimeZone { value, .. } => {
                self.shared
                    .write()
                    .insert("timezone".into(), value_text(value));
            }
            Set::SetNames { charset_name, .. } => {
                self.set("client_encoding", &charset_name.value, ctx)?;
            }
            Set::SetTransaction {
                modes,
                session: true,
                ..
            } => {
                if let Some(level) = super::isolation::requested(modes) {
                    self.set("default_transaction_isolation", level, ctx)?;
                }
            }
            Set::SetTransaction { .. } | Set::SetNamesDefault {} => {}
            other => {
                return Err(SqlError::unsupported(format!("{other} is not supported")));
            }
        }
        Ok("SET".into())
    }

    fn set(&mut self, name: &str, value: &str, ctx: &SessionContext) -> Result<(), SqlError> {
        if name.starts_with("datafusion.") {
            let state = ctx.state_ref();
            let mut state = state.write();
            state
                .config_mut()
                .options_mut()
                .set(name, value)
                .map_err(|e| SqlError::new("22023", e.to_string()))?;
            self.shared.write().insert(name.into(), value.into());
            return Ok(());
        }
        let value = if value.eq_ignore_ascii_case("default") {
            DEFAULTS
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        } else {
            value.to_string()
        };
        if name == "client_encoding" {
            let v = value.to_ascii_lowercase().replace(['-', '_'], "");
            if v != "utf8" && v != "unicode" {
                return Err(SqlError::new(
                    "0A000",
                    format!("encoding \"{value}\" is not supported; Quiver speaks UTF8"),
                ));
            }
        }
        check_quiver_setting(name, &value)?;
        if self.shared.read().contains_key(name) || name.contains('.') {
            self.shared.write().insert(name.into(), value);
            Ok(())
        } else {
            Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ))
        }
    }

    /// `SHOW name`: the column name and the value.
    pub fn show(&self, name: &str) -> Result<(String, String), SqlError> {
        let key = show_key(name);
        let key = key.as_str();
        self.shared
            .read()
            .get(key)
            .map(|v| (key.to_string(), v.clone()))
            .ok_or_else(|| {
                SqlError::new(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })
    }
}

/// Node-wide settings: they size the shared worker pool at start-up
/// (`[executor]` in the config file) and cannot change per session.
const NODE_WIDE: &[&str] = &[
    "quiver.max_cached_conns_per_worker",
    "quiver.max_shared_pool_size",
];

/// Refuses a value a `quiver.*` setting cannot take.
fn check_quiver_setting(name: &str, value: &str) -> Result<(), SqlError> {
    if NODE_WIDE.contains(&name) {
        return Err(SqlError::new(
            "55P02",
            format!(
                "parameter \"{name}\" cannot be changed now: set it in the [executor] section \
                 of the config file"
            ),
        ));
    }
    let ok = match name {
        "quiver.max_adaptive_executor_pool_size"
        | "quiver.shard_count"
        | "quiver.shard_replication_factor" => value.parse::<u32>().is_ok_and(|n| n > 0),
        "quiver.executor_slow_start_interval" => parse_millis(value).is_some(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(SqlError::new(
            "22023",
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        ))
    }
}

/// Milliseconds of a duration setting: `"10ms"`, `"2s"`, `"1min"`, or a
/// bare number of milliseconds.
pub fn parse_millis(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The executor's per-query limits from a session's settings.
pub fn exec_limits(settings: &Settings) -> (usize, std::time::Duration) {
    // SET and the config file check these values; the table's defaults
    // stand in only if one is somehow missing.
    let value = |name: &str| {
        settings.get(name).unwrap_or_else(|| {
            DEFAULTS
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
    };
    let pool = value("quiver.max_adaptive_executor_pool_size")
        .parse::<usize>()
        .unwrap_or(1);
    let slow = parse_millis(&value("quiver.executor_slow_start_interval")).unwrap_or(0);
    (pool.max(1), std::time::Duration::from_millis(slow))
}

/// The setting a `SHOW` names (`SHOW time zone`, `SHOW quiver.shard_count`).
pub fn show_key(words: &str) -> String {
    match words {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        other => other.replace(' ', "."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_checks() {
        assert_eq!(parse_millis("10ms"), Some(10));
        assert_eq!(parse_millis("2s"), Some(2000));
        assert_eq!(parse_millis("250"), Some(250));
        assert_eq!(parse_millis("0"), Some(0));
        assert_eq!(parse_millis("fast"), None);
        assert_eq!(parse_millis("5 parsecs"), None);
        assert!(check_quiver_setting("quiver.max_adaptive_executor_pool_size", "0").is_err());
        assert!(check_quiver_setting("quiver.max_adaptive_executor_pool_size", "4").is_ok());
        assert_eq!(
            check_quiver_setting("quiver.max_shared_pool_size", "4")
                .unwrap_err()
                .sqlstate,
            "55P02"
        );
        let s = Settings::default();
        assert_eq!(exec_limits(&s), (16, std::time::Duration::from_millis(10)));
    }
}
