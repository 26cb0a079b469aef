//! PostgreSQL literal forms that DataFusion does not read, rewritten before
//! planning.
//!
//! Step in the flow: [`super::session::Session::parse`] runs
//! [`interval_literals`] on every statement. `INTERVAL '1 day 02:03:04'`,
//! `'3 days 04:05:06.000007'::interval` and `CAST('-1 year 2 mons' AS
//! interval)` are read with PostgreSQL's rules (the same parser COPY uses)
//! and written back in the unit form DataFusion's parser reads (`13 months
//! 2 days 7384000000000 nanoseconds`). Text either parser reads alike, or
//! that only DataFusion reads, is left as it is.

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DataType, Expr, Statement, Value, ValueWithSpan,
};

fn rewrite(v: &mut ValueWithSpan) {
    let Value::SingleQuotedString(s) = &mut v.value else {
        return;
    };
    if let Ok(iv) = quiver_copy::parse_interval(s.as_bytes()) {
        *s = format!(
            "{} months {} days {} nanoseconds",
            iv.months, iv.days, iv.nanoseconds
        );
    }
}

/// Rewrites interval literals of `stmt` (see the module docs).
pub fn interval_literals(stmt: &mut Statement) {
    let _ = visit_expressions_mut(stmt, |e: &mut Expr| {
        match e {
            Expr::Interval(iv) if iv.leading_field.is_none() && iv.last_field.is_none() => {
                if let Expr::Value(v) = iv.value.as_mut() {
                    rewrite(v);
                }
            }
            Expr::Cast {
                data_type: DataType::Interval { fields: None, .. },
                expr,
                ..
            } => {
                if let Expr::Value(v) = expr.as_mut() {
                    rewrite(v);
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
            .unwrap()
            .remove(0);
        interval_literals(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn postgres_interval_text_becomes_units() {
        assert_eq!(
            rewritten("SELECT INTERVAL '1 day 02:03:04'"),
            "SELECT INTERVAL '0 months 1 days 7384000000000 nanoseconds'"
        );
        assert!(rewritten("SELECT '-1 year 2 mons'::interval")
            .contains("'-10 months 0 days 0 nanoseconds'"));
        // not an interval cast, or not PostgreSQL interval text: unchanged
        assert_eq!(
            rewritten("SELECT '1 day 02:03:04'"),
            "SELECT '1 day 02:03:04'"
        );
        assert_eq!(
            rewritten("SELECT INTERVAL '1' DAY"),
            "SELECT INTERVAL '1' DAY"
        );
    }
}
