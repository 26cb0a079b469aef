//! Timestamps as PostgreSQL writes them, for results and for casts to text.
//!
//! Step in the flow: DataFusion casts a timestamp to text in ISO form
//! (`2024-06-01T12:00:00+00:00`); PostgreSQL writes `2024-06-01
//! 21:00:00+09`, a `timestamptz` in the session's `TimeZone`, and the
//! fraction only when there is one. The front end uses
//! [`timestamp_text`] for text-format result columns. For casts inside a
//! query (`ts::text`, `CAST(ts AS varchar)`, and those type coercion adds),
//! [`TimestampTextRule`] runs after DataFusion's analyzer and replaces the
//! cast with `quiver_timestamp_text(ts, zone)`, the session's zone fixed
//! when the statement is planned (so a fragment that a worker runs shows
//! the same text as the coordinator would).
//!
//! Floats cast to text the same way: DataFusion writes `1.0` and `1e20`,
//! PostgreSQL `1` and `1e+20`; the rule makes such a cast
//! `quiver_float_text(x)`, which writes what the front end sends for a
//! float column.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use super::settings::Settings;

/// The name of the cast function in plans and fragments.
pub const TIMESTAMP_TEXT_FN: &str = "quiver_timestamp_text";

/// The session's `TimeZone` as an Arrow time zone, when it is a zone name
/// Arrow knows (`UTC`, `Europe/Paris`). Numeric offsets are left out: their
/// POSIX sign is the reverse of ISO's. `None`: show UTC.
pub fn session_time_zone(setting: &str) -> Option<Arc<str>> {
    let s = setting.trim().trim_matches('\'');
    if !s.chars().any(|c| c.is_ascii_alphabetic()) || s.eq_ignore_ascii_case("default") {
        return None;
    }
    let s = if s.eq_ignore_ascii_case("local") {
        "UTC"
    } else {
        s
    };
    Tz::from_str(s).ok().map(|_| Arc::from(s))
}

/// Ticks of `unit` per second.
fn per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// A timestamp array as PostgreSQL's text; `timestamptz` values in
/// `zone` (else in the array's own zone). Other arrays are an error.
pub fn timestamp_text(arr: &ArrayRef, zone: Option<&str>) -> Result<StringArray, ArrowError> {
    let DataType::Timestamp(unit, col_tz) = arr.data_type() else {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{TIMESTAMP_TEXT_FN}: expected a timestamp, got {}",
            arr.data_type()
        )));
    };
    let tz = col_tz
        .as_deref()
        .map(|col_tz| Tz::from_str(zone.unwrap_or(col_tz)))
        .transpose()?;
    let ticks = cast(arr, &DataType::Int64)?;
    let ticks = ticks.as_primitive::<Int64Type>();
    let per = per_second(*unit);
    let mut text = StringBuilder::with_capacity(ticks.len(), ticks.len() * 26);
    let mut buf = Vec::with_capacity(40);
    for v in ticks.iter() {
        let Some(v) = v else {
            text.append_null();
            continue;
        };
        let offset = tz.as_ref().map(|tz| {
            DateTime::from_timestamp(v.div_euclid(per), 0)
                .map(|utc| {
                    tz.offset_from_utc_datetime(&utc.naive_utc())
                        .fix()
                        .local_minus_utc()
                })
                .unwrap_or(0)
        });
        // PostgreSQL keeps microseconds: nanosecond values (`now()`) are
        // rounded to them (the infinities stay as they are).
        let (v, unit) = match unit {
            TimeUnit::Nanosecond if v != i64::MAX && v != i64::MIN => (
                v.div_euclid(1000) + i64::from(v.rem_euclid(1000) >= 500),
                TimeUnit::Microsecond,
            ),
            u => (v, *u),
        };
        buf.clear();
        quiver_copy::format_timestamp_at(v, unit, offset, &mut buf);
        text.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(text.finish())
}

/// `quiver_timestamp_text(ts, zone)`: [`timestamp_text`] as a function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimestampTextFn {
    signature: Signature,
}

impl Default for TimestampTextFn {
    fn default() -> Self {
        TimestampTextFn {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimestampTextFn {
    fn name(&self) -> &str {
        TIMESTAMP_TEXT_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ts, zone] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{TIMESTAMP_TEXT_FN} takes a timestamp and a zone"
            )));
        };
        let zone = match zone {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(z) | ScalarValue::Utf8View(z) | ScalarValue::LargeUtf8(z),
            ) => z.clone(),
            ColumnarValue::Scalar(ScalarValue::Null) => None,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "{TIMESTAMP_TEXT_FN}: the zone must be a text constant, got {}",
                    other.data_type()
                )))
            }
        };
        match ts {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(Arc::new(timestamp_text(
                a,
                zone.as_deref(),
            )?))),
            ColumnarValue::Scalar(s) => {
                let out = timestamp_text(&s.to_array()?, zone.as_deref())?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
        }
    }
}

/// The function, to register in every session.
pub fn timestamp_text_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TimestampTextFn::default()))
}

/// The name of the float cast function in plans and fragments.
pub const FLOAT_TEXT_FN: &str = "quiver_float_text";

/// `quiver_float_text(x)`: a float as PostgreSQL's text.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FloatTextFn {
    signature: Signature,
}

impl Default for FloatTextFn {
    fn default() -> Self {
        FloatTextFn {
            signature: Signature::uniform(
                1,
                vec![DataType::Float64, DataType::Float32],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for FloatTextFn {
    fn name(&self) -> &str {
        FLOAT_TEXT_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [x] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{FLOAT_TEXT_FN} takes one float"
            )));
        };
        let scalar = super::udf::all_scalar(&args.args);
        let a = x.clone().into_array(args.number_rows)?;
        let mut out = StringBuilder::with_capacity(a.len(), a.len() * 12);
        let mut buf = Vec::with_capacity(32);
        for i in 0..a.len() {
            if a.is_null(i) {
                out.append_null();
                continue;
            }
            buf.clear();
            match a.data_type() {
                DataType::Float32 => quiver_copy::format_f32(
                    a.as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                        .value(i),
                    &mut buf,
                ),
                _ => quiver_copy::format_f64(
                    a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .value(i),
                    &mut buf,
                ),
            }
            out.append_value(String::from_utf8_lossy(&buf));
        }
        let array: ArrayRef = Arc::new(out.finish());
        super::udf::columnar(array, scalar)
    }
}

/// The function, to register in every session.
pub fn float_text_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(FloatTextFn::default()))
}

/// Replaces casts of timestamps to text with [`TIMESTAMP_TEXT_FN`], in the
/// session's zone at planning time, and casts of floats to text with
/// [`FLOAT_TEXT_FN`].
#[derive(Debug)]
pub struct TimestampTextRule {
    settings: Settings,
    udf: Arc<ScalarUDF>,
    float_udf: Arc<ScalarUDF>,
}

impl TimestampTextRule {
    pub fn new(settings: &Settings) -> Self {
        TimestampTextRule {
            settings: settings.clone(),
            udf: timestamp_text_udf(),
            float_udf: float_text_udf(),
        }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Text cut to a cast's length (`v<n>`: `varchar(n)`, `c<n>`: `char(n)`),
/// as PostgreSQL's explicit casts cut it. A `char(n)` value is not padded
/// here: as in a stored `char(n)` column, trailing blanks do not count (so
/// `'ab'::char(5) || '|'` is `ab|`, as in PostgreSQL); it is padded when
/// sent ([`super::chars::cast_to_char`]).
fn with_length(text: Expr, tag: &str) -> Expr {
    let Ok(n) = tag.get(1..).unwrap_or("").parse::<usize>() else {
        return text;
    };
    if tag.starts_with('c') {
        return super::chars::cast_to_char(text, n);
    }
    let n = Expr::Literal(ScalarValue::Int64(Some(n as i64)), None);
    datafusion::functions::unicode::left().call(vec![text, n])
}

impl AnalyzerRule for TimestampTextRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let zone = self
            .settings
            .get("timezone")
            .as_deref()
            .and_then(session_time_zone)
            .map(|z| z.to_string());
        let zone = Expr::Literal(ScalarValue::Utf8(zone), None);
        super::rewrite::rewrite_exprs(plan, |e, schema| {
            let (inner, field) = match &e {
                Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })
                    if is_text(field.data_type()) =>
                {
                    (expr, field)
                }
                _ => return Ok(Transformed::no(e)),
            };
            let to = field.data_type();
            let length = field
                .metadata()
                .get(super::type_planner::CAST_LENGTH_KEY)
                .cloned();
            // Outer references of a subquery do not resolve here: such a
            // cast keeps DataFusion's form.
            let call = match inner.get_type(schema) {
                Ok(DataType::Timestamp(..)) => {
                    self.udf.call(vec![inner.as_ref().clone(), zone.clone()])
                }
                Ok(DataType::Float64 | DataType::Float32) => {
                    self.float_udf.call(vec![inner.as_ref().clone()])
                }
                _ if length.is_some() => Expr::Cast(Cast::new(inner.clone(), DataType::Utf8)),
                _ => return Ok(Transformed::no(e)),
            };
            let call = match length {
                Some(tag) => with_length(call, &tag),
                None => call,
            };
            let out = if *to == DataType::Utf8 {
                call
            } else {
                Expr::Cast(Cast::new(Box::new(call), to.clone()))
            };
            Ok(Transformed::yes(out))
        })
    }

    fn name(&self) -> &str {
        "quiver_timestamp_text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{TimestampMicrosecondArray, TimestampNanosecondArray};

    #[test]
    fn timestamps_in_postgres_text() {
        // 2024-06-01 12:00:00 UTC, and with a fraction
        let at = 1_717_243_200_000_000i64;
        let tz: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(at), Some(at + 500_000), None])
                .with_timezone("+00:00"),
        );
        let utc = timestamp_text(&tz, None).unwrap();
        assert_eq!(utc.value(0), "2024-06-01 12:00:00+00");
        assert_eq!(utc.value(1), "2024-06-01 12:00:00.5+00");
        assert!(utc.is_null(2));
        let tokyo = timestamp_text(&tz, Some("Asia/Tokyo")).unwrap();
        assert_eq!(tokyo.value(0), "2024-06-01 21:00:00+09");
        let naive: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![at]));
        assert_eq!(
            timestamp_text(&naive, Some("Asia/Tokyo")).unwrap().value(0),
            "2024-06-01 12:00:00"
        );
        let ns: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![at * 1000 + 123_456_789, at * 1000 + 999_999_600])
                .with_timezone("+00:00"),
        );
        let ns = timestamp_text(&ns, None).unwrap();
        assert_eq!(ns.value(0), "2024-06-01 12:00:00.123457+00");
        assert_eq!(ns.value(1), "2024-06-01 12:00:01+00");
        let not_ts: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert!(timestamp_text(&not_ts, None).is_err());
    }

    #[test]
    fn zone_settings() {
        assert_eq!(
            session_time_zone("'Europe/Paris'").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(session_time_zone("+09"), None);
        assert_eq!(session_time_zone("DEFAULT"), None);
        assert_eq!(session_time_zone("local").as_deref(), Some("UTC"));
    }
}
