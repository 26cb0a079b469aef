//! `EXTRACT(EPOCH FROM x)` as PostgreSQL computes it: an exact `numeric`.
//!
//! Step in the flow: the EXTRACT planner ([`super::interval_ops`]) plans
//! `epoch` as [`epoch_udf`]. DataFusion's `date_part('epoch', x)` is a
//! float of about 16 digits, which cannot hold a timestamp's microseconds
//! exactly; PostgreSQL returns `numeric` seconds with 6 decimals (none for
//! a `date`). The microseconds Arrow already stores are the decimal's
//! digits, so the value is exact and costs one pass over the column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int64Type, IntervalMonthDayNanoType, TimeUnit,
};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::error::SqlError;

const MICROS_PER_DAY: i128 = 86_400_000_000;
/// PostgreSQL counts an interval's years as 365.25 days and its other
/// months as 30 days.
const MICROS_PER_YEAR: i128 = MICROS_PER_DAY * 36525 / 100;
const MICROS_PER_MONTH: i128 = MICROS_PER_DAY * 30;

/// The function `extract(epoch from x)` plans to.
pub fn epoch_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Epoch {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Epoch {
    signature: Signature,
}

/// The result type: seconds with 6 decimals, whole seconds for a date.
fn result_type(arg: &DataType) -> Result<DataType> {
    match arg {
        DataType::Date32 | DataType::Date64 => Ok(DataType::Decimal128(38, 0)),
        DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Interval(_)
        | DataType::Null => Ok(DataType::Decimal128(38, 6)),
        other => Err(SqlError::new(
            "42883",
            format!("function extract(epoch from {other}) does not exist"),
        )
        .into()),
    }
}

impl ScalarUDFImpl for Epoch {
    fn name(&self) -> &str {
        "epoch"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        result_type(args.first().unwrap_or(&DataType::Null))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(arg) = args.args.first() else {
            return Err(SqlError::new("XX000", "extract(epoch) takes one argument").into());
        };
        let scalar = matches!(arg, ColumnarValue::Scalar(_));
        let array = arg.to_array(rows)?;
        let out = Arc::new(epoch(&array)?) as ArrayRef;
        if scalar {
            let v = datafusion::common::ScalarValue::try_from_array(&out, 0)?;
            Ok(ColumnarValue::Scalar(v))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// The epoch of each value: microseconds (as a decimal of scale 6), or
/// seconds for a date.
fn epoch(a: &ArrayRef) -> Result<Decimal128Array> {
    let ty = result_type(a.data_type())?;
    let micros = |a: &ArrayRef, to: DataType| -> Result<Decimal128Array> {
        let as_micros = cast(a, &to)?;
        let ints = cast(&as_micros, &DataType::Int64)?;
        Ok(ints
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect())
    };
    let out: Decimal128Array = match a.data_type() {
        DataType::Timestamp(_, tz) => {
            micros(a, DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            micros(a, DataType::Time64(TimeUnit::Microsecond))?
        }
        DataType::Date32 | DataType::Date64 => cast(a, &DataType::Date32)?
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| i128::from(d) * 86_400))
            .collect(),
        DataType::Interval(_) => {
            let mdn = cast(
                a,
                &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            )?;
            mdn.as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let months = i128::from(v.months);
                        (months / 12) * MICROS_PER_YEAR
                            + (months % 12) * MICROS_PER_MONTH
                            + i128::from(v.days) * MICROS_PER_DAY
                            + i128::from(v.nanoseconds) / 1000
                    })
                })
                .collect()
        }
        DataType::Null => (0..a.len()).map(|_| None::<i128>).collect(),
        _ => return Err(SqlError::new("42883", "extract(epoch) of this type").into()),
    };
    let DataType::Decimal128(p, s) = ty else {
        return Err(SqlError::new("XX000", "extract(epoch): result type").into());
    };
    Ok(out.with_precision_and_scale(p, s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, IntervalMonthDayNanoArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    fn text(a: ArrayRef) -> Vec<String> {
        let d = epoch(&a).unwrap();
        (0..d.len()).map(|i| d.value_as_string(i)).collect()
    }

    #[test]
    fn epochs_as_postgres_computes_them() {
        // 2024-01-01 00:00:00.123456 UTC
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_704_067_200_123_456]).with_timezone("+00:00"),
        );
        assert_eq!(text(ts), ["1704067200.123456"]);
        let d: ArrayRef = Arc::new(Date32Array::from(vec![19723]));
        assert_eq!(text(d), ["1704067200"]);
        let iv: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(13, 1, 1_500_000_000),
        ]));
        // 1 year = 365.25 days, 1 month = 30 days, 1 day, 1.5 s
        assert_eq!(text(iv), ["34236001.500000"]);
    }
}
