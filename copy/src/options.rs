//! COPY options: the `WITH (...)` list of a `COPY` statement turned into a
//! validated [`CopyOptions`], following PostgreSQL's `ProcessCopyOptions`
//! (defaults per format, the same checks and the same messages).

use crate::error::{sqlstate, CopyError};

/// Data format of the COPY stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyFormat {
    /// PostgreSQL text format: tab-separated, backslash escapes, `\N` for NULL.
    #[default]
    Text,
    /// CSV with quoting; empty unquoted field is NULL.
    Csv,
}

/// Which columns `FORCE_QUOTE` applies to (CSV output only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ForceQuote {
    /// Quote only where needed.
    #[default]
    None,
    /// `FORCE_QUOTE *`: quote every non-NULL value.
    All,
    /// Quote every non-NULL value of these columns.
    Columns(Vec<String>),
}

/// Validated options of one COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Text or CSV.
    pub format: CopyFormat,
    /// Field separator (one byte).
    pub delimiter: u8,
    /// The NULL marker (`\N` for text, empty for CSV).
    pub null: String,
    /// First line is a header (skipped on input, written on output).
    pub header: bool,
    /// `HEADER MATCH`: on input, the header names must equal the column names.
    pub header_match: bool,
    /// CSV quote byte.
    pub quote: u8,
    /// CSV escape byte inside quotes (defaults to `quote`).
    pub escape: u8,
    /// CSV input: these columns never read NULL (the NULL marker is a value).
    pub force_not_null: Vec<String>,
    /// CSV input: these columns read a quoted NULL marker as NULL too.
    pub force_null: Vec<String>,
    /// CSV output: quote non-NULL values of these columns.
    pub force_quote: ForceQuote,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self::text()
    }
}

impl CopyOptions {
    /// PostgreSQL's defaults for `FORMAT text`.
    pub fn text() -> Self {
        Self {
            format: CopyFormat::Text,
            delimiter: b'\t',
            null: "\\N".to_string(),
            header: false,
            header_match: false,
            quote: b'"',
            escape: b'"',
            force_not_null: Vec::new(),
            force_null: Vec::new(),
            force_quote: ForceQuote::None,
        }
    }

    /// PostgreSQL's defaults for `FORMAT csv`.
    pub fn csv() -> Self {
        Self {
            format: CopyFormat::Csv,
            delimiter: b',',
            null: String::new(),
            ..Self::text()
        }
    }

    /// Parses the option list of a COPY statement. Keys are case-insensitive;
    /// both the modern form (`FORMAT csv`, `HEADER true`, `DELIMITER ','`,
    /// `NULL ''`, `QUOTE '"'`, `ESCAPE '"'`, `FORCE_QUOTE (a, b)`,
    /// `FORCE_NOT_NULL (a)`, `FORCE_NULL (a)`, `ENCODING 'UTF8'`) and the legacy
    /// one (`CSV`, `BINARY`, `HEADER`, `DELIMITER AS ','`, `NULL AS ''`,
    /// `FORCE QUOTE *`, `FORCE NOT NULL a`) are accepted. A value wrapped in
    /// single quotes is unquoted (`''` inside becomes `'`).
    pub fn parse(with_options: &[(String, Option<String>)]) -> Result<Self, CopyError> {
        let mut raw = RawOptions::default();
        for (key, value) in with_options {
            raw.set(key, value.as_deref())?;
        }
        raw.validate()
    }

    /// Whether a column is listed in `FORCE_NOT_NULL`.
    pub fn is_force_not_null(&self, column: &str) -> bool {
        self.force_not_null.iter().any(|c| c == column)
    }

    /// Whether a column is listed in `FORCE_NULL`.
    pub fn is_force_null(&self, column: &str) -> bool {
        self.force_null.iter().any(|c| c == column)
    }

    /// Whether non-NULL values of a column are always quoted (CSV output).
    pub fn is_force_quote(&self, column: &str) -> bool {
        match &self.force_quote {
            ForceQuote::None => false,
            ForceQuote::All => true,
            ForceQuote::Columns(cols) => cols.iter().any(|c| c == column),
        }
    }
}

/// Options as given, before defaults and cross-checks.
#[derive(Default)]
struct RawOptions {
    format: Option<CopyFormat>,
    delimiter: Option<String>,
    null: Option<String>,
    header: Option<(bool, bool)>,
    quote: Option<String>,
    escape: Option<String>,
    force_quote: Option<ForceQuote>,
    force_not_null: Option<Vec<String>>,
    force_null: Option<Vec<String>>,
    encoding: Option<String>,
}

fn redundant() -> CopyError {
    CopyError::option(sqlstate::SYNTAX_ERROR, "conflicting or redundant options")
}

fn put<T>(slot: &mut Option<T>, value: T) -> Result<(), CopyError> {
    if slot.is_some() {
        return Err(redundant());
    }
    *slot = Some(value);
    Ok(())
}

fn required(key: &str, value: Option<String>) -> Result<String, CopyError> {
    value.ok_or_else(|| {
        CopyError::option(
            sqlstate::SYNTAX_ERROR,
            format!("{key} requires a parameter"),
        )
    })
}

impl RawOptions {
    fn set(&mut self, key: &str, value: Option<&str>) -> Result<(), CopyError> {
        let key = normalize_key(key);
        let value = value.map(unquote);
        match key.as_str() {
            "format" => {
                let v = required("format", value)?;
                let f = match v.to_ascii_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => {
                        return Err(CopyError::option(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "COPY format \"binary\" is not supported",
                        ))
                    }
                    _ => {
                        return Err(CopyError::option(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("COPY format \"{v}\" not recognized"),
                        ))
                    }
                };
                put(&mut self.format, f)
            }
            "csv" => put(&mut self.format, CopyFormat::Csv),
            "text" => put(&mut self.format, CopyFormat::Text),
            "binary" => Err(CopyError::option(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "COPY format \"binary\" is not supported",
            )),
            "header" => put(&mut self.header, parse_header(value.as_deref())?),
            "delimiter" => put(&mut self.delimiter, required("delimiter", value)?),
            "null" => put(&mut self.null, required("null", value)?),
            "quote" => put(&mut self.quote, required("quote", value)?),
            "escape" => put(&mut self.escape, required("escape", value)?),
            "encoding" => {
                let v = required("encoding", value)?;
                let norm: String = v
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                if norm != "utf8" && norm != "unicode" {
                    return Err(CopyError::option(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("COPY encoding \"{v}\" is not supported; only UTF8 is"),
                    ));
                }
                put(&mut self.encoding, v)
            }
            "force_quote" => {
                let v = required("force_quote", value)?;
                let fq = if v.trim() == "*" {
                    ForceQuote::All
                } else {
                    ForceQuote::Columns(parse_column_list(&v))
                };
                put(&mut self.force_quote, fq)
            }
            "force_not_null" => put(
                &mut self.force_not_null,
                parse_column_list(&required("force_not_null", value)?),
            ),
            "force_null" => put(
                &mut self.force_null,
                parse_column_list(&required("force_null", value)?),
            ),
            // Accepted by PostgreSQL and meaningless for this codec.
            "freeze" | "oids" if value.as_deref().is_none_or(is_false) => Ok(()),
            _ => Err(CopyError::option(
                sqlstate::SYNTAX_ERROR,
                format!("option \"{key}\" not recognized"),
            )),
        }
    }

    fn validate(self) -> Result<CopyOptions, CopyError> {
        let format = self.format.unwrap_or_default();
        let csv = format == CopyFormat::Csv;
        let mut opts = if csv {
            CopyOptions::csv()
        } else {
            CopyOptions::text()
        };
        if let Some(d) = &self.delimiter {
            opts.delimiter = single_byte(d, "COPY delimiter must be a single one-byte character")?;
        }
        if let Some(n) = self.null {
            opts.null = n;
        }
        if let Some((header, header_match)) = self.header {
            opts.header = header;
            opts.header_match = header_match;
        }
        if let Some(q) = &self.quote {
            if !csv {
                return Err(need_csv("QUOTE"));
            }
            opts.quote = single_byte(q, "COPY quote must be a single one-byte character")?;
        }
        opts.escape = opts.quote;
        if let Some(e) = &self.escape {
            if !csv {
                return Err(need_csv("ESCAPE"));
            }
            opts.escape = single_byte(e, "COPY escape must be a single one-byte character")?;
        }
        if let Some(fq) = self.force_quote {
            if !csv {
                return Err(need_csv("FORCE_QUOTE"));
            }
            opts.force_quote = fq;
        }
        if let Some(cols) = self.force_not_null {
            if !csv {
                return Err(need_csv("FORCE_NOT_NULL"));
            }
            opts.force_not_null = cols;
        }
        if let Some(cols) = self.force_null {
            if !csv {
                return Err(need_csv("FORCE_NULL"));
            }
            opts.force_null = cols;
        }
        check_cross(&opts)?;
        Ok(opts)
    }
}

fn check_cross(opts: &CopyOptions) -> Result<(), CopyError> {
    let bad = |m: &str| CopyError::option(sqlstate::INVALID_PARAMETER_VALUE, m.to_string());
    let d = opts.delimiter;
    if d == b'\n' || d == b'\r' {
        return Err(bad("COPY delimiter cannot be newline or carriage return"));
    }
    if opts.null.contains(['\n', '\r']) {
        return Err(bad(
            "COPY null representation cannot use newline or carriage return",
        ));
    }
    if opts.format == CopyFormat::Text && b"\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(&d) {
        return Err(bad(&format!("COPY delimiter cannot be \"{}\"", d as char)));
    }
    if opts.format == CopyFormat::Csv {
        if d == opts.quote {
            return Err(bad("COPY delimiter and quote must be different"));
        }
        if opts.null.as_bytes().contains(&opts.quote) {
            return Err(bad(
                "CSV quote character must not appear in the NULL specification",
            ));
        }
    }
    if opts.null.as_bytes().contains(&d) {
        return Err(bad(
            "COPY delimiter character must not appear in the NULL specification",
        ));
    }
    Ok(())
}

fn need_csv(option: &str) -> CopyError {
    CopyError::option(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("COPY {option} requires CSV mode"),
    )
}

fn single_byte(value: &str, message: &str) -> Result<u8, CopyError> {
    match value.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(CopyError::option(sqlstate::FEATURE_NOT_SUPPORTED, message)),
    }
}

/// Lower-cases a key, folds legacy spellings (`DELIMITER AS`, `FORCE NOT NULL`).
fn normalize_key(key: &str) -> String {
    let lower = key.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let words = match words.as_slice() {
        [w @ .., "as"] => w,
        w => w,
    };
    words.join("_")
}

/// Strips one level of SQL single quotes: `'a''b'` -> `a'b`.
fn unquote(value: &str) -> String {
    let v = match value.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("as ") && value[3..].trim_start().starts_with('\'') => {
            value[3..].trim_start()
        }
        _ => value,
    };
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        v[1..v.len() - 1].replace("''", "'")
    } else {
        v.to_string()
    }
}

fn is_false(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "false" | "off" | "0")
}

fn parse_header(value: Option<&str>) -> Result<(bool, bool), CopyError> {
    let Some(v) = value else {
        return Ok((true, false));
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" | "t" => Ok((true, false)),
        "false" | "off" | "0" | "no" | "f" => Ok((false, false)),
        "match" => Ok((true, true)),
        _ => Err(CopyError::option(
            sqlstate::INVALID_PARAMETER_VALUE,
            "header requires a Boolean value or \"match\"",
        )),
    }
}

/// Parses `(a, "B c", d)` or `a, b` into column names; unquoted names are
/// lower-cased like SQL identifiers.
fn parse_column_list(value: &str) -> Vec<String> {
    let v = value.trim();
    let v = v
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(v);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => {
                push_ident(&mut out, &cur, was_quoted);
                cur.clear();
                was_quoted = false;
            }
            c if !quoted && c.is_whitespace() => {}
            c => cur.push(c),
        }
    }
    push_ident(&mut out, &cur, was_quoted);
    out
}

fn push_ident(out: &mut Vec<String>, ident: &str, quoted: bool) {
    if quoted {
        out.push(ident.to_string());
    } else {
        let t = ident.trim();
        if !t.is_empty() {
            out.push(t.to_lowercase());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, Option<&str>)]) -> Result<CopyOptions, CopyError> {
        let owned: Vec<(String, Option<String>)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        CopyOptions::parse(&owned)
    }

    fn err_state(list: &[(&str, Option<&str>)]) -> &'static str {
        match opts(list) {
            Err(e) => e.sqlstate(),
            Ok(o) => panic!("expected error, got {o:?}"),
        }
    }

    #[test]
    fn defaults() {
        let t = opts(&[]).unwrap();
        assert_eq!(t, CopyOptions::text());
        assert_eq!(t.delimiter, b'\t');
        assert_eq!(t.null, "\\N");
        let c = opts(&[("FORMAT", Some("CSV"))]).unwrap();
        assert_eq!(c, CopyOptions::csv());
        assert_eq!((c.delimiter, c.quote, c.escape), (b',', b'"', b'"'));
        assert_eq!(c.null, "");
    }

    #[test]
    fn modern_and_legacy_forms() {
        let c = opts(&[
            ("format", Some("csv")),
            ("header", Some("true")),
            ("delimiter", Some("';'")),
            ("null", Some("'NULL'")),
            ("quote", Some("''''")),
            ("escape", Some("\\")),
        ])
        .unwrap();
        assert!(c.header);
        assert_eq!(c.delimiter, b';');
        assert_eq!(c.null, "NULL");
        assert_eq!(c.quote, b'\'');
        assert_eq!(c.escape, b'\\');

        let l = opts(&[
            ("CSV", None),
            ("HEADER", None),
            ("DELIMITER AS", Some("'|'")),
            ("FORCE NOT NULL", Some("a, \"B\"")),
            ("force quote", Some("*")),
        ])
        .unwrap();
        assert_eq!(l.format, CopyFormat::Csv);
        assert!(l.header && !l.header_match);
        assert_eq!(l.delimiter, b'|');
        assert_eq!(l.force_not_null, vec!["a".to_string(), "B".to_string()]);
        assert_eq!(l.force_quote, ForceQuote::All);
        assert!(l.is_force_quote("x"));

        let m = opts(&[("format", Some("csv")), ("header", Some("match"))]).unwrap();
        assert!(m.header && m.header_match);
        let fq = opts(&[("format", Some("csv")), ("force_quote", Some("(a,b)"))]).unwrap();
        assert!(fq.is_force_quote("b") && !fq.is_force_quote("c"));
        let n = opts(&[("null", Some("''"))]).unwrap();
        assert_eq!(n.null, "");
        let tab = opts(&[("delimiter", Some("\t")), ("null", Some(" "))]).unwrap();
        assert_eq!((tab.delimiter, tab.null.as_str()), (b'\t', " "));
        let sp = opts(&[("delimiter as", Some("AS ' '"))]).unwrap();
        assert_eq!(sp.delimiter, b' ');
        let h = opts(&[("header", Some("off")), ("encoding", Some("'UTF-8'"))]).unwrap();
        assert!(!h.header);
    }

    #[test]
    fn option_errors() {
        assert_eq!(err_state(&[("format", Some("xml"))]), "22023");
        assert_eq!(err_state(&[("format", Some("binary"))]), "0A000");
        assert_eq!(err_state(&[("binary", None)]), "0A000");
        assert_eq!(err_state(&[("bogus", Some("1"))]), "42601");
        assert_eq!(
            err_state(&[("format", Some("csv")), ("format", Some("text"))]),
            "42601"
        );
        assert_eq!(err_state(&[("delimiter", Some("ab"))]), "0A000");
        assert_eq!(err_state(&[("delimiter", Some("é"))]), "0A000");
        assert_eq!(err_state(&[("delimiter", Some("\n"))]), "22023");
        assert_eq!(err_state(&[("delimiter", Some("a"))]), "22023");
        assert_eq!(err_state(&[("delimiter", Some("\\"))]), "22023");
        assert_eq!(err_state(&[("null", Some("a\nb"))]), "22023");
        assert_eq!(err_state(&[("quote", Some("'"))]), "0A000");
        assert_eq!(err_state(&[("escape", Some("'"))]), "0A000");
        assert_eq!(err_state(&[("force_quote", Some("*"))]), "0A000");
        assert_eq!(
            err_state(&[("csv", None), ("delimiter", Some("\""))]),
            "22023"
        );
        assert_eq!(err_state(&[("csv", None), ("null", Some("\"x"))]), "22023");
        assert_eq!(err_state(&[("null", Some("a\tb"))]), "22023");
        assert_eq!(err_state(&[("header", Some("maybe"))]), "22023");
        assert_eq!(err_state(&[("encoding", Some("LATIN1"))]), "0A000");
        assert_eq!(err_state(&[("delimiter", None)]), "42601");
        let msg = opts(&[("format", Some("xml"))]).unwrap_err().to_string();
        assert_eq!(msg, "COPY format \"xml\" not recognized");
    }
}
