//! `x AT TIME ZONE 'zone'` and `timezone('zone', x)`, as PostgreSQL has them.
//!
//! Step in the flow: [`super::session::Session::parse`] rewrites `x AT TIME
//! ZONE z` into `timezone(z, x)` (PostgreSQL's own name for it, which also
//! names the result column `timezone`); the function is registered on every
//! node. DataFusion plans AT TIME ZONE as a cast that relabels the zone, so
//! a `timestamptz` stayed the same instant; PostgreSQL gives the wall time
//! in that zone, as a `timestamp`. A `timestamp` (no zone) is read as wall
//! time in the zone and becomes a `timestamptz`, as before.

use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, Statement,
};

use super::error::SqlError;

/// Rewrites `x AT TIME ZONE z` into `timezone(z, x)` in `stmt`.
pub fn at_time_zone(stmt: &mut Statement) {
    let _ = visit_expressions_mut(stmt, |e: &mut SqlExpr| {
        if let SqlExpr::AtTimeZone {
            timestamp,
            time_zone,
        } = e
        {
            let args = vec![time_zone.as_ref().clone(), timestamp.as_ref().clone()];
            *e = SqlExpr::Function(Function {
                name: ObjectName::from(vec![Ident::new("timezone")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: args
                        .into_iter()
                        .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                        .collect(),
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `timezone(zone, x)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimezoneFn {
    signature: Signature,
}

impl Default for TimezoneFn {
    fn default() -> Self {
        TimezoneFn {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn zone_of(name: &str) -> Result<Tz, SqlError> {
    Tz::from_str(name.trim())
        .map_err(|_| SqlError::new("22023", format!("time zone \"{name}\" not recognized")))
}

fn ticks_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

impl ScalarUDFImpl for TimezoneFn {
    fn name(&self) -> &str {
        "timezone"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Err(SqlError::new("XX000", "timezone: return_field_from_args is used").into())
    }

    /// A `timestamptz` gives a `timestamp`; a `timestamp` (or a date or
    /// text) gives a `timestamptz` labelled with the zone, which must be a
    /// constant.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let ty = match args.arg_fields.get(1).map(|f| f.data_type()) {
            Some(DataType::Timestamp(unit, Some(_))) => DataType::Timestamp(*unit, None),
            _ => {
                let zone = match args.scalar_arguments.first() {
                    Some(Some(ScalarValue::Utf8(Some(z)))) => z.clone(),
                    _ => {
                        return Err(SqlError::new(
                            "0A000",
                            "AT TIME ZONE of a timestamp needs a constant zone",
                        )
                        .into())
                    }
                };
                zone_of(&zone)?;
                DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into()))
            }
        };
        Ok(Arc::new(Field::new(self.name(), ty, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [zone, value] = args.args.as_slice() else {
            return Err(SqlError::new("42883", "timezone takes a zone and a timestamp").into());
        };
        let target = args.return_field.data_type().clone();
        let scalar = super::udf::all_scalar(&args.args);
        let values = value.clone().into_array(n)?;
        let DataType::Timestamp(unit, Some(_)) = values.data_type().clone() else {
            // A timestamp without zone (or text, a date): wall time in the zone.
            return super::udf::columnar(cast(&values, &target)?, scalar);
        };
        let zones = cast(&zone.clone().into_array(n)?, &DataType::Utf8)?;
        let zones = zones.as_string::<i32>();
        let per = ticks_per_second(unit);
        let raw = cast(&values, &DataType::Int64)?;
        let raw = raw.as_primitive::<Int64Type>();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if raw.is_null(i) || zones.is_null(i) {
                out.push(None);
                continue;
            }
            let tz = zone_of(zones.value(i))?;
            let v = raw.value(i);
            let secs = v.div_euclid(per);
            let utc = chrono::DateTime::from_timestamp(secs, 0)
                .ok_or_else(|| SqlError::new("22008", "timestamp out of range"))?
                .naive_utc();
            let offset = tz.offset_from_utc_datetime(&utc).fix().local_minus_utc();
            out.push(Some(v + i64::from(offset) * per));
        }
        let local: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(out));
        super::udf::columnar(cast(&local, &target)?, scalar)
    }
}

/// The function, for registering on a session.
pub fn timezone_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(TimezoneFn::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn at_time_zone_becomes_timezone() {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT ts AT TIME ZONE 'UTC'")
            .unwrap()
            .remove(0);
        at_time_zone(&mut stmt);
        assert_eq!(stmt.to_string(), "SELECT timezone('UTC', ts)");
    }
}
