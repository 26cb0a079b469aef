//! `bytea` text (hex `\x0a0b` and the old escape format) and `json`
//! validation, the two value types whose text is not a plain scalar.

use crate::error::{DataErrorKind, ValueError};

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `bytea` input into `out` (cleared first), as `byteain` does.
pub fn parse_bytea(s: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    out.clear();
    if let [b'\\', b'x' | b'X', hex @ ..] = s {
        out.reserve(hex.len() / 2);
        let mut i = 0;
        while i < hex.len() {
            let b = hex[i];
            if crate::numeric::is_pg_space(b) {
                i += 1;
                continue;
            }
            let hi = hex_val(b).ok_or_else(|| bad_hex(&hex[i..]))?;
            let Some(&b2) = hex.get(i + 1) else {
                return Err(ValueError::new(
                    DataErrorKind::InvalidParameterValue,
                    "invalid hexadecimal data: odd number of digits".to_string(),
                ));
            };
            let lo = hex_val(b2).ok_or_else(|| bad_hex(&hex[i + 1..]))?;
            out.push(hi << 4 | lo);
            i += 2;
        }
        return Ok(());
    }
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => match s.get(i + 1..i + 4) {
                _ if s.get(i + 1) == Some(&b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                    out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                    i += 4;
                }
                _ => {
                    return Err(ValueError::syntax(
                        DataErrorKind::InvalidTextRepresentation,
                        "bytea",
                        s,
                    ))
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

fn bad_hex(at: &[u8]) -> ValueError {
    let ch = std::str::from_utf8(at)
        .ok()
        .and_then(|s| s.chars().next())
        .map_or_else(
            || String::from_utf8_lossy(&at[..1.min(at.len())]).into_owned(),
            String::from,
        );
    ValueError::new(
        DataErrorKind::InvalidParameterValue,
        format!("invalid hexadecimal digit: \"{ch}\""),
    )
}

/// Appends `bytea` output in hex format (`\x0a0b`).
pub(crate) fn format_bytea(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + v.len() * 2);
    out.extend_from_slice(b"\\x");
    for &b in v {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// Checks that `b` is one JSON value (RFC 8259), like the `json` type's
/// input. UTF-8 validity is checked separately.
pub(crate) fn validate_json(b: &[u8]) -> Result<(), ValueError> {
    let fail = |detail: &str| {
        ValueError::syntax(DataErrorKind::InvalidTextRepresentation, "json", b)
            .with_detail(detail.to_string())
    };
    let mut i = 0;
    // Open containers: true for object, false for array.
    let mut stack: Vec<bool> = Vec::new();
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    loop {
        // Expect a value.
        ws(&mut i);
        match b.get(i) {
            Some(b'{') => {
                i += 1;
                ws(&mut i);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(true);
                    i = json_key(b, i).ok_or_else(|| fail("Expected string."))?;
                    continue;
                }
            }
            Some(b'[') => {
                i += 1;
                ws(&mut i);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(false);
                    continue;
                }
            }
            Some(b'"') => i = json_string(b, i).ok_or_else(|| fail("Invalid string."))?,
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            Some(b'-' | b'0'..=b'9') => {
                i = json_number(b, i).ok_or_else(|| fail("Invalid number."))?
            }
            None => return Err(fail("The input string ended unexpectedly.")),
            Some(_) => return Err(fail("Token is invalid.")),
        }
        // After a value: close containers or continue with a separator.
        loop {
            ws(&mut i);
            let Some(&top) = stack.last() else {
                return if i == b.len() {
                    Ok(())
                } else {
                    Err(fail("Expected end of input, but found more."))
                };
            };
            match (b.get(i), top) {
                (Some(b','), true) => {
                    i = json_key(b, i + 1).ok_or_else(|| fail("Expected string."))?;
                    break;
                }
                (Some(b','), false) => {
                    i += 1;
                    break;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    stack.pop();
                    i += 1;
                }
                (None, _) => return Err(fail("The input string ended unexpectedly.")),
                _ => return Err(fail("Expected \",\" or end of container.")),
            }
        }
    }
}

/// Parses `"key" :` starting at or after whitespace; returns the index after `:`.
fn json_key(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    if b.get(i) != Some(&b'"') {
        return None;
    }
    i = json_string(b, i)?;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    (b.get(i) == Some(&b':')).then_some(i + 1)
}

fn json_string(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let rel = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i..i + rel].iter().any(|&c| c < 0x20) {
            return None;
        }
        i += rel;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        match b.get(i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
            b'u' => {
                let hex = b.get(i + 2..i + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i += 6;
            }
            _ => return None,
        }
    }
}

fn json_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let first = *b.get(i)?;
    let n = digits(&mut i);
    if n == 0 || (first == b'0' && n > 1) {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytea(s: &str) -> Result<Vec<u8>, ValueError> {
        let mut o = vec![9, 9];
        parse_bytea(s.as_bytes(), &mut o).map(|_| o)
    }

    #[test]
    fn bytea_forms() {
        assert_eq!(bytea("\\x0a0B").unwrap(), vec![10, 11]);
        assert_eq!(bytea("\\x").unwrap(), Vec::<u8>::new());
        assert_eq!(bytea("\\x0a 0b").unwrap(), vec![10, 11]);
        assert_eq!(bytea("ab\\\\c\\001").unwrap(), b"ab\\c\x01".to_vec());
        let e = bytea("\\x0z").unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22023");
        assert_eq!(e.message, "invalid hexadecimal digit: \"z\"");
        let e = bytea("\\x0a0").unwrap_err();
        assert_eq!(e.message, "invalid hexadecimal data: odd number of digits");
        assert_eq!(bytea("a\\9").unwrap_err().kind.sqlstate(), "22P02");
        assert_eq!(bytea("a\\").unwrap_err().kind.sqlstate(), "22P02");
        let mut o = Vec::new();
        format_bytea(&[0, 10, 255], &mut o);
        assert_eq!(o, b"\\x000aff");
    }

    #[test]
    fn json() {
        for ok in [
            "1",
            " -1.5e+3 ",
            "\"a\\u00e9\\n\"",
            "null",
            "true",
            "[]",
            "{}",
            "[1, [2, {\"a\": [3]}], \"x\"]",
            "{\"a\": {\"b\": null}, \"c\": [true, false]}",
        ] {
            assert!(validate_json(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x",
            "01",
            "1.",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1 2]",
            "{1:2}",
            "\"a",
            "[",
            "1 1",
            "\"\\x\"",
            "\"a\tb\"",
            "-",
            "[1}",
            "{\"a\":1]",
        ] {
            let e = validate_json(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22P02", "{bad}");
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(validate_json(deep.as_bytes()).is_ok());
    }
}
