//! SQL text of the fragments and statements the coordinator sends to workers.
//!
//! Step in the flow: the router, the fragment pushdown and the shuffle turn
//! DataFusion plans and expressions back into SQL for a worker. They all go
//! through [`Fragments`], DataFusion's default unparsing dialect with one
//! difference: it decides whether an identifier needs quotes by looking at
//! its characters, where the default dialect compiles a regular expression
//! for every identifier (a few percent of a coordinator's CPU on a
//! single-row write).

use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion::sql::unparser::Unparser;

/// The unparsing dialect of worker SQL (see the module docs).
pub struct Fragments;

impl Dialect for Fragments {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        needs_quotes(identifier).then_some('"')
    }
}

/// The default dialect's rule: quote a keyword (but `id`), anything that is
/// not `[a-zA-Z_][a-zA-Z0-9_]*`, and anything with an upper-case letter
/// (unquoted names are folded to lower case).
fn needs_quotes(identifier: &str) -> bool {
    let mut chars = identifier.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return true;
    }
    let upper = identifier.to_ascii_uppercase();
    upper != "ID" && ALL_KEYWORDS.binary_search(&upper.as_str()).is_ok()
}

/// `expr` as worker SQL.
pub fn expr_to_sql(expr: &Expr) -> Result<ast::Expr> {
    Unparser::new(&Fragments).expr_to_sql(expr)
}

/// `plan` as worker SQL.
pub fn plan_to_sql(plan: &LogicalPlan) -> Result<ast::Statement> {
    Unparser::new(&Fragments).plan_to_sql(plan)
}

#[cfg(test)]
mod tests {
    use super::needs_quotes;
    use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

    #[test]
    fn quotes_as_the_default_dialect_does() {
        assert!(
            ALL_KEYWORDS.windows(2).all(|w| w[0] < w[1]),
            "keywords are sorted"
        );
        for plain in ["abalance", "_x1", "pgbench_accounts_102008", "id", "c0"] {
            assert!(!needs_quotes(plain), "{plain}");
        }
        for quoted in ["Aid", "select", "order", "user", "1a", "a b", "é", ""] {
            assert!(needs_quotes(quoted), "{quoted}");
        }
    }
}
