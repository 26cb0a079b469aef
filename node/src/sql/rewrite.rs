//! One walk over a logical plan's expressions, for Quiver's analyzer rules.
//!
//! Step in the flow: [`super::checked`] and [`super::pg_text`] run after
//! DataFusion's type coercion and replace some expressions with Quiver's
//! functions. Both need the same walk: every node with inputs (subqueries
//! included), each expression bottom-up, with the node's input schema to
//! type sub-expressions, and the expression's output name kept, so parent
//! nodes still find the columns they refer to.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Applies `f` to every sub-expression of `plan`, bottom-up. `f` gets the
/// schema the expression is typed against (the node's inputs).
pub fn rewrite_exprs<F>(plan: LogicalPlan, mut f: F) -> Result<LogicalPlan>
where
    F: FnMut(Expr, &DFSchema) -> Result<Transformed<Expr>>,
{
    plan.transform_up_with_subqueries(|node| {
        if node.inputs().is_empty() {
            return Ok(Transformed::no(node));
        }
        let schema = merge_schema(&node.inputs());
        let names = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let name = names.save(&e);
            e.transform_up(|e| f(e, &schema))
                .map(|t| t.update_data(|e| name.restore(e)))
        })
    })
    .map(|t| t.data)
}
