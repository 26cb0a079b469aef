//! Integer arithmetic that fails on overflow, as PostgreSQL's does.
//!
//! Step in the flow: DataFusion's physical `+`, `-` and `*` on integers wrap
//! around (`2147483647::int4 + 1` gives `-2147483648`); PostgreSQL raises
//! `22003 integer out of range`. [`CheckedArithmeticRule`] runs after
//! DataFusion's type coercion, when both sides of an operator have their
//! final type, and replaces integer `+ - *` with `quiver_checked_int(l, r,
//! op)`, which runs Arrow's checked kernels (as fast as the wrapping ones).
//! Constant expressions are still folded at planning time, through the
//! same function, so an overflowing constant fails the statement too.
//!
//! The same rule makes a cast from `numeric` to an integer round (half away
//! from zero) before it converts, as PostgreSQL's does; Arrow truncates.
//! And a float divisor goes through `quiver_divisor(x)`, which fails with
//! 22012 on zero: PostgreSQL's `1.0::float8 / 0` is an error, not Infinity.
//! `ceil`, `floor` and `trunc(x, n)` of a `numeric` have PostgreSQL's scale
//! (0, 0 and `n`: `ceil(2.1)` is `3`, not `3.0`).

use std::sync::Arc;

use datafusion::arrow::array::Datum;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::BinaryExpr;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use super::error::SqlError;

/// The function's name in plans and in fragments sent to workers.
pub const CHECKED_INT_FN: &str = "quiver_checked_int";

/// PostgreSQL's name of an integer type in its out-of-range message.
fn type_word(t: &DataType) -> &'static str {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        _ => "bigint",
    }
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

fn op_of(text: &str) -> Option<Operator> {
    match text {
        "+" => Some(Operator::Plus),
        "-" => Some(Operator::Minus),
        "*" => Some(Operator::Multiply),
        _ => None,
    }
}

fn op_text(op: Operator) -> Option<&'static str> {
    match op {
        Operator::Plus => Some("+"),
        Operator::Minus => Some("-"),
        Operator::Multiply => Some("*"),
        _ => None,
    }
}

/// Applies `op` to two integer values of one type, failing on overflow.
pub fn checked(l: &dyn Datum, r: &dyn Datum, op: Operator) -> Result<ColumnarValue, SqlError> {
    let out = match op {
        Operator::Plus => numeric::add(l, r),
        Operator::Minus => numeric::sub(l, r),
        _ => numeric::mul(l, r),
    };
    let ty = l.get().0.data_type().clone();
    match out {
        Ok(a) => Ok(ColumnarValue::Array(a)),
        Err(ArrowError::ArithmeticOverflow(_)) => Err(SqlError::new(
            "22003",
            format!("{} out of range", type_word(&ty)),
        )),
        Err(e) => Err(SqlError::new("22000", e.to_string())),
    }
}

/// `quiver_checked_int(l, r, op)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedIntFn {
    signature: Signature,
}

impl Default for CheckedIntFn {
    fn default() -> Self {
        CheckedIntFn {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CheckedIntFn {
    fn name(&self) -> &str {
        CHECKED_INT_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Two integers of different types (a fragment's bare literal is
    /// `bigint` when the worker reads it) meet in the wider one.
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [l, r, op] if is_int(l) && is_int(r) => {
                let wider = |a: &DataType, b: &DataType| {
                    a.is_signed_integer() && a.primitive_width() > b.primitive_width()
                };
                let t = if l == r || wider(l, r) {
                    l.clone()
                } else if wider(r, l) {
                    r.clone()
                } else {
                    DataType::Int64
                };
                Ok(vec![t.clone(), t, op.clone()])
            }
            _ => Err(DataFusionError::Plan(format!(
                "{CHECKED_INT_FN} takes two integers and an operator, got {args:?}"
            ))),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [l, r, _] if l == r && is_int(l) => Ok(l.clone()),
            _ => Err(DataFusionError::Plan(format!(
                "{CHECKED_INT_FN} takes two integers of one type and an operator, got {args:?}"
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [l, r, ColumnarValue::Scalar(op)] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{CHECKED_INT_FN}: the operator must be a constant"
            )));
        };
        let op = match op {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => op_of(s),
            _ => None,
        }
        .ok_or_else(|| DataFusionError::Plan(format!("{CHECKED_INT_FN}: bad operator {op}")))?;
        let scalars = matches!((l, r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let datum = |c: &ColumnarValue| -> Result<Box<dyn Datum>> {
            Ok(match c {
                ColumnarValue::Array(a) => Box::new(a.clone()),
                ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
            })
        };
        let (ld, rd) = (datum(l)?, datum(r)?);
        let out = checked(ld.as_ref(), rd.as_ref(), op)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        match (out, scalars) {
            (ColumnarValue::Array(a), true) => {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?))
            }
            (out, _) => Ok(out),
        }
    }
}

/// `ceil(x)` / `floor(x)` / `trunc(x, n)` of a decimal, cast to the scale
/// PostgreSQL gives the result; `None` for anything else.
fn numeric_result_scale(e: &Expr, schema: &datafusion::common::DFSchema) -> Option<Expr> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    let arg = f.args.first()?;
    let (precision, scale, wide) = match arg.get_type(schema).ok()? {
        DataType::Decimal128(p, s) => (p, s, false),
        DataType::Decimal256(p, s) => (p, s, true),
        _ => return None,
    };
    // The digits argument, a constant (type coercion may have cast it).
    let digits = |e: &Expr| -> Option<i8> {
        let e = match e {
            Expr::Cast(c) => c.expr.as_ref(),
            other => other,
        };
        match e {
            Expr::Literal(ScalarValue::Int64(Some(n)), _) => i8::try_from(*n).ok(),
            Expr::Literal(ScalarValue::Int32(Some(n)), _) => i8::try_from(*n).ok(),
            _ => None,
        }
    };
    let target = match (f.func.name(), f.args.get(1)) {
        ("ceil" | "floor", None) => 0,
        ("trunc", Some(n)) => digits(n)?,
        _ => return None,
    };
    if target < 0 || target >= scale {
        return None;
    }
    // One more integer digit, for the input too: ceil(9.5) is 10, which
    // DataFusion's ceil would not fit into the input's precision.
    let max = if wide { 76 } else { 38 };
    let p = precision.saturating_add(1).min(max);
    let decimal = |s: i8| {
        if wide {
            DataType::Decimal256(p, s)
        } else {
            DataType::Decimal128(p, s)
        }
    };
    let mut call = f.clone();
    call.args[0] = Expr::Cast(datafusion::logical_expr::Cast::new(
        Box::new(arg.clone()),
        decimal(scale),
    ));
    Some(Expr::Cast(datafusion::logical_expr::Cast::new(
        Box::new(Expr::ScalarFunction(call)),
        decimal(target),
    )))
}

/// `mod(a, b)`: PostgreSQL's name for `a % b` (22012 when `b` is zero).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ModFn {
    signature: Signature,
}

impl Default for ModFn {
    fn default() -> Self {
        ModFn {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ModFn {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Both sides in the wider of their types, as `%` would have them.
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [l, r] = args else {
            return Err(DataFusionError::Plan("mod takes two numbers".into()));
        };
        let t = datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer::new(
            l,
            &Operator::Modulo,
            r,
        )
        .get_input_types()?
        .0;
        Ok(vec![t.clone(), t])
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Int64))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [l, r] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("mod takes two numbers".into()));
        };
        let scalars = super::udf::all_scalar(&args.args);
        let (la, ra) = (
            l.clone().into_array(args.number_rows)?,
            r.clone().into_array(args.number_rows)?,
        );
        let out = numeric::rem(&la, &ra).map_err(|e| match e {
            ArrowError::DivideByZero => SqlError::new("22012", "division by zero").into(),
            other => DataFusionError::from(other),
        })?;
        super::udf::columnar(out, scalars)
    }
}

/// The float divisor check's name in plans and fragments.
pub const DIVISOR_FN: &str = "quiver_divisor";

/// `quiver_divisor(x)`: `x`, or 22012 when a value is zero.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DivisorFn {
    signature: Signature,
}

impl Default for DivisorFn {
    fn default() -> Self {
        DivisorFn {
            signature: Signature::uniform(
                1,
                vec![DataType::Float64, DataType::Float32],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for DivisorFn {
    fn name(&self) -> &str {
        DIVISOR_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Float64))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [x] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{DIVISOR_FN} takes one float"
            )));
        };
        let a = x.clone().into_array(args.number_rows)?;
        let a64 = datafusion::arrow::compute::cast(&a, &DataType::Float64)?;
        let zero = a64
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .is_some_and(|f| f.iter().any(|v| v == Some(0.0)));
        if zero {
            return Err(SqlError::new("22012", "division by zero").into());
        }
        Ok(x.clone())
    }
}

/// The function, to register in every session.
pub fn divisor_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DivisorFn::default()))
}

/// The function, to register in every session.
pub fn checked_int_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(CheckedIntFn::default()))
}

/// Replaces integer `+ - *` with [`CHECKED_INT_FN`] once types are final.
#[derive(Debug)]
pub struct CheckedArithmeticRule {
    udf: Arc<ScalarUDF>,
    divisor: Arc<ScalarUDF>,
}

impl Default for CheckedArithmeticRule {
    fn default() -> Self {
        CheckedArithmeticRule {
            udf: checked_int_udf(),
            divisor: divisor_udf(),
        }
    }
}

impl AnalyzerRule for CheckedArithmeticRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        super::rewrite::rewrite_exprs(plan, |e, schema| {
            if let Some(scaled) = numeric_result_scale(&e, schema) {
                return Ok(Transformed::yes(scaled));
            }
            if let Expr::Cast(c) = &e {
                // numeric -> integer rounds half away from zero, as in
                // PostgreSQL (`2.5::int` is 3); Arrow's cast truncates.
                let from_decimal = c.expr.get_type(schema).is_ok_and(|t| {
                    matches!(t, DataType::Decimal128(_, s) | DataType::Decimal256(_, s) if s > 0)
                });
                if from_decimal && c.field.data_type().is_integer() {
                    let rounded =
                        datafusion::functions::math::round().call(vec![c.expr.as_ref().clone()]);
                    return Ok(Transformed::yes(Expr::Cast(
                        datafusion::logical_expr::Cast {
                            expr: Box::new(rounded),
                            field: c.field.clone(),
                        },
                    )));
                }
                return Ok(Transformed::no(e));
            }
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
                return Ok(Transformed::no(e));
            };
            if matches!(op, Operator::Divide | Operator::Modulo) {
                let float =
                    |t: Result<DataType>| matches!(t, Ok(DataType::Float64 | DataType::Float32));
                let divisor_is_checked = matches!(right.as_ref(),
                    Expr::ScalarFunction(f) if f.func.name() == DIVISOR_FN);
                if float(right.get_type(schema)) && !divisor_is_checked {
                    let checked = self.divisor.call(vec![right.as_ref().clone()]);
                    return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        left.clone(),
                        *op,
                        Box::new(checked),
                    ))));
                }
                return Ok(Transformed::no(e));
            }
            let Some(text) = op_text(*op) else {
                return Ok(Transformed::no(e));
            };
            // Types that do not resolve here (outer references of a
            // subquery) keep DataFusion's operator.
            let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema)) else {
                return Ok(Transformed::no(e));
            };
            if lt != rt || !is_int(&lt) {
                return Ok(Transformed::no(e));
            }
            let op = Expr::Literal(ScalarValue::Utf8(Some(text.into())), None);
            Ok(Transformed::yes(self.udf.call(vec![
                left.as_ref().clone(),
                right.as_ref().clone(),
                op,
            ])))
        })
    }

    fn name(&self) -> &str {
        "quiver_checked_arithmetic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Int32Array, Int64Array, Scalar};
    use datafusion::arrow::datatypes::{Int32Type, Int64Type};

    #[test]
    fn overflow_is_22003_and_in_range_values_compute() {
        let a = Int32Array::from(vec![Some(1), None, Some(2_147_483_000)]);
        let one = Scalar::new(Int32Array::from(vec![7]));
        let ColumnarValue::Array(sum) = checked(&a, &one, Operator::Plus).unwrap() else {
            panic!("an array");
        };
        let sum = sum.as_primitive::<Int32Type>();
        assert_eq!(
            (sum.value(0), sum.is_null(1), sum.value(2)),
            (8, true, 2_147_483_007)
        );
        let big = Scalar::new(Int32Array::from(vec![1000]));
        let e = checked(&a, &big, Operator::Plus).err().unwrap();
        assert_eq!(
            (e.sqlstate, e.message.as_str()),
            ("22003", "integer out of range")
        );
        let m = Int64Array::from(vec![i64::MAX / 2 + 1]);
        let two = Scalar::new(Int64Array::from(vec![2]));
        let e = checked(&m, &two, Operator::Multiply).err().unwrap();
        assert_eq!(e.message, "bigint out of range");
        let ColumnarValue::Array(d) = checked(&m, &two, Operator::Minus).unwrap() else {
            panic!("an array");
        };
        assert_eq!(d.as_primitive::<Int64Type>().value(0), i64::MAX / 2 - 1);
    }
}
