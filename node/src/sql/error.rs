//! SQL errors with PostgreSQL SQLSTATEs.
//!
//! Every failure a statement can meet (parse, plan, execution, storage)
//! becomes one [`SqlError`] carrying the SQLSTATE a PostgreSQL client
//! expects, so drivers can react to `23505`, `42P01`, `40001` and friends.

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use thiserror::Error;

use crate::storage::StorageError;

/// An error reported to the client as a PostgreSQL `ErrorResponse`.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct SqlError {
    pub sqlstate: &'static str,
    pub message: String,
    pub detail: Option<String>,
    /// PostgreSQL's `CONTEXT` (where the error happened, e.g. a COPY line).
    pub context: Option<String>,
}

impl SqlError {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> Self {
        SqlError {
            sqlstate,
            message: message.into(),
            detail: None,
            context: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        SqlError::new("42601", message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        SqlError::new("0A000", message)
    }

    pub fn aborted() -> Self {
        SqlError::new(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }
}

impl From<StorageError> for SqlError {
    fn from(e: StorageError) -> Self {
        let detail = match &e {
            StorageError::UniqueViolation { detail, .. } => Some(detail.clone()),
            _ => None,
        };
        SqlError {
            sqlstate: e.sqlstate(),
            message: e.to_string(),
            detail,
            context: None,
        }
    }
}

fn from_arrow(e: &ArrowError) -> SqlError {
    let msg = e.to_string();
    if msg.contains("is declared as non-nullable but contains null values") {
        return exec_error(&msg);
    }
    if matches!(e, ArrowError::DivideByZero) {
        return SqlError::new("22012", "division by zero");
    }
    if let Some(pg) = pg_cast_error(&msg) {
        return pg;
    }
    let state = match e {
        ArrowError::CastError(m) | ArrowError::ParseError(m) if m.contains("overflow") => "22003",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ComputeError(m) if m.contains("verflow") => "22003",
        ArrowError::ArithmeticOverflow(_) => "22003",
        _ => "XX000",
    };
    SqlError::new(state, clean(&msg))
}

/// PostgreSQL's error for a failed cast that Arrow reports in its own
/// words: an integer out of range, a numeric too wide for its precision,
/// date or timestamp text that is malformed (22007) or names a day that
/// does not exist (22008).
fn pg_cast_error(msg: &str) -> Option<SqlError> {
    if let Some(rest) = msg.split("Can't cast value ").nth(1) {
        let word = match rest.rsplit(" to type ").next().unwrap_or("") {
            "Int16" | "Int8" => "smallint",
            "Int32" => "integer",
            "Int64" => "bigint",
            _ => return None,
        };
        return Some(SqlError::new("22003", format!("{word} out of range")));
    }
    if msg.contains("too large to store in a Decimal") {
        return Some(SqlError::new("22003", "numeric field overflow"));
    }
    let rest = msg.split("Cannot cast string '").nth(1)?;
    let (text, target) = rest.split_once("' to value of ")?;
    let kind = if target.starts_with("Date") {
        "date"
    } else if target.starts_with("Timestamp") {
        "timestamp"
    } else {
        return None;
    };
    // Digits in a date's shape that still fail name a day that does not exist.
    let shaped = text.len() >= 10
        && text.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    Some(if shaped {
        SqlError::new(
            "22008",
            format!("date/time field value out of range: \"{text}\""),
        )
    } else {
        SqlError::new(
            "22007",
            format!("invalid input syntax for type {kind}: \"{text}\""),
        )
    })
}

/// Drops DataFusion's "Error during planning: " style prefixes.
fn clean(msg: &str) -> String {
    let mut m = msg;
    for p in [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "Schema error: ",
        "Invalid argument error: ",
        "Cast error: ",
        "Parser error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Optimizer rule 'simplify_expressions' failed\ncaused by\n",
    ] {
        if let Some(rest) = m.strip_prefix(p) {
            m = rest;
        }
    }
    m.to_string()
}

impl From<ArrowError> for SqlError {
    fn from(e: ArrowError) -> Self {
        from_arrow(&e)
    }
}

/// Inside DataFusion (functions, plan rules) an [`SqlError`] travels as
/// `External`, and comes back out with its SQLSTATE (below).
impl From<SqlError> for DataFusionError {
    fn from(e: SqlError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<StorageError>() {
                Ok(s) => SqlError::from(*s),
                Err(other) => match other.downcast::<SqlError>() {
                    Ok(s) => *s,
                    Err(other) => match other.downcast::<DataFusionError>() {
                        Ok(d) => SqlError::from(*d),
                        Err(other) => SqlError::new("XX000", other.to_string()),
                    },
                },
            },
            DataFusionError::Context(_, inner) => SqlError::from(*inner),
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(d) => SqlError::from(d),
                Err(arc) => shared_error(&arc),
            },
            DataFusionError::Diagnostic(_, inner) => SqlError::from(*inner),
            DataFusionError::ArrowError(a, _) => from_arrow(&a),
            DataFusionError::SQL(p, _) => syntax_error(&clean(&p.to_string())),
            DataFusionError::NotImplemented(m) => SqlError::unsupported(m),
            DataFusionError::SchemaError(s, _) => {
                let state = match s.as_ref() {
                    SchemaError::FieldNotFound { .. } => "42703",
                    SchemaError::DuplicateQualifiedField { .. }
                    | SchemaError::DuplicateUnqualifiedField { .. } => "42702",
                    SchemaError::AmbiguousReference { .. } => "42702",
                };
                SqlError::new(state, clean(&s.to_string()))
            }
            DataFusionError::Plan(m) => plan_error(&m),
            DataFusionError::Execution(m) => exec_error(&m),
            DataFusionError::ResourcesExhausted(m) => SqlError::new("53200", m),
            other => {
                let m = other.to_string();
                pg_cast_error(&m).unwrap_or_else(|| SqlError::new("XX000", clean(&m)))
            }
        }
    }
}

/// The error of a `Shared` DataFusion error still held elsewhere (a
/// worker's error that several partitions report): its SQLSTATE is kept.
fn shared_error(e: &DataFusionError) -> SqlError {
    match e {
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<SqlError>() {
                s.clone()
            } else if let Some(d) = inner.downcast_ref::<DataFusionError>() {
                shared_error(d)
            } else {
                SqlError::new("XX000", inner.to_string())
            }
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            shared_error(inner)
        }
        DataFusionError::Shared(inner) => shared_error(inner),
        DataFusionError::ArrowError(a, _) => from_arrow(a),
        DataFusionError::Plan(m) => plan_error(m),
        DataFusionError::Execution(m) => exec_error(m),
        other => SqlError::new("XX000", clean(&other.to_string())),
    }
}

/// PostgreSQL's wording for parser errors: `syntax error at or near "x"`.
pub fn syntax_error(m: &str) -> SqlError {
    let m = m.strip_prefix("sql parser error: ").unwrap_or(m);
    match m.rsplit_once("found: ") {
        Some((_, near)) => {
            let near = near.split_whitespace().next().unwrap_or(near);
            let near = near.split(" at Line").next().unwrap_or(near);
            if near == "EOF" {
                SqlError::syntax("syntax error at end of input").with_detail(m.to_string())
            } else {
                SqlError::syntax(format!("syntax error at or near \"{near}\""))
                    .with_detail(m.to_string())
            }
        }
        None => SqlError::syntax(format!("syntax error: {m}")),
    }
}

fn plan_error(m: &str) -> SqlError {
    if let Some(rest) = m.strip_prefix("table '") {
        let name = rest.split('\'').next().unwrap_or(rest);
        let short = name.rsplit('.').next().unwrap_or(name);
        return SqlError::new("42P01", format!("relation \"{short}\" does not exist"));
    }
    if m.contains("No field named") {
        return SqlError::new("42703", clean(m));
    }
    if m.contains("Invalid function") || m.contains("No function matches") {
        return SqlError::new("42883", clean(m));
    }
    if m.contains("Cannot infer common")
        || m.contains("Cannot coerce")
        || m.contains("cannot be cast")
    {
        return SqlError::new("42804", clean(m));
    }
    if m.contains("Unsupported SQL type") {
        return SqlError::new("42704", clean(m));
    }
    SqlError::new("42601", clean(m))
}

fn exec_error(m: &str) -> SqlError {
    if let Some(pg) = pg_cast_error(m) {
        return pg;
    }
    if m.contains("is declared as non-nullable but contains null values") {
        let col = m.split('\'').nth(1).unwrap_or("?");
        return SqlError::new(
            "23502",
            format!("null value in column \"{col}\" violates not-null constraint"),
        );
    }
    let lower = m.to_ascii_lowercase();
    let state = if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012"
    } else if lower.contains("overflow") {
        "22003"
    } else if lower.contains("cast") || lower.contains("parse") {
        "22P02"
    } else {
        "XX000"
    };
    SqlError::new(state, clean(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_errors_get_postgres_states() {
        let state = |m: &str| from_arrow(&ArrowError::CastError(m.into())).sqlstate;
        assert_eq!(state("Can't cast value 3000000000 to type Int32"), "22003");
        assert_eq!(
            state("Cannot cast string 'x' to value of Date32 type"),
            "22007"
        );
        assert_eq!(
            state("Cannot cast string '2024-02-30' to value of Date32 type"),
            "22008"
        );
        assert_eq!(
            from_arrow(&ArrowError::InvalidArgumentError(
                "12345.68 is too large to store in a Decimal128 of precision 5. Max is 999.99"
                    .into()
            ))
            .sqlstate,
            "22003"
        );
    }

    #[test]
    fn shared_errors_keep_their_sqlstate() {
        let inner = std::sync::Arc::new(DataFusionError::External(Box::new(SqlError::new(
            "22003",
            "integer out of range",
        ))));
        let _other_holder = inner.clone();
        let e = SqlError::from(DataFusionError::Shared(inner));
        assert_eq!(
            (e.sqlstate, e.message.as_str()),
            ("22003", "integer out of range")
        );
    }
}
