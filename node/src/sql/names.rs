//! PostgreSQL's names for unaliased result columns.
//!
//! DataFusion names `SELECT count(*)` as `count(*)` and `SELECT 1` as
//! `Int64(1)`; PostgreSQL says `count` and `?column?`, and drivers that read
//! rows by column name depend on that. This derives PostgreSQL's names from
//! the statement's syntax: a function's name, a cast's type name when its
//! operand has none (`'1'::int` is `int4`), the keyword of SQL's special
//! forms (`substring`, `position`, `extract`...).

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType, Expr, Query, SelectItem, SetExpr, Statement, TrimWhereField,
};

use super::idents::fold;

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
                SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => query_names(q),
        SetExpr::SetOperation { left, .. } => set_names(left),
        _ => None,
    }
}

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => fold(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(fold)
            .unwrap_or_else(|| "?column?".into()),
        Expr::Nested(inner) => expr_name(inner),
        // The operand names the column when it is a column or a function
        // (a strong name); otherwise the type does.
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => {
                expr_name(expr)
            }
            Expr::Nested(inner) if matches!(inner.as_ref(), Expr::Identifier(_)) => expr_name(expr),
            _ => type_name(data_type).unwrap_or("?column?").into(),
        },
        Expr::TypedString(ts) => type_name(&ts.data_type).unwrap_or("?column?").into(),
        Expr::Interval(_) => "interval".into(),
        Expr::Substring { shorthand, .. } => if *shorthand { "substr" } else { "substring" }.into(),
        Expr::Position { .. } => "position".into(),
        Expr::Trim { trim_where, .. } => match trim_where {
            Some(TrimWhereField::Leading) => "ltrim",
            Some(TrimWhereField::Trailing) => "rtrim",
            _ => "btrim",
        }
        .into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::Extract { .. } => "extract".into(),
        // `arr[1]`, `(x::int[])[1]`: named as what is subscripted.
        Expr::CompoundFieldAccess { root, .. } => expr_name(root),
        Expr::AtTimeZone { .. } => "timezone".into(),
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Subquery(q) => query_names(q)
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| "?column?".into()),
        _ => "?column?".into(),
    }
}

/// PostgreSQL's internal name of a type, which names a cast's column.
fn type_name(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
        DataType::BigInt(_) | DataType::Int8(_) => "int8",
        DataType::SmallInt(_) | DataType::Int2(_) => "int2",
        DataType::Boolean | DataType::Bool => "bool",
        DataType::Text | DataType::String(_) => "text",
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
        DataType::Char(_) | DataType::Character(_) => "bpchar",
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric",
        DataType::Real | DataType::Float4 => "float4",
        DataType::DoublePrecision | DataType::Float8 | DataType::Float(_) => "float8",
        DataType::Date => "date",
        DataType::Time(_, _) => "time",
        DataType::Timestamp(_, tz) => match tz {
            datafusion::sql::sqlparser::ast::TimezoneInfo::WithTimeZone
            | datafusion::sql::sqlparser::ast::TimezoneInfo::Tz => "timestamptz",
            _ => "timestamp",
        },
        DataType::Interval { .. } => "interval",
        DataType::Bytea => "bytea",
        DataType::JSON => "json",
        DataType::JSONB => "jsonb",
        DataType::Uuid => "uuid",
        // `'{1,2}'::int[]` is named after its element type.
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => return type_name(inner),
        _ => return None,
    })
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
