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
//! - `generate_series` of integer constants that fit in 32 bits gives
//!   `integer` rows, as PostgreSQL's `generate_series(int, int)` does
//!   (DataFusion's is `bigint` only). Arguments that are not constants
//!   keep `bigint`: their type is not known before planning.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, SelectItem, SetExpr, Statement, TableAliasColumnDef,
    TableFactor, UnaryOperator, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

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
                alias,
                args: Some(_),
                ..
            } = f
            {
                if !one_column(name) {
                    return ControlFlow::Continue(());
                }
                if let Some(alias) = alias.as_mut() {
                    if alias.columns.is_empty() {
                        alias.columns = vec![TableAliasColumnDef {
                            name: alias.name.clone(),
                            data_type: None,
                        }];
                    }
                }
            }
            ControlFlow::Continue(())
        }

        // After the visit of `f`, so the derived table is not visited again.
        fn post_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = f
            {
                if is_series(name) && int4_args(&args.args) {
                    if let Some(derived) = int4_series(f) {
                        *f = derived;
                    }
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

fn is_series(name: &ObjectName) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|n| fold(n) == "generate_series")
}

/// True when every argument is an integer constant of 32 bits.
fn int4_args(args: &[FunctionArg]) -> bool {
    fn int4(e: &Expr) -> bool {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<i32>().is_ok(),
                _ => false,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => int4(expr),
            _ => false,
        }
    }
    !args.is_empty()
        && args
            .iter()
            .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if int4(e)))
}

/// `generate_series(a, b[, s]) [alias]` in FROM as a derived table of
/// `integer` rows, named as the function's column.
fn int4_series(f: &TableFactor) -> Option<TableFactor> {
    let TableFactor::Table {
        name, args, alias, ..
    } = f
    else {
        return None;
    };
    let args = args.as_ref()?;
    let list: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    // The column is named as the alias names it (PostgreSQL's result name).
    let column = alias
        .as_ref()
        .and_then(|a| a.columns.first())
        .map_or_else(|| Ident::new("generate_series"), |c| c.name.clone());
    let alias = alias
        .as_ref()
        .map_or_else(|| "generate_series".to_owned(), ToString::to_string);
    let sql = format!(
        "SELECT * FROM (SELECT CAST(value AS integer) AS {column} \
         FROM {name}({}) AS series) AS {alias}",
        list.join(", ")
    );
    let query = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .ok()?;
    match *query.body {
        SetExpr::Select(sel) => sel.from.into_iter().next().map(|t| t.relation),
        _ => None,
    }
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
    let int4 = name == "generate_series"
        && matches!(&f.args, FunctionArguments::List(l) if int4_args(&l.args));
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
    if int4 {
        *e = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(e.clone()),
            data_type: DataType::Integer(None),
            array: false,
            format: None,
        };
    }
    Some(Ident::with_quote('"', name))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            rewritten("SELECT g FROM generate_series(1, 3000000000) g"),
            "SELECT g FROM generate_series(1, 3000000000) g (g)"
        );
        assert_eq!(
            rewritten("SELECT g FROM generate_series(1, 3) g"),
            "SELECT g FROM (SELECT CAST(value AS INTEGER) AS g \
             FROM generate_series(1, 3) AS series) AS g (g)"
        );
        assert_eq!(
            rewritten("SELECT generate_series(1, 3), generate_series(1, x)::int AS x"),
            "SELECT CAST(unnest(generate_series(1, 3)) AS INTEGER) AS \"generate_series\", \
             unnest(generate_series(1, x))::INT AS x"
        );
        assert_eq!(rewritten("SELECT * FROM t AS g"), "SELECT * FROM t AS g");
    }
}
