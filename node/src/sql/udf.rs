//! Shared pieces of Quiver's scalar functions (`quiver_*`, `format`, `mod`
//! and friends), which run in plans on the coordinator and in fragments on
//! workers: each computes over whole arrays, and answers with a scalar
//! when every argument was one (so constant expressions fold at planning).

use datafusion::arrow::array::ArrayRef;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

/// True when every argument is a scalar.
pub fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

/// A function's result: `out` itself, or its one value when the arguments
/// were all scalars.
pub fn columnar(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}
