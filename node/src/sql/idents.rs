//! Identifiers as PostgreSQL folds and quotes them: the one place for it.
//!
//! Step in the flow: every statement Quiver handles itself (DDL, COPY,
//! INSERT column lists, savepoints, the point-query path, result column
//! names) names tables and columns through these functions, so `"Foo"` stays
//! `Foo` while `Foo` becomes `foo`, exactly as in PostgreSQL and as
//! DataFusion's planner resolves the same names in queries.

use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The name an identifier stands for: quoted ones as written, unquoted ones
/// folded to lower case.
pub fn fold(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// The column an expression names when it is a bare or qualified column
/// reference (`a`, `"A"`, `t.a`).
pub fn column_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(fold(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        Expr::Nested(inner) => column_of(inner),
        _ => None,
    }
}

/// The last part of a name, folded (a column in an INSERT column list).
pub fn last_part(name: &ObjectName) -> String {
    match name.0.last() {
        Some(p) => p.as_ident().map(fold).unwrap_or_else(|| p.to_string()),
        None => String::new(),
    }
}

/// A table's name in Quiver's catalog from a (possibly schema-qualified)
/// object name: each part folded, the `public` schema dropped.
pub fn relation(name: &ObjectName) -> String {
    let mut parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => fold(i),
            None => p.to_string(),
        })
        .collect();
    if parts.len() == 2 && parts[0] == "public" {
        parts.remove(0);
    }
    parts.join(".")
}

/// A table or column name given as text (`'Foo'`, `'"Foo"'`,
/// `'public.foo'`), read as PostgreSQL reads a `regclass` literal.
pub fn name_text(raw: &str) -> String {
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(raw)
        .and_then(|mut p| p.parse_object_name(false));
    match parsed {
        Ok(name) => relation(&name),
        Err(_) => raw.to_owned(),
    }
}

/// `name` as PostgreSQL's `quote_ident` writes it: bare when it can be.
pub fn quote_if_needed(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        quote(name)
    }
}

/// `"name"`, always quoted (for SQL that Quiver writes itself).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(sql: &str) -> ObjectName {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_object_name(false)
            .unwrap()
    }

    #[test]
    fn folds_unquoted_keeps_quoted() {
        assert_eq!(fold(&Ident::new("Foo")), "foo");
        assert_eq!(fold(&Ident::with_quote('"', "Foo")), "Foo");
        assert_eq!(relation(&object("public.\"Mixed\"")), "Mixed");
        assert_eq!(relation(&object("Public.T")), "t");
        assert_eq!(relation(&object("other.t")), "other.t");
        assert_eq!(name_text("\"Foo\""), "Foo");
        assert_eq!(name_text("Foo"), "foo");
        assert_eq!(name_text("public.events"), "events");
    }

    #[test]
    fn quotes_as_postgres() {
        assert_eq!(quote_if_needed("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_if_needed("a_1"), "a_1");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
