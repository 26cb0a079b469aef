//! PostgreSQL's names for unaliased result columns.
//!
//! DataFusion names `SELECT count(*)` as `count(*)` and `SELECT 1` as
//! `Int64(1)`; PostgreSQL says `count` and `?column?`, and drivers that read
//! rows by column name depend on that. This derives PostgreSQL's names from
//! the statement's syntax.

use datafusion::sql::sqlparser::ast::{Expr, Query, SelectItem, SetExpr, Statement};

/// Column names PostgreSQL would give a query's result, or `None` when the
/// select list has a wildcard (DataFusion's names are right then).
pub fn result_names(stmt: &Statement) -> Option<Vec<String>> {
    match stmt {
        Statement::Query(q) => query_names(q),
        _ => None,
    }
}

fn query_names(q: &Query) -> Option<Vec<String>> {
    set_names(&q.body)
}

fn set_names(body: &SetExpr) -> Option<Vec<String>> {
    match body {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(e) => Some(expr_name(e)),
                SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => query_names(q),
        SetExpr::SetOperation { left, .. } => set_names(left),
        _ => None,
    }
}

fn ident(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_else(|| "?column?".into()),
        Expr::Nested(inner) => expr_name(inner),
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => {
                expr_name(expr)
            }
            _ => "?column?".into(),
        },
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Subquery(q) => query_names(q)
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| "?column?".into()),
        _ => "?column?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str) -> Option<Vec<String>> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        result_names(&stmts[0])
    }

    #[test]
    fn postgres_names() {
        assert_eq!(
            names("SELECT count(*), 1, t.a, b AS \"B\", sum(x)::int, (c) FROM t").unwrap(),
            vec!["count", "?column?", "a", "B", "sum", "c"]
        );
        assert_eq!(names("SELECT * FROM t"), None);
        assert_eq!(
            names("SELECT a FROM t UNION SELECT b FROM u").unwrap(),
            vec!["a"]
        );
    }
}
