//! The final step of an `avg` split across shards, exact for `numeric`.
//!
//! Step in the flow: the distributed planner splits `avg(x)` into a partial
//! `sum(x)` and `count(x)` per shard and a final sum of each on the
//! coordinator (or the worker that finishes a group). The last division is
//! `quiver_avg_merge(sum, count, CAST(NULL AS <avg's type>))`: for
//! `numeric` it divides in decimal, scaling and truncating as DataFusion's
//! own `avg` does on one node, so a cluster gives the same digits as a
//! standalone node (a division in `float8` loses digits past the 15th). For
//! other types it divides in `float8`, which is `avg`'s type for them. An
//! integer sum with a `numeric` average (the average of an integer column)
//! is taken as `numeric` of scale 0 first.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Decimal256Array};
use datafusion::arrow::datatypes::{
    i256, DataType, Decimal128Type, Decimal256Type, Float64Type, Int64Type,
};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::error::SqlError;

/// The function's name in plans and in fragments sent to workers.
pub const AVG_MERGE_FN: &str = "quiver_avg_merge";

/// `quiver_avg_merge(sum, count, typed_null)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AvgMergeFn {
    signature: Signature,
}

impl Default for AvgMergeFn {
    fn default() -> Self {
        AvgMergeFn {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

fn overflow() -> SqlError {
    SqlError::new("22003", "numeric field overflow in avg")
}

fn mismatch(what: &str) -> SqlError {
    SqlError::new("XX000", format!("quiver_avg_merge: {what}"))
}

impl ScalarUDFImpl for AvgMergeFn {
    fn name(&self) -> &str {
        AVG_MERGE_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The third argument only carries the result type.
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        args.get(2)
            .cloned()
            .ok_or_else(|| mismatch("takes 3 arguments").into())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [sum, count, _] = args.args.as_slice() else {
            return Err(mismatch("takes 3 arguments").into());
        };
        let target = args.return_field.data_type().clone();
        let mut sums = sum.clone().into_array(n)?;
        // Integer sums (an average of integers, which is numeric) divide
        // as numeric of scale 0.
        if sums.data_type().is_integer() {
            let exact = match target {
                DataType::Decimal256(..) => DataType::Decimal256(76, 0),
                _ => DataType::Decimal128(38, 0),
            };
            if matches!(target, DataType::Decimal128(..) | DataType::Decimal256(..)) {
                sums = datafusion::arrow::compute::cast(&sums, &exact)?;
            }
        }
        let counts =
            datafusion::arrow::compute::cast(&count.clone().into_array(n)?, &DataType::Int64)?;
        let counts = counts.as_primitive::<Int64Type>();
        let out: ArrayRef = match (sums.data_type(), &target) {
            (DataType::Decimal128(_, ss), DataType::Decimal128(p, ts)) => {
                let mul = scale_factor::<i128>(*ss, *ts, 10, |a, b| a.checked_pow(b))?;
                let sums = sums.as_primitive::<Decimal128Type>();
                let v = (0..n)
                    .map(|i| {
                        if sums.is_null(i) || counts.is_null(i) || counts.value(i) == 0 {
                            return Ok(None);
                        }
                        let s = sums.value(i).checked_mul(mul).ok_or_else(overflow)?;
                        Ok(Some(s / i128::from(counts.value(i))))
                    })
                    .collect::<Result<Decimal128Array, SqlError>>()?;
                Arc::new(v.with_precision_and_scale(*p, *ts)?)
            }
            (DataType::Decimal256(_, ss), DataType::Decimal256(p, ts)) => {
                let ten = i256::from_i128(10);
                let mul = scale_factor::<i256>(*ss, *ts, ten, |a, b| a.checked_pow(b))?;
                let sums = sums.as_primitive::<Decimal256Type>();
                let v = (0..n)
                    .map(|i| {
                        if sums.is_null(i) || counts.is_null(i) || counts.value(i) == 0 {
                            return Ok(None);
                        }
                        let s = sums.value(i).checked_mul(mul).ok_or_else(overflow)?;
                        let c = i256::from_i128(i128::from(counts.value(i)));
                        Ok(Some(s.checked_div(c).ok_or_else(overflow)?))
                    })
                    .collect::<Result<Decimal256Array, SqlError>>()?;
                Arc::new(v.with_precision_and_scale(*p, *ts)?)
            }
            _ => {
                let sums = datafusion::arrow::compute::cast(&sums, &DataType::Float64)?;
                let sums = sums.as_primitive::<Float64Type>();
                let v: datafusion::arrow::array::Float64Array = (0..n)
                    .map(|i| {
                        (!sums.is_null(i) && !counts.is_null(i) && counts.value(i) != 0)
                            .then(|| sums.value(i) / counts.value(i) as f64)
                    })
                    .collect();
                datafusion::arrow::compute::cast(&v, &target)?
            }
        };
        super::udf::columnar(out, super::udf::all_scalar(&args.args))
    }
}

/// `10^(target_scale - sum_scale)`: the sum's scale is never above the
/// average's.
fn scale_factor<T>(
    sum_scale: i8,
    target_scale: i8,
    ten: T,
    pow: impl Fn(T, u32) -> Option<T>,
) -> Result<T, SqlError> {
    let diff = u32::try_from(i32::from(target_scale) - i32::from(sum_scale))
        .map_err(|_| mismatch("the sum's scale is above the average's"))?;
    pow(ten, diff).ok_or_else(overflow)
}

/// The function, for registering on a session.
pub fn avg_merge_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(AvgMergeFn::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::ScalarValue;

    fn merge(sum: ScalarValue, count: i64, target: DataType) -> ScalarValue {
        let f = AvgMergeFn::default();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(sum.clone()),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(count))),
                ColumnarValue::Scalar(ScalarValue::try_from(&target).unwrap()),
            ],
            arg_fields: vec![
                Arc::new(Field::new("s", sum.data_type(), true)),
                Arc::new(Field::new("c", DataType::Int64, true)),
                Arc::new(Field::new("t", target.clone(), true)),
            ],
            number_rows: 1,
            return_field: Arc::new(Field::new("r", target, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match f.invoke_with_args(args).unwrap() {
            ColumnarValue::Scalar(s) => s,
            ColumnarValue::Array(_) => panic!("scalar in, scalar out"),
        }
    }

    #[test]
    fn decimal_average_keeps_every_digit() {
        // (12345678901234567.89 + 12345678901234567.91) / 2, numeric(20,2):
        // sum is Decimal128(30,2), avg Decimal128(24,6).
        let sum = ScalarValue::Decimal128(Some(2_469_135_780_246_913_580), 30, 2);
        assert_eq!(
            merge(sum, 2, DataType::Decimal128(24, 6)),
            ScalarValue::Decimal128(Some(12_345_678_901_234_567_900_000), 24, 6)
        );
        // 2 / 3 truncates as DataFusion's avg does: 0.666666
        let sum = ScalarValue::Decimal128(Some(200), 30, 2);
        assert_eq!(
            merge(sum, 3, DataType::Decimal128(24, 6)),
            ScalarValue::Decimal128(Some(666_666), 24, 6)
        );
        let sum = ScalarValue::Decimal256(Some(i256::from_i128(5)), 76, 0);
        assert_eq!(
            merge(sum, 2, DataType::Decimal256(76, 4)),
            ScalarValue::Decimal256(Some(i256::from_i128(25_000)), 76, 4)
        );
    }

    #[test]
    fn empty_group_is_null_and_floats_divide() {
        let sum = ScalarValue::Decimal128(Some(0), 30, 2);
        assert!(merge(sum, 0, DataType::Decimal128(24, 6)).is_null());
        assert_eq!(
            merge(ScalarValue::Int64(Some(7)), 2, DataType::Float64),
            ScalarValue::Float64(Some(3.5))
        );
    }
}
