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
//! Left alone: `LIMIT` / `OFFSET` (DataFusion wants int8 there), `VALUES`
//! rows (a column's rows must agree in type; PostgreSQL unifies them, the
//! column keeps `bigint` here), and nodes without inputs.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Rewrites `plan`'s 32-bit integer literals to `Int32`.
pub fn int4_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        if node.inputs().is_empty() {
            return Ok(Transformed::no(node));
        }
        if matches!(node, LogicalPlan::Limit(_)) {
            // Its input may have changed types.
            return Ok(Transformed::yes(node.recompute_schema()?));
        }
        let names = NamePreserver::new(&node);
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
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.update_data(|e| name.restore(e)))
        })?;
        // An input may have changed types even where this node did not.
        Ok(Transformed::yes(out.data.recompute_schema()?))
    })
    .map(|t| t.data)
}
