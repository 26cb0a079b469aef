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
//!
//! [`bytea_literals`] reads `'\x0a0b'::bytea` (and `BYTEA '...'`) as bytea
//! input text, as PostgreSQL does, where DataFusion would take the string's
//! own bytes. [`insert_literals`] does both for untyped string literals that
//! `INSERT ... VALUES` or `UPDATE ... SET` puts into interval and bytea
//! columns.
//!
//! `timestamp` literals (`TIMESTAMP '2024-01-15 10:00'`, `'...'::timestamp`,
//! and text put into timestamp columns) are read with PostgreSQL's rules
//! too and written back in full (`2024-01-15 10:00:00`): DataFusion wants
//! the seconds.
//!
//! `'12.50'::numeric` keeps the literal's fraction digits, as PostgreSQL's
//! per-value scale shows them (`12.50`): the cast becomes one to
//! `numeric(4,2)` ([`literal_numeric_type`]), the type DataFusion gives
//! the bare literal `12.50`. Unconstrained `numeric` would write `12.5`
//! (ADR 0010).

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, AssignmentTarget, DataType, ExactNumberInfo, Expr, Ident, ObjectName,
    SelectItem, SetExpr, Statement, TableFactor, TableObject, TimezoneInfo, UnaryOperator, Update,
    Value, ValueWithSpan,
};

use super::error::SqlError;
use crate::storage::table::SqlType;

fn rewrite(v: &mut ValueWithSpan) {
    rewrite_signed(v, false);
}

/// [`rewrite`], negating the value when `negate` (`-INTERVAL '1 day'`:
/// DataFusion would negate only the first unit of the written form).
/// False when the text is not PostgreSQL interval input.
fn rewrite_signed(v: &mut ValueWithSpan, negate: bool) -> bool {
    let Value::SingleQuotedString(s) = &mut v.value else {
        return false;
    };
    // Under a minus, the operand was already written in unit form.
    let parsed = quiver_copy::parse_interval(s.as_bytes())
        .ok()
        .map(|iv| (iv.months, iv.days, iv.nanoseconds))
        .or_else(|| unit_form(s));
    let Some((months, days, nanos)) = parsed else {
        return false;
    };
    let (months, days, nanos) = if negate {
        match (
            months.checked_neg(),
            days.checked_neg(),
            nanos.checked_neg(),
        ) {
            (Some(m), Some(d), Some(n)) => (m, d, n),
            _ => return false,
        }
    } else {
        (months, days, nanos)
    };
    *s = format!("{months} months {days} days {nanos} nanoseconds");
    true
}

/// Reads back the unit form [`rewrite_signed`] writes.
fn unit_form(s: &str) -> Option<(i32, i32, i64)> {
    let mut it = s.split_ascii_whitespace();
    let mut next = |unit: &str| {
        let v = it.next()?;
        (it.next()? == unit).then_some(v)
    };
    let months = next("months")?.parse().ok()?;
    let days = next("days")?.parse().ok()?;
    let nanos = next("nanoseconds")?.parse().ok()?;
    Some((months, days, nanos))
}

/// `timestamp` input text in PostgreSQL's forms (`2024-01-15 10:00`,
/// `Jan 15 2024`, `epoch`...) written back as `YYYY-MM-DD HH:MM:SS[.f]`,
/// which DataFusion reads. Text neither reads is left for DataFusion's
/// error.
fn rewrite_timestamp(v: &mut ValueWithSpan) {
    use datafusion::arrow::datatypes::TimeUnit;
    let Value::SingleQuotedString(s) = &mut v.value else {
        return;
    };
    let Ok(t) = quiver_copy::parse_timestamp(s.as_bytes(), TimeUnit::Microsecond, false) else {
        return;
    };
    if t == i64::MAX || t == i64::MIN {
        return; // 'infinity': DataFusion has none
    }
    let mut out = Vec::with_capacity(32);
    quiver_copy::format_timestamp_at(t, TimeUnit::Microsecond, None, &mut out);
    if let Ok(text) = String::from_utf8(out) {
        if !text.ends_with(" BC") {
            *s = text;
        }
    }
}

/// `bytea` input text as a hex literal (other values are left alone).
fn rewrite_bytea(v: &mut ValueWithSpan) -> Result<(), SqlError> {
    let Value::SingleQuotedString(s) = &v.value else {
        return Ok(());
    };
    let mut bytes = Vec::new();
    quiver_copy::parse_bytea(s.as_bytes(), &mut bytes)
        .map_err(|e| SqlError::new(e.kind.sqlstate(), e.message))?;
    v.value = Value::HexStringLiteral(bytes.iter().map(|b| format!("{b:02x}")).collect());
    Ok(())
}

/// Rewrites `'...'::bytea`, `CAST('...' AS bytea)` and `BYTEA '...'`;
/// text that is not bytea input is an error, as in PostgreSQL.
pub fn bytea_literals(stmt: &mut Statement) -> Result<(), SqlError> {
    let flow = visit_expressions_mut(stmt, |e: &mut Expr| {
        let r = match e {
            Expr::Cast {
                data_type: DataType::Bytea,
                expr,
                ..
            } => match expr.as_mut() {
                Expr::Value(v) => rewrite_bytea(v),
                _ => Ok(()),
            },
            Expr::TypedString(ts) if ts.data_type == DataType::Bytea => {
                let mut v = ts.value.clone();
                let r = rewrite_bytea(&mut v);
                if matches!(v.value, Value::HexStringLiteral(_)) {
                    *e = Expr::Value(v);
                }
                r
            }
            _ => Ok(()),
        };
        match r {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => std::ops::ControlFlow::Break(e),
        }
    });
    match flow {
        std::ops::ControlFlow::Break(e) => Err(e),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// Rewrites the untyped string literals that `INSERT ... VALUES` puts into
/// interval and bytea columns, and names the leading columns when a VALUES
/// list without a column list is shorter than the table. `columns_of(table)`
/// gives a table's column names and types.
pub fn insert_literals(
    stmt: &mut Statement,
    columns_of: impl Fn(&ObjectName) -> Option<Vec<(String, SqlType)>>,
) -> Result<(), SqlError> {
    if let Statement::Update(up) = stmt {
        return update_literals(up, columns_of);
    }
    let Statement::Insert(ins) = stmt else {
        return Ok(());
    };
    let TableObject::TableName(name) = &ins.table else {
        return Ok(());
    };
    let Some(cols) = columns_of(name) else {
        return Ok(());
    };
    let Some(source) = ins.source.as_mut() else {
        return Ok(());
    };
    let values = match source.body.as_mut() {
        SetExpr::Values(values) => values,
        // `INSERT ... SELECT '...', ...`: PostgreSQL types the select
        // list's untyped literals by the target columns too.
        SetExpr::Select(sel) => {
            let targets = target_types(&ins.columns, &cols);
            for (item, ty) in sel.projection.iter_mut().zip(&targets) {
                match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        column_literal(e, ty.as_ref())?
                    }
                    _ => return Ok(()),
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    // `INSERT INTO t VALUES (...)` with fewer values than columns fills the
    // leading columns (the rest get their defaults), as in PostgreSQL.
    let widths: Vec<usize> = values.rows.iter().map(|r| r.content.len()).collect();
    if ins.columns.is_empty() {
        if let Some(&k) = widths.first() {
            if k < cols.len() && widths.iter().all(|&w| w == k) {
                ins.columns = cols[..k]
                    .iter()
                    .map(|(n, _)| ObjectName::from(vec![Ident::with_quote('"', n.clone())]))
                    .collect();
            }
        }
    }
    let targets = target_types(&ins.columns, &cols);
    for row in values.rows.iter_mut() {
        for (e, ty) in row.content.iter_mut().zip(&targets) {
            column_literal(e, ty.as_ref())?;
        }
    }
    Ok(())
}

/// The types of an INSERT's target columns (all of the table's when none
/// are listed; `None` for a column the table does not have).
fn target_types(columns: &[ObjectName], cols: &[(String, SqlType)]) -> Vec<Option<SqlType>> {
    if columns.is_empty() {
        return cols.iter().map(|(_, t)| Some(t.clone())).collect();
    }
    columns
        .iter()
        .map(|c| {
            let c = super::idents::last_part(c);
            cols.iter().find(|(n, _)| *n == c).map(|(_, t)| t.clone())
        })
        .collect()
}

/// [`insert_literals`] for `UPDATE t SET col = '...'`: the same untyped
/// literals, assigned to interval, bytea and timestamp columns.
fn update_literals(
    up: &mut Update,
    columns_of: impl Fn(&ObjectName) -> Option<Vec<(String, SqlType)>>,
) -> Result<(), SqlError> {
    let TableFactor::Table { name, .. } = &up.table.relation else {
        return Ok(());
    };
    if !up.table.joins.is_empty() {
        return Ok(());
    }
    let Some(cols) = columns_of(name) else {
        return Ok(());
    };
    for a in up.assignments.iter_mut() {
        let AssignmentTarget::ColumnName(c) = &a.target else {
            continue;
        };
        let c = super::idents::last_part(c);
        let ty = cols.iter().find(|(n, _)| *n == c).map(|(_, t)| t);
        column_literal(&mut a.value, ty)?;
    }
    Ok(())
}

/// Reads an untyped string literal that goes into a column of type `ty`
/// as PostgreSQL reads that type's input.
fn column_literal(e: &mut Expr, ty: Option<&SqlType>) -> Result<(), SqlError> {
    let Expr::Value(v) = e else { return Ok(()) };
    match ty {
        Some(SqlType::Bytea) => rewrite_bytea(v)?,
        Some(SqlType::Interval) => {
            if matches!(v.value, Value::SingleQuotedString(_)) {
                rewrite(v);
            }
        }
        Some(SqlType::Timestamp) => rewrite_timestamp(v),
        _ => {}
    }
    Ok(())
}

/// Rewrites interval literals of `stmt` (see the module docs).
pub fn interval_literals(stmt: &mut Statement) {
    let _ = visit_expressions_mut(stmt, |e: &mut Expr| {
        match e {
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => {
                // Visited after its operand, which is already in unit form.
                // The minus becomes a plus over the negated value: the
                // column is still named `?column?`, as PostgreSQL names it.
                if let Expr::Interval(iv) = expr.as_mut() {
                    if iv.leading_field.is_none() && iv.last_field.is_none() {
                        if let Expr::Value(v) = iv.value.as_mut() {
                            if rewrite_signed(v, true) {
                                *e = Expr::UnaryOp {
                                    op: UnaryOperator::Plus,
                                    expr: Box::new(Expr::Interval(iv.clone())),
                                };
                            }
                        }
                    }
                }
            }
            Expr::UnaryOp {
                op: UnaryOperator::BitwiseNot,
                expr,
            } => {
                // `~x` is `x # -1` (every bit flipped), which is planned.
                *e = Expr::BinaryOp {
                    left: Box::new(Expr::Nested(expr.clone())),
                    op: datafusion::sql::sqlparser::ast::BinaryOperator::PGBitwiseXor,
                    right: Box::new(Expr::value(Value::Number("-1".into(), false))),
                };
            }
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
            Expr::Cast {
                data_type:
                    DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone),
                expr,
                ..
            } => {
                if let Expr::Value(v) = expr.as_mut() {
                    rewrite_timestamp(v);
                }
            }
            Expr::TypedString(ts)
                if matches!(
                    ts.data_type,
                    DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone)
                ) =>
            {
                rewrite_timestamp(&mut ts.value);
            }
            Expr::Cast {
                data_type:
                    data_type @ (DataType::Numeric(ExactNumberInfo::None)
                    | DataType::Decimal(ExactNumberInfo::None)),
                expr,
                ..
            } => {
                if let Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(text),
                    ..
                }) = expr.as_ref()
                {
                    if let Some(t) = literal_numeric_type(text) {
                        *data_type = t;
                    }
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `numeric(p,s)` just wide enough for decimal text `text` (`12.50`:
/// `numeric(4,2)`); `None` for other text or more than 38 digits.
fn literal_numeric_type(text: &str) -> Option<DataType> {
    let t = text.trim();
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || int.len() + frac.len() == 0 {
        return None;
    }
    let int_digits = int.trim_start_matches('0').len() as u64;
    let scale = frac.len() as u64;
    let precision = (int_digits + scale).max(1);
    (precision <= 38).then_some(DataType::Numeric(ExactNumberInfo::PrecisionAndScale(
        precision,
        scale as i64,
    )))
}

/// PostgreSQL's `to_char` template patterns, longest first, and the
/// chrono specifiers DataFusion's `to_char` formats with.
const TEMPLATE_PATTERNS: &[(&str, &str)] = &[
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("YYYY", "%Y"),
    ("Month", "%B"),
    ("MONTH", "%B"),
    ("month", "%B"),
    ("Day", "%A"),
    ("DAY", "%A"),
    ("day", "%A"),
    ("DDD", "%j"),
    ("Mon", "%b"),
    ("MON", "%b"),
    ("mon", "%b"),
    ("Dy", "%a"),
    ("DY", "%a"),
    ("dy", "%a"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("am", "%P"),
    ("pm", "%P"),
    ("TZ", "%Z"),
];

/// A `to_char` template in chrono's terms: PostgreSQL's patterns become
/// specifiers, `"quoted text"` and other characters stay as they are
/// (`%` escaped), and the `FM` prefix is dropped. Month and day names are
/// not blank-padded to nine characters as PostgreSQL pads them.
pub fn to_char_template(pg: &str) -> String {
    let mut out = String::with_capacity(pg.len() * 2);
    let mut rest = pg;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("FM") {
            rest = r;
            continue;
        }
        if c == '"' {
            let body = &rest[1..];
            let end = body.find('"').unwrap_or(body.len());
            out.push_str(&body[..end].replace('%', "%%"));
            rest = body.get(end + 1..).unwrap_or("");
            continue;
        }
        if let Some((p, spec)) = TEMPLATE_PATTERNS.iter().find(|(p, _)| rest.starts_with(p)) {
            out.push_str(spec);
            rest = &rest[p.len()..];
            continue;
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Rewrites the template of `to_char(value, 'template')` calls (see
/// [`to_char_template`]).
pub fn to_char_templates(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let _ = visit_expressions_mut(stmt, |e: &mut Expr| {
        if let Expr::Function(f) = e {
            let is_to_char = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| super::idents::fold(i) == "to_char");
            if let (true, FunctionArguments::List(list)) = (is_to_char, &mut f.args) {
                if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) =
                    list.args.get_mut(1)
                {
                    if let Value::SingleQuotedString(t) = &mut v.value {
                        *t = to_char_template(t);
                    }
                }
            }
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
        to_char_templates(&mut stmt);
        bytea_literals(&mut stmt).unwrap();
        insert_literals(&mut stmt, |n| {
            (n.to_string() == "t").then(|| {
                vec![
                    ("i".to_string(), SqlType::Int4),
                    ("b".to_string(), SqlType::Bytea),
                    ("iv".to_string(), SqlType::Interval),
                ]
            })
        })
        .unwrap();
        stmt.to_string()
    }

    #[test]
    fn numeric_text_keeps_its_fraction_digits() {
        assert_eq!(
            rewritten("SELECT '12.50'::numeric, CAST('-0.5' AS decimal), ' 7 '::numeric"),
            "SELECT '12.50'::NUMERIC(4,2), CAST('-0.5' AS NUMERIC(1,1)), ' 7 '::NUMERIC(1,0)"
        );
        // other text is left to the cast (and its error)
        assert_eq!(
            rewritten("SELECT '1e2'::numeric, 'x'::numeric, '12.5'::numeric(6,3)"),
            "SELECT '1e2'::NUMERIC, 'x'::NUMERIC, '12.5'::NUMERIC(6,3)"
        );
    }

    #[test]
    fn negated_interval_negates_every_unit() {
        assert_eq!(
            rewritten("SELECT -INTERVAL '1 day 02:00:00', -(INTERVAL '1 mon')"),
            "SELECT +INTERVAL '0 months -1 days -7200000000000 nanoseconds', \
             -(INTERVAL '1 months 0 days 0 nanoseconds')"
        );
    }

    #[test]
    fn to_char_templates_become_chrono() {
        assert_eq!(
            to_char_template("YYYY-MM-DD HH24:MI:SS"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(to_char_template("FMMonth DD, YYYY"), "%B %d, %Y");
        assert_eq!(to_char_template("\"at\" HH12 AM 100%"), "at %I %p 100%%");
        assert_eq!(
            rewritten("SELECT to_char(d, 'YYYY'), other(d, 'YYYY')"),
            "SELECT to_char(d, '%Y'), other(d, 'YYYY')"
        );
    }

    #[test]
    fn bytea_text_becomes_hex() {
        assert_eq!(
            rewritten(r"SELECT '\x00ff'::bytea, CAST('a\\b' AS BYTEA), BYTEA '\x41'"),
            "SELECT X'00ff'::BYTEA, CAST(X'615c62' AS BYTEA), X'41'"
        );
        // not bytea input text: 22P02, as in PostgreSQL
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        let mut stmt =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, r"SELECT '\q'::bytea")
                .unwrap()
                .remove(0);
        assert_eq!(bytea_literals(&mut stmt).unwrap_err().sqlstate, "22P02");
    }

    #[test]
    fn insert_values_into_bytea_and_interval_columns() {
        assert_eq!(
            rewritten(r"INSERT INTO t VALUES (1, '\x0102', '1 day 01:00:00')"),
            "INSERT INTO t VALUES (1, X'0102', '0 months 1 days 3600000000000 nanoseconds')"
        );
        assert_eq!(
            rewritten(r"INSERT INTO t (iv, b) VALUES ('-1:30:00', 'ab'), (NULL, NULL)"),
            "INSERT INTO t (iv, b) VALUES ('0 months 0 days -5400000000000 nanoseconds', X'6162'), (NULL, NULL)"
        );
        // fewer values than columns: the leading columns
        assert_eq!(
            rewritten(r"INSERT INTO t VALUES (1, '\x01'), (2, NULL)"),
            r#"INSERT INTO t ("i", "b") VALUES (1, X'01'), (2, NULL)"#
        );
        // other tables and SELECT sources are untouched
        assert_eq!(
            rewritten(r"INSERT INTO u VALUES ('\x01')"),
            r"INSERT INTO u VALUES ('\x01')"
        );
    }

    #[test]
    fn update_set_into_bytea_and_interval_columns() {
        assert_eq!(
            rewritten(r"UPDATE t SET b = '\x0102', iv = '01:00:00', i = 2 WHERE b = '\x01'"),
            r"UPDATE t SET b = X'0102', iv = '0 months 0 days 3600000000000 nanoseconds', i = 2 WHERE b = '\x01'"
        );
        assert_eq!(
            rewritten(r"INSERT INTO t SELECT 1, '\x01' || '', '00:00:02'"),
            r"INSERT INTO t SELECT 1, '\x01' || '', '0 months 0 days 2000000000 nanoseconds'"
        );
        assert_eq!(
            rewritten(r"INSERT INTO t (b) SELECT '\x01' AS x"),
            r"INSERT INTO t (b) SELECT X'01' AS x"
        );
        assert_eq!(
            rewritten(r"UPDATE u SET b = '\x01'"),
            r"UPDATE u SET b = '\x01'"
        );
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
