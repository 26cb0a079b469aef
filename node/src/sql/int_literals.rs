//! Integer literals typed as PostgreSQL types them.
//!
//! Step in the flow: right after DataFusion builds a statement's logical
//! plan ([`super::session::Session::plan`]), before its analyzer runs. SQL
//! gives every integer literal the type `bigint`; PostgreSQL types a literal
//! that fits in 32 bits as `integer` (so `SELECT 1` is int4, `int4_col * 2`
//! is int4 and `7 / 2` is 3 in int4). [`int4_literals`] turns such
//! `Int64` literals into `Int32` ones and recomputes each plan node's
//! schema; type coercion then widens them where the other side is wider.
//! With checked arithmetic ([`super::checked`]) an int4 result that does not
//! fit fails with 22003, as in PostgreSQL.
//!
//! The same pass gives `date_part(field, x)` PostgreSQL's type, `float8`,
//! with the fraction of `second` ([`date_part_float`]): a change of type,
//! so it happens here, where schemas are recomputed, not in an analyzer
//! rule.
//!
//! A `VALUES` column whose rows are all such literals becomes `integer`
//! too, as PostgreSQL types it, except under INSERT (DataFusion has cast
//! the rows to the table's types already).
//!
//! Other results PostgreSQL types narrower or differently than DataFusion,
//! fixed here for the same reason: `gcd` / `lcm` of integers are `integer`
//! ([`int4_result`]); `date_trunc` of a `date` works on, and returns, a
//! `timestamptz` ([`date_trunc_of_date`]).
//!
//! `avg` of an integer column is `numeric`, as in PostgreSQL (DataFusion's
//! is `float8`): [`avg_numeric`] averages the values as `numeric(38,12)`,
//! which gives a `numeric(38,16)`: 16 fraction digits, as PostgreSQL shows
//! an average between 1 and 9999 (ADR 0010 tells the rest).
//!
//! Left alone: `LIMIT` / `OFFSET` (DataFusion wants int8 there).
//!
//! A recursive CTE's working table takes its column types from the
//! non-recursive term, which this pass may have narrowed (`SELECT 1` is now
//! int4): [`retype_work_table`] rebuilds the recursive term over a working
//! table of the new types, as PostgreSQL types `n` in `WITH RECURSIVE r(n)
//! AS (SELECT 1 UNION ALL SELECT n + 1 FROM r ...)` as integer.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{
    binary_expr, Cast, Expr, LogicalPlan, LogicalPlanBuilder, Operator, RecursiveQuery, TableScan,
    TableScanBuilder, Values,
};

/// Rewrites `plan`'s 32-bit integer literals to `Int32`.
pub fn int4_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    let insert = matches!(plan, LogicalPlan::Dml(_));
    plan.transform_up_with_subqueries(|node| {
        if let LogicalPlan::Values(v) = &node {
            if !insert {
                return int4_values(v);
            }
        }
        if node.inputs().is_empty() {
            return Ok(Transformed::no(node));
        }
        if matches!(node, LogicalPlan::Limit(_)) {
            // Its input may have changed types.
            return Ok(Transformed::yes(node.recompute_schema()?));
        }
        if let LogicalPlan::RecursiveQuery(q) = node {
            return retype_work_table(q).map(Transformed::yes);
        }
        let names = NamePreserver::new(&node);
        let schema = merge_schema(&node.inputs());
        let out = node.map_expressions(|e| {
            let name = names.save(&e);
            e.transform_up(|e| match e {
                Expr::Literal(ScalarValue::Int64(Some(v)), meta) => match i32::try_from(v) {
                    Ok(v) => Ok(Transformed::yes(Expr::Literal(
                        ScalarValue::Int32(Some(v)),
                        meta,
                    ))),
                    Err(_) => Ok(Transformed::no(Expr::Literal(
                        ScalarValue::Int64(Some(v)),
                        meta,
                    ))),
                },
                Expr::ScalarFunction(f) => match f.func.name() {
                    "date_part" => Ok(date_part_float(Expr::ScalarFunction(f))),
                    "gcd" | "lcm" => Ok(int4_result(Expr::ScalarFunction(f), &schema)),
                    "date_trunc" => date_trunc_of_date(f, &schema),
                    _ => Ok(Transformed::no(Expr::ScalarFunction(f))),
                },
                Expr::AggregateFunction(f) if f.func.name() == "avg" => Ok(avg_numeric(f, &schema)),
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.update_data(|e| name.restore(e)))
        })?;
        // An input may have changed types even where this node did not.
        Ok(Transformed::yes(out.data.recompute_schema()?))
    })
    .map(|t| t.data)
}

/// A `VALUES` list whose columns of integer literals all fit in 32 bits
/// become `integer` columns.
fn int4_values(v: &Values) -> Result<Transformed<LogicalPlan>> {
    let fits = |e: &Expr| matches!(e, Expr::Literal(ScalarValue::Int64(Some(x)), _) if i32::try_from(*x).is_ok());
    let width = v.values.first().map_or(0, Vec::len);
    let narrow: Vec<bool> = (0..width)
        .map(|j| v.values.iter().all(|row| row.get(j).is_some_and(fits)))
        .collect();
    if !narrow.contains(&true) {
        return Ok(Transformed::no(LogicalPlan::Values(v.clone())));
    }
    let rows = v
        .values
        .iter()
        .map(|row| {
            row.iter()
                .zip(&narrow)
                .map(|(e, &n)| match e {
                    Expr::Literal(ScalarValue::Int64(Some(x)), meta) if n => {
                        Expr::Literal(ScalarValue::Int32(i32::try_from(*x).ok()), meta.clone())
                    }
                    other => other.clone(),
                })
                .collect()
        })
        .collect();
    LogicalPlanBuilder::values(rows)?
        .build()
        .map(Transformed::yes)
}

/// `gcd(a, b)` / `lcm(a, b)` of two integers of 32 bits or fewer is an
/// `integer` (an `lcm` beyond it fails with 22003, as in PostgreSQL);
/// DataFusion computes them in `bigint`.
fn int4_result(e: Expr, schema: &DFSchema) -> Transformed<Expr> {
    let Expr::ScalarFunction(f) = &e else {
        return Transformed::no(e);
    };
    let small = f.args.iter().all(|a| {
        matches!(
            a.get_type(schema),
            Ok(DataType::Int8 | DataType::Int16 | DataType::Int32)
        )
    });
    if !small {
        return Transformed::no(e);
    }
    Transformed::yes(Expr::Cast(Cast::new(Box::new(e), DataType::Int32)))
}

/// `avg(x)` of an integer `x` averages it as `numeric(38,12)`, so the
/// result is PostgreSQL's type, `numeric` (see the module docs).
fn avg_numeric(
    mut f: datafusion::logical_expr::expr::AggregateFunction,
    schema: &DFSchema,
) -> Transformed<Expr> {
    let integer = f.params.args.len() == 1
        && matches!(
            f.params.args[0].get_type(schema),
            Ok(DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64)
        );
    if integer {
        let arg = f.params.args[0].clone();
        f.params.args[0] = Expr::Cast(Cast::new(Box::new(arg), DataType::Decimal128(38, 12)));
    }
    Transformed::new_transformed(Expr::AggregateFunction(f), integer)
}

/// `date_trunc(field, d)` of a `date` works on `d` as a `timestamptz` and
/// returns one, as PostgreSQL resolves it (DataFusion returns a timestamp).
fn date_trunc_of_date(f: ScalarFunction, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let is_date = f
        .args
        .get(1)
        .is_some_and(|a| matches!(a.get_type(schema), Ok(DataType::Date32 | DataType::Date64)));
    if !is_date {
        return Ok(Transformed::no(Expr::ScalarFunction(f)));
    }
    let mut args = f.args;
    let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    args[1] = Expr::Cast(Cast::new(Box::new(args[1].clone()), tz));
    Ok(Transformed::yes(f.func.call(args)))
}

/// `date_part('field', x)` as PostgreSQL's `float8`; its `second` keeps the
/// fraction (DataFusion's is an integer of whole seconds). The
/// `microsecond` part, which EXTRACT builds on (`interval_ops`), stays.
fn date_part_float(e: Expr) -> Transformed<Expr> {
    let Expr::ScalarFunction(f) = &e else {
        return Transformed::no(e);
    };
    let field = match f.args.first() {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _)) => s.to_ascii_lowercase(),
        _ => return Transformed::no(e),
    };
    let float = |x: Expr| Expr::Cast(Cast::new(Box::new(x), DataType::Float64));
    match (field.as_str(), f.args.get(1)) {
        ("microsecond" | "microseconds", _) | (_, None) => Transformed::no(e),
        ("second" | "seconds", Some(value)) => {
            let micros = f.func.call(vec![
                Expr::Literal(ScalarValue::Utf8(Some("microsecond".into())), None),
                value.clone(),
            ]);
            Transformed::yes(binary_expr(
                float(micros),
                Operator::Divide,
                Expr::Literal(ScalarValue::Float64(Some(1e6)), None),
            ))
        }
        _ => Transformed::yes(float(e)),
    }
}

/// Rebuilds a recursive CTE whose non-recursive term changed types: the
/// recursive term reads a working table of the new types, and every node
/// above that scan recomputes its schema.
fn retype_work_table(q: RecursiveQuery) -> Result<LogicalPlan> {
    let static_schema = q.static_term.schema().inner().clone();
    let nullable: Vec<_> = static_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let work_schema = Arc::new(Schema::new_with_metadata(
        nullable,
        static_schema.metadata().clone(),
    ));
    let source = provider_as_source(Arc::new(CteWorkTable::new(&q.name, work_schema)));
    let recursive = Arc::unwrap_or_clone(q.recursive_term)
        .transform_up(|p| match p {
            LogicalPlan::TableScan(scan) if is_work_table(&scan, &q.name) => {
                Ok(Transformed::yes(LogicalPlan::TableScan(
                    TableScanBuilder::new(scan.table_name, source.clone())
                        .with_projection(scan.projection)
                        .with_filters(scan.filters)
                        .with_fetch(scan.fetch)
                        .build()?,
                )))
            }
            other if other.inputs().is_empty() => Ok(Transformed::no(other)),
            other => Ok(Transformed::yes(other.recompute_schema()?)),
        })?
        .data;
    LogicalPlanBuilder::from(Arc::unwrap_or_clone(q.static_term))
        .to_recursive_query(q.name, recursive, q.is_distinct)?
        .build()
}

/// True for a scan of the working table of the recursive CTE `name`.
fn is_work_table(scan: &TableScan, name: &str) -> bool {
    source_as_provider(&scan.source)
        .ok()
        .and_then(|p| p.downcast_ref::<CteWorkTable>().map(|w| w.name() == name))
        .unwrap_or(false)
}
