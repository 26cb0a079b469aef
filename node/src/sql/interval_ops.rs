//! `interval * number`, `number * interval` and `interval / number`, as
//! PostgreSQL computes them.
//!
//! Step in the flow: DataFusion's SQL planner asks [`IntervalArithmetic`]
//! (an expression planner) about every binary operator while it builds a
//! statement's logical plan. DataFusion's type coercion refuses these
//! operators ("Invalid interval arithmetic operation"); PostgreSQL scales
//! each field and cascades the fractions down (`'1 mon' * 1.5` is
//! `1 mon 15 days`, `'1 day' / 2` is `12:00:00`). The planner replaces them
//! with `quiver_interval_scale(interval, factor, divide)`, which does the
//! arithmetic of PostgreSQL's `interval_mul` / `interval_div`. The function
//! is registered on every node, so fragments that carry it run on workers.
//!
//! The same planner gives other operators PostgreSQL's result types:
//! `date ± interval` is a `timestamp` (DataFusion keeps a date), `date -
//! date` is an `integer` of days, `timestamp - timestamp` an interval whose
//! whole days are days (`5 days 07:08:09`, not `127:08:09`: PostgreSQL's
//! `justify_hours`, through `quiver_justify_hours`), and `a # b` is a
//! bitwise xor. `EXTRACT(field FROM x)` is `numeric`, and its `second` and
//! `milliseconds` keep the fraction (`9.500000`; DataFusion's `date_part`
//! gives the whole seconds).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, IntervalMonthDayNano, IntervalUnit, TimeUnit,
};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    binary_expr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use super::error::SqlError;

/// The function's name in plans and in fragments sent to workers.
pub const INTERVAL_SCALE_FN: &str = "quiver_interval_scale";

/// PostgreSQL's `justify_hours`, in plans and fragments.
pub const JUSTIFY_HOURS_FN: &str = "quiver_justify_hours";

const DAYS_PER_MONTH: f64 = 30.0;
const SECS_PER_DAY: f64 = 86_400.0;

/// PostgreSQL's `TSROUND`: rounds to whole microseconds (of the unit given).
fn ts_round(v: f64) -> f64 {
    (v * 1e6).round_ties_even() / 1e6
}

/// `span * factor` (or `span / factor` with `divide`), PostgreSQL's way:
/// months and days are scaled and truncated, and the fractions cascade
/// down (a month is 30 days, a day 24 hours).
pub fn scale(
    span: IntervalMonthDayNano,
    factor: f64,
    divide: bool,
) -> Result<IntervalMonthDayNano, SqlError> {
    if divide && factor == 0.0 {
        return Err(SqlError::new("22012", "division by zero"));
    }
    let apply = |v: f64| if divide { v / factor } else { v * factor };
    let out_of_range = || SqlError::new("22008", "interval out of range");
    let months_f = apply(f64::from(span.months));
    let days_f = apply(f64::from(span.days));
    if !months_f.is_finite() || !days_f.is_finite() {
        return Err(out_of_range());
    }
    let months = months_f.trunc();
    let mut days = days_f.trunc();
    let month_remainder_days = ts_round((months_f - months) * DAYS_PER_MONTH);
    let mut sec_remainder = ts_round(
        (days_f - days + month_remainder_days - month_remainder_days.trunc()) * SECS_PER_DAY,
    );
    if sec_remainder.abs() >= SECS_PER_DAY {
        let whole = (sec_remainder / SECS_PER_DAY).trunc();
        days += whole;
        sec_remainder -= whole * SECS_PER_DAY;
    }
    days += month_remainder_days.trunc();
    // PostgreSQL keeps microseconds; Arrow's interval keeps nanoseconds.
    let micros = (apply(span.nanoseconds as f64 / 1000.0) + sec_remainder * 1e6).round_ties_even();
    let nanos = micros * 1000.0;
    let fits_i32 = |v: f64| v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX);
    let nanos_fit = nanos.is_finite() && nanos.abs() < 9.2e18;
    if !fits_i32(months) || !fits_i32(days) || !nanos_fit {
        return Err(out_of_range());
    }
    Ok(IntervalMonthDayNano::new(
        months as i32,
        days as i32,
        nanos as i64,
    ))
}

/// PostgreSQL's `justify_hours`: whole days of the time part become days,
/// with the time part's sign made to agree with the days'.
pub fn justify_hours(span: IntervalMonthDayNano) -> Result<IntervalMonthDayNano, SqlError> {
    const NANOS_PER_DAY: i64 = 86_400_000_000_000;
    let whole = span.nanoseconds / NANOS_PER_DAY;
    let mut nanos = span.nanoseconds - whole * NANOS_PER_DAY;
    let mut days = i32::try_from(whole)
        .ok()
        .and_then(|w| span.days.checked_add(w))
        .ok_or_else(|| SqlError::new("22008", "interval out of range"))?;
    if days > 0 && nanos < 0 {
        nanos += NANOS_PER_DAY;
        days -= 1;
    } else if days < 0 && nanos > 0 {
        nanos -= NANOS_PER_DAY;
        days += 1;
    }
    Ok(IntervalMonthDayNano::new(span.months, days, nanos))
}

/// `quiver_justify_hours(interval)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JustifyHoursFn {
    signature: Signature,
}

impl Default for JustifyHoursFn {
    fn default() -> Self {
        JustifyHoursFn {
            signature: Signature::exact(
                vec![DataType::Interval(IntervalUnit::MonthDayNano)],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for JustifyHoursFn {
    fn name(&self) -> &str {
        JUSTIFY_HOURS_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [span] = args.args.as_slice() else {
            return Err(SqlError::new("42883", "quiver_justify_hours takes 1 argument").into());
        };
        let scalar = super::udf::all_scalar(&args.args);
        let spans = span.clone().into_array(args.number_rows)?;
        let spans = spans.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let out = (0..spans.len())
            .map(|i| {
                (!spans.is_null(i))
                    .then(|| justify_hours(spans.value(i)))
                    .transpose()
            })
            .collect::<Result<IntervalMonthDayNanoArray, SqlError>>()?;
        super::udf::columnar(Arc::new(out), scalar)
    }
}

/// The function, for registering on a session.
pub fn justify_hours_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JustifyHoursFn::default())
}

/// `quiver_interval_scale(interval, factor, divide)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IntervalScaleFn {
    signature: Signature,
}

impl Default for IntervalScaleFn {
    fn default() -> Self {
        IntervalScaleFn {
            signature: Signature::exact(
                vec![
                    DataType::Interval(IntervalUnit::MonthDayNano),
                    DataType::Float64,
                    DataType::Boolean,
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for IntervalScaleFn {
    fn name(&self) -> &str {
        INTERVAL_SCALE_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [span, factor, divide] = args.args.as_slice() else {
            return Err(SqlError::new("42883", "quiver_interval_scale takes 3 arguments").into());
        };
        let divide = match divide {
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(d))) => *d,
            _ => {
                return Err(SqlError::new(
                    "42883",
                    "quiver_interval_scale: divide must be a constant",
                )
                .into())
            }
        };
        let all_scalar = super::udf::all_scalar(&args.args);
        let spans: ArrayRef = span.clone().into_array(n)?;
        let factors: ArrayRef = factor.clone().into_array(n)?;
        let spans = spans.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let factors = factors.as_primitive::<Float64Type>();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if spans.is_null(i) || factors.is_null(i) {
                out.push(None);
            } else {
                out.push(Some(scale(spans.value(i), factors.value(i), divide)?));
            }
        }
        let array = IntervalMonthDayNanoArray::from(out);
        super::udf::columnar(Arc::new(array), all_scalar)
    }
}

/// The function, for registering on a session.
pub fn interval_scale_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(IntervalScaleFn::default())
}

/// Plans `interval * n`, `n * interval` and `interval / n` as
/// [`INTERVAL_SCALE_FN`] (and the other forms the module docs list).
#[derive(Debug, Default)]
pub struct IntervalArithmetic;

impl IntervalArithmetic {
    /// Installs the planner on `ctx`, ahead of DataFusion's own (which
    /// would plan EXTRACT first).
    pub fn install(ctx: &datafusion::prelude::SessionContext) {
        use datafusion::execution::SessionStateBuilder;
        let state = ctx.state_ref();
        let existing = state.read().clone();
        let mut planners: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(IntervalArithmetic)];
        planners.extend(existing.expr_planners().iter().cloned());
        let built = SessionStateBuilder::new_from_existing(existing)
            .with_expr_planners(planners)
            .build();
        *state.write() = built;
    }
}

fn is_interval(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_))
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

impl ExprPlanner for IntervalArithmetic {
    fn plan_extract(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        let [Expr::Literal(ScalarValue::Utf8(Some(field)), _), value] = args.as_slice() else {
            return Ok(PlannerResult::Original(args));
        };
        let field = field.to_ascii_lowercase();
        let part = |name: &str| {
            datafusion::functions::datetime::date_part().call(vec![
                Expr::Literal(ScalarValue::Utf8(Some(name.into())), None),
                value.clone(),
            ])
        };
        let micros = || {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(part("microsecond")),
                DataType::Float64,
            ))
        };
        let f64_lit = |v: f64| Expr::Literal(ScalarValue::Float64(Some(v)), None);
        let (expr, precision, scale) = match field.as_str() {
            "second" | "seconds" => (binary_expr(micros(), Operator::Divide, f64_lit(1e6)), 9, 6),
            "millisecond" | "milliseconds" => {
                (binary_expr(micros(), Operator::Divide, f64_lit(1e3)), 9, 3)
            }
            "epoch" => {
                return Ok(PlannerResult::Planned(
                    super::epoch::epoch_udf().call(vec![value.clone()]),
                ))
            }
            _ => (part(&field), 20, 0),
        };
        Ok(PlannerResult::Planned(Expr::Cast(
            datafusion::logical_expr::Cast::new(
                Box::new(expr),
                DataType::Decimal128(precision, scale),
            ),
        )))
    }

    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op == BinaryOperator::PGBitwiseXor {
            return Ok(PlannerResult::Planned(binary_expr(
                expr.left,
                Operator::BitwiseXor,
                expr.right,
            )));
        }
        // A placeholder or a column that does not resolve: not ours.
        let (Ok(lt), Ok(rt)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        let divide = match expr.op {
            BinaryOperator::Multiply => false,
            BinaryOperator::Divide => true,
            BinaryOperator::Plus | BinaryOperator::Minus => {
                return date_arithmetic(expr, &lt, &rt, schema)
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let (span, factor) = if is_interval(&lt) && is_number(&rt) {
            (expr.left, expr.right)
        } else if !divide && is_number(&lt) && is_interval(&rt) {
            (expr.right, expr.left)
        } else {
            return Ok(PlannerResult::Original(expr));
        };
        let span = span.cast_to(&DataType::Interval(IntervalUnit::MonthDayNano), schema)?;
        let factor = factor.cast_to(&DataType::Float64, schema)?;
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(interval_scale_udf()),
                vec![
                    span,
                    factor,
                    Expr::Literal(ScalarValue::Boolean(Some(divide)), None),
                ],
            ),
        )))
    }
}

/// `date ± interval` as a timestamp, `date - date` as integer days.
fn date_arithmetic(
    expr: RawBinaryExpr,
    lt: &DataType,
    rt: &DataType,
    schema: &DFSchema,
) -> Result<PlannerResult<RawBinaryExpr>> {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
    let is_date = |t: &DataType| matches!(t, DataType::Date32 | DataType::Date64);
    let minus = expr.op == BinaryOperator::Minus;
    let is_ts = |t: &DataType| matches!(t, DataType::Timestamp(..));
    if minus && is_ts(lt) && is_ts(rt) {
        let span = binary_expr(expr.left, Operator::Minus, expr.right)
            .cast_to(&DataType::Interval(IntervalUnit::MonthDayNano), schema)?;
        return Ok(PlannerResult::Planned(Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(justify_hours_udf()),
                vec![span],
            ),
        )));
    }
    if minus && is_date(lt) && is_date(rt) {
        let days = binary_expr(expr.left, Operator::Minus, expr.right);
        return Ok(PlannerResult::Planned(
            days.cast_to(&DataType::Int32, schema)?,
        ));
    }
    if is_date(lt) && is_interval(rt) {
        let left = expr.left.cast_to(&timestamp, schema)?;
        return Ok(PlannerResult::Original(RawBinaryExpr { left, ..expr }));
    }
    if !minus && is_interval(lt) && is_date(rt) {
        let right = expr.right.cast_to(&timestamp, schema)?;
        return Ok(PlannerResult::Original(RawBinaryExpr { right, ..expr }));
    }
    Ok(PlannerResult::Original(expr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANOS_PER_SEC: f64 = 1e9;

    fn iv(months: i32, days: i32, secs: f64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, (secs * NANOS_PER_SEC) as i64)
    }

    #[test]
    fn scales_like_postgres() {
        // Results checked against PostgreSQL 15.
        assert_eq!(scale(iv(0, 1, 0.0), 2.0, false).unwrap(), iv(0, 2, 0.0));
        assert_eq!(scale(iv(1, 0, 0.0), 1.5, false).unwrap(), iv(1, 15, 0.0));
        assert_eq!(
            scale(iv(0, 1, 0.0), 1.5, false).unwrap(),
            iv(0, 1, 43_200.0)
        );
        assert_eq!(scale(iv(1, 0, 0.0), 3.0, true).unwrap(), iv(0, 10, 0.0));
        assert_eq!(scale(iv(0, 1, 0.0), 2.0, true).unwrap(), iv(0, 0, 43_200.0));
        // '1 hour' / 7 = 00:08:34.285714
        assert_eq!(
            scale(iv(0, 0, 3600.0), 7.0, true).unwrap(),
            IntervalMonthDayNano::new(0, 0, 514_285_714_000)
        );
        assert_eq!(scale(iv(0, 3, 0.0), -1.0, false).unwrap(), iv(0, -3, 0.0));
    }

    #[test]
    fn justifies_hours_like_postgres() {
        let h = |x: f64| x * 3600.0;
        assert_eq!(justify_hours(iv(0, 0, h(127.0))).unwrap(), iv(0, 5, h(7.0)));
        assert_eq!(
            justify_hours(iv(0, 0, -h(25.0))).unwrap(),
            iv(0, -1, -h(1.0))
        );
        assert_eq!(justify_hours(iv(0, 1, -h(1.0))).unwrap(), iv(0, 0, h(23.0)));
    }

    #[test]
    fn errors_like_postgres() {
        assert_eq!(
            scale(iv(0, 1, 0.0), 0.0, true).unwrap_err().sqlstate,
            "22012"
        );
        assert_eq!(
            scale(iv(i32::MAX, 0, 0.0), 2.0, false)
                .unwrap_err()
                .sqlstate,
            "22008"
        );
    }
}
