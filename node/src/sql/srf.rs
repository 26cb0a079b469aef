//! Set-returning functions where PostgreSQL lets them stand.
//!
//! Step in the flow: [`super::session::Session::parse`] runs
//! [`set_returning_functions`] on every statement, before planning.
//! - In FROM, a one-column function with an alias and no column list names
//!   its column after the alias (`FROM generate_series(1, 3) g` has a
//!   column `g`; DataFusion calls it `value`).
//! - In a select list, `generate_series(...)` returns one row per value in
//!   PostgreSQL; DataFusion's scalar form returns one array. It becomes
//!   `unnest(generate_series(...))`, which DataFusion expands into rows.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, SelectItem, SetExpr, Statement, TableAliasColumnDef, TableFactor, VisitMut,
    VisitorMut,
};

use super::idents::fold;

/// Functions whose rows have one column.
fn one_column(name: &ObjectName) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(fold)
        .is_some_and(|n| n == "generate_series" || n == "range")
}

/// Rewrites `stmt`'s set-returning functions (see the module docs).
pub fn set_returning_functions(stmt: &mut Statement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                alias: Some(alias),
                args: Some(_),
                ..
            } = f
            {
                if one_column(name) && alias.columns.is_empty() {
                    alias.columns = vec![TableAliasColumnDef {
                        name: alias.name.clone(),
                        data_type: None,
                    }];
                }
            }
            ControlFlow::Continue(())
        }

        fn pre_visit_query(
            &mut self,
            q: &mut datafusion::sql::sqlparser::ast::Query,
        ) -> ControlFlow<()> {
            if let SetExpr::Select(sel) = q.body.as_mut() {
                for item in sel.projection.iter_mut() {
                    match item {
                        SelectItem::UnnamedExpr(e) => {
                            // Named as PostgreSQL names it: after the function.
                            if let Some(alias) = unnest_series(e) {
                                *item = SelectItem::ExprWithAlias {
                                    expr: e.clone(),
                                    alias,
                                };
                            }
                        }
                        SelectItem::ExprWithAlias { expr, .. } => {
                            unnest_series(expr);
                        }
                        _ => {}
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// Wraps a select-list `generate_series(...)` (also under casts) in
/// `unnest(...)`; returns the column name PostgreSQL gives it.
fn unnest_series(e: &mut Expr) -> Option<Ident> {
    let f = match e {
        Expr::Cast { expr, .. } | Expr::Nested(expr) => return unnest_series(expr),
        Expr::Function(f) => f,
        _ => return None,
    };
    if !one_column(&f.name) || !matches!(f.args, FunctionArguments::List(_)) {
        return None;
    }
    let name = f.name.0.last().and_then(|p| p.as_ident()).map(fold)?;
    let inner = e.clone();
    *e = Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("unnest")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    });
    Some(Ident::with_quote('"', name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        set_returning_functions(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn series_in_from_and_select_list() {
        assert_eq!(
            rewritten("SELECT g FROM generate_series(1, 3) g"),
            "SELECT g FROM generate_series(1, 3) g (g)"
        );
        assert_eq!(
            rewritten("SELECT generate_series(1, 3), generate_series(1, 2)::int AS x"),
            "SELECT unnest(generate_series(1, 3)) AS \"generate_series\", \
             unnest(generate_series(1, 2))::INT AS x"
        );
        assert_eq!(rewritten("SELECT * FROM t AS g"), "SELECT * FROM t AS g");
    }
}
