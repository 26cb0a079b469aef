//! PostgreSQL's string functions that DataFusion lacks: `format()`,
//! `quote_ident()`, `quote_literal()` and `quote_nullable()`.
//!
//! Step in the flow: registered on every node's base context (see
//! [`super::Database::open`]), so queries and the fragments workers run can
//! call them. Arguments that are not text are written with Arrow's cast to
//! text.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::error::SqlError;
use super::idents::quote_if_needed;

/// Which function a [`StringFn`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Format,
    QuoteIdent,
    QuoteLiteral,
    QuoteNullable,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StringFn {
    kind: Kind,
    signature: Signature,
}

/// `value` as an SQL string literal, as PostgreSQL's `quote_literal`.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// PostgreSQL's `format(fmt, args...)` for `%s`, `%I`, `%L`, `%%` and
/// positions (`%2$s`). `None` arguments are SQL NULLs.
pub fn format(fmt: &str, args: &[Option<String>]) -> Result<String, SqlError> {
    let bad = |m: String| SqlError::new("22023", m);
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut next = 0usize;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        let kind = loop {
            match chars.next() {
                Some(k @ ('s' | 'I' | 'L' | '%')) => break k,
                Some(d @ ('0'..='9' | '$')) => spec.push(d),
                Some(other) => {
                    return Err(bad(format!(
                        "unrecognized format() type specifier \"{other}\""
                    )))
                }
                None => return Err(bad("unterminated format() type specifier".into())),
            }
        };
        if kind == '%' {
            out.push('%');
            continue;
        }
        let index = match spec.strip_suffix('$') {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .map(|n| n - 1)
                .ok_or_else(|| bad(format!("invalid argument position \"{spec}\"")))?,
            None if spec.is_empty() => next,
            None => return Err(bad("format() widths are not supported".into())),
        };
        next = index + 1;
        let arg = args
            .get(index)
            .ok_or_else(|| bad("too few arguments for format()".into()))?;
        match (kind, arg) {
            ('s', Some(v)) => out.push_str(v),
            ('s', None) => {}
            ('I', Some(v)) => out.push_str(&quote_if_needed(v)),
            ('I', None) => {
                return Err(SqlError::new(
                    "22004",
                    "null values cannot be formatted as an SQL identifier",
                ))
            }
            (_, Some(v)) => out.push_str(&quote_literal(v)),
            (_, None) => out.push_str("NULL"),
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for StringFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Format => "format",
            Kind::QuoteIdent => "quote_ident",
            Kind::QuoteLiteral => "quote_literal",
            Kind::QuoteNullable => "quote_nullable",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let scalar = super::udf::all_scalar(&args.args);
        let texts = args
            .args
            .iter()
            .map(|a| cast(&a.clone().into_array(n)?, &DataType::Utf8).map_err(Into::into))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let texts: Vec<_> = texts.iter().map(|a| a.as_string::<i32>()).collect();
        let value = |col: usize, row: usize| {
            let a = texts[col];
            (!a.is_null(row)).then(|| a.value(row).to_owned())
        };
        let mut out = StringBuilder::with_capacity(n, n * 16);
        for row in 0..n {
            let first = if texts.is_empty() {
                None
            } else {
                value(0, row)
            };
            let v = match (self.kind, first) {
                (Kind::QuoteNullable, None) => Some("NULL".to_owned()),
                (_, None) => None,
                (Kind::QuoteIdent, Some(s)) => Some(quote_if_needed(&s)),
                (Kind::QuoteLiteral | Kind::QuoteNullable, Some(s)) => Some(quote_literal(&s)),
                (Kind::Format, Some(fmt)) => {
                    let rest: Vec<Option<String>> =
                        (1..texts.len()).map(|c| value(c, row)).collect();
                    Some(format(&fmt, &rest)?)
                }
            };
            out.append_option(v);
        }
        let array: ArrayRef = Arc::new(out.finish());
        super::udf::columnar(array, scalar)
    }
}

/// The functions, for registering on a session.
pub fn string_udfs() -> Vec<ScalarUDF> {
    let one = || Signature::any(1, Volatility::Immutable);
    [
        (Kind::Format, Signature::variadic_any(Volatility::Stable)),
        (Kind::QuoteIdent, one()),
        (Kind::QuoteLiteral, one()),
        (Kind::QuoteNullable, one()),
    ]
    .into_iter()
    .map(|(kind, signature)| ScalarUDF::new_from_impl(StringFn { kind, signature }))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn formats_as_postgres() {
        assert_eq!(format("%s-%s", &[s("a"), s("1")]).unwrap(), "a-1");
        assert_eq!(
            format(
                "INSERT INTO %I VALUES (%L, %L)",
                &[s("My Table"), s("it's"), None]
            )
            .unwrap(),
            "INSERT INTO \"My Table\" VALUES ('it''s', NULL)"
        );
        assert_eq!(format("%2$s %1$s %%", &[s("a"), s("b")]).unwrap(), "b a %");
        assert_eq!(format("[%s]", &[None]).unwrap(), "[]");
        assert_eq!(format("%s %s", &[s("a")]).unwrap_err().sqlstate, "22023");
        assert_eq!(format("%I", &[None]).unwrap_err().sqlstate, "22004");
        assert_eq!(format("%x", &[s("a")]).unwrap_err().sqlstate, "22023");
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }
}
