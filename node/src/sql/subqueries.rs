//! Correlated subqueries in a SELECT list keep their meaning.
//!
//! Step in the flow: right after the PostgreSQL compatibility parser
//! (datafusion-pg-catalog) in [`super::Session::parse`]. That parser
//! replaces every correlated scalar subquery of a projection with NULL, a
//! shortcut for the catalog queries of psql and GUI clients, which
//! DataFusion cannot plan. On a user's table this silently answered NULL
//! where PostgreSQL gives a value (`SELECT id, (SELECT count(*) FROM b
//! WHERE b.k = a.id) FROM a`). A statement that reads any table outside
//! `pg_catalog` and `information_schema` is rewritten again here with the
//! same rules but that one: DataFusion then answers it (it decorrelates
//! aggregated subqueries) or says why it cannot. Statements the parser
//! changed in other ways (its substitutions of known client queries) are
//! left as it made them.

use std::sync::Arc;

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_relations, Expr, ObjectName, Query, SelectItem, SetExpr, Statement, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    RemoveSubqueryFromProjection, ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation,
    RewritePgCatalogOperator, RewriteRegCastToSubquery, SqlStatementRewriteRule,
    StripCallableQualifier, StripCollate,
};

/// The compatibility parser's rewrite rules, split around the one that
/// drops correlated subqueries.
pub struct SubqueryKeeper {
    before: Vec<Arc<dyn SqlStatementRewriteRule>>,
    remove: RemoveSubqueryFromProjection,
    after: FixVersionColumnName,
}

impl Default for SubqueryKeeper {
    fn default() -> Self {
        SubqueryKeeper {
            // In the compatibility parser's order.
            before: vec![
                Arc::new(AliasDuplicatedProjectionRewrite),
                Arc::new(ResolveUnqualifiedIdentifier),
                Arc::new(RewriteArrayAnyAllOperation),
                Arc::new(PrependUnqualifiedPgTableName),
                Arc::new(StripCallableQualifier),
                Arc::new(FixArrayLiteral),
                Arc::new(CurrentUserVariableToSessionUserFunctionCall),
                Arc::new(StripCollate),
                Arc::new(RewritePgCatalogOperator),
                Arc::new(RewriteRegCastToSubquery::new()),
            ],
            remove: RemoveSubqueryFromProjection,
            after: FixVersionColumnName,
        }
    }
}

/// True when `sql` has at least two `SELECT`s (only then can a projection
/// hold a subquery); cheap, so single queries pay nothing more.
fn may_have_subquery(sql: &str) -> bool {
    sql.as_bytes()
        .windows(6)
        .filter(|w| w.eq_ignore_ascii_case(b"select"))
        .nth(1)
        .is_some()
}

/// True when a SELECT list of `stmts` has a bare NULL item: the mark the
/// parser leaves where it dropped a subquery. Without one there is
/// nothing to restore, and fragments and ordinary queries skip the
/// second parse.
fn has_null_item(stmts: &[Statement]) -> bool {
    struct NullItems(bool);
    impl Visitor for NullItems {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_ref() {
                self.0 |= select.projection.iter().any(|item| {
                    let (SelectItem::UnnamedExpr(Expr::Value(v))
                    | SelectItem::ExprWithAlias {
                        expr: Expr::Value(v),
                        ..
                    }) = item
                    else {
                        return false;
                    };
                    v.value == Value::Null
                });
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let mut v = NullItems(false);
    for s in stmts {
        let _ = s.visit(&mut v);
    }
    v.0
}

/// True when `name` is a catalog relation (`pg_*`, `information_schema.*`).
fn is_catalog(name: &ObjectName) -> bool {
    name.0.iter().filter_map(|p| p.as_ident()).any(|i| {
        let v = i.value.to_ascii_lowercase();
        v == "pg_catalog" || v == "information_schema" || v.starts_with("pg_")
    })
}

fn reads_user_table(stmt: &Statement) -> bool {
    let mut found = false;
    let _ = visit_relations(stmt, |name| {
        if !is_catalog(name) {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

impl SubqueryKeeper {
    /// `parsed` (the compatibility parser's statements for `sql`), with
    /// each statement whose correlated subqueries it dropped on user
    /// tables rewritten again, keeping them.
    pub fn restore(&self, sql: &str, parsed: Vec<Statement>) -> Vec<Statement> {
        if !may_have_subquery(sql) || !has_null_item(&parsed) {
            return parsed;
        }
        let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
            return parsed;
        };
        if plain.len() != parsed.len() {
            return parsed;
        }
        parsed
            .into_iter()
            .zip(plain)
            .map(|(ours, raw)| {
                let kept = self.before.iter().fold(raw, |s, r| r.rewrite(s));
                let dropped = self.after.rewrite(self.remove.rewrite(kept.clone()));
                let kept = self.after.rewrite(kept);
                if dropped == ours && dropped != kept && reads_user_table(&kept) {
                    kept
                } else {
                    ours
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn run(sql: &str) -> String {
        let parsed = PostgresCompatibilityParser::new().parse(sql).unwrap();
        SubqueryKeeper::default()
            .restore(sql, parsed)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn user_tables_keep_correlated_subqueries() {
        let out = run("SELECT id, (SELECT count(*) FROM b WHERE b.k = a.id) AS c FROM a");
        assert!(
            out.contains("SELECT count(*) FROM b WHERE b.k = a.id"),
            "{out}"
        );
    }

    #[test]
    fn catalog_queries_are_left_to_the_parser() {
        let sql = "SELECT a.attname, (SELECT d.adbin FROM pg_catalog.pg_attrdef d \
                   WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a";
        assert!(run(sql).contains("NULL"), "{}", run(sql));
        assert_eq!(run("SELECT 1"), "SELECT 1");
        assert!(!may_have_subquery("SELECT v FROM kv WHERE id = 1"));
        assert!(may_have_subquery("select (SeLeCt 1)"));
        // nested SELECTs without a dropped subquery are not parsed again
        let parsed = PostgresCompatibilityParser::new()
            .parse("SELECT x FROM (SELECT 1 AS x) t")
            .unwrap();
        assert!(!has_null_item(&parsed));
    }
}
