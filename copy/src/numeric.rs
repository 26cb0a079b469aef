//! Value parsers and formatters for booleans, integers and floats,
//! following PostgreSQL's `boolin`, `int4in` (PostgreSQL 16 syntax) and
//! `float8in`/`float8out` (shortest round-trip output of PostgreSQL 12+).
//! `numeric` is in [`crate::decimal`].
//! Parsers work on bytes and never allocate on success.

use std::fmt::Write as _;

use crate::error::{DataErrorKind, ValueError};

/// PostgreSQL's `isspace` set, used for trimming around numbers and booleans.
pub(crate) fn is_pg_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Strips PostgreSQL whitespace from both ends.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let mut a = 0;
    let mut b = s.len();
    while a < b && is_pg_space(s[a]) {
        a += 1;
    }
    while b > a && is_pg_space(s[b - 1]) {
        b -= 1;
    }
    &s[a..b]
}

/// Parses a boolean as `boolin` does: any prefix of true/false/yes/no,
/// `on`/`off` (at least two letters for `off`), `1`/`0`, case-insensitive.
pub(crate) fn parse_bool(s: &[u8]) -> Result<bool, ValueError> {
    match s {
        b"t" => return Ok(true),
        b"f" => return Ok(false),
        _ => {}
    }
    let t = trim(s);
    let is_prefix = |word: &[u8]| t.len() <= word.len() && word[..t.len()].eq_ignore_ascii_case(t);
    let r = match t.first().map(u8::to_ascii_lowercase) {
        Some(b't') if is_prefix(b"true") => Some(true),
        Some(b'f') if is_prefix(b"false") => Some(false),
        Some(b'y') if is_prefix(b"yes") => Some(true),
        Some(b'n') if is_prefix(b"no") => Some(false),
        Some(b'o') if t.len() >= 2 && t.eq_ignore_ascii_case(b"on") => Some(true),
        Some(b'o') if t.len() >= 2 && is_prefix(b"off") => Some(false),
        Some(b'1') if t.len() == 1 => Some(true),
        Some(b'0') if t.len() == 1 => Some(false),
        _ => None,
    };
    r.ok_or_else(|| ValueError::syntax(DataErrorKind::InvalidTextRepresentation, "boolean", s))
}

/// Integer column kinds, for range checks and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntKind {
    pub name: &'static str,
    pub min: i64,
    pub max: i64,
}

pub(crate) const INT2: IntKind = IntKind {
    name: "smallint",
    min: i16::MIN as i64,
    max: i16::MAX as i64,
};
pub(crate) const INT4: IntKind = IntKind {
    name: "integer",
    min: i32::MIN as i64,
    max: i32::MAX as i64,
};
pub(crate) const INT8: IntKind = IntKind {
    name: "bigint",
    min: i64::MIN,
    max: i64::MAX,
};
pub(crate) const TINYINT: IntKind = IntKind {
    name: "\"char\"",
    min: i8::MIN as i64,
    max: i8::MAX as i64,
};

enum IntFail {
    Syntax,
    Range,
}

/// Parses an integer like PostgreSQL 16: whitespace around, sign, decimal
/// with `_` separators between digits, or `0x`/`0o`/`0b` prefixes.
pub(crate) fn parse_int(s: &[u8], kind: IntKind) -> Result<i64, ValueError> {
    // Fast path: optional '-', up to 18 plain digits.
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if !digits.is_empty() && digits.len() <= 18 {
        let mut v: i64 = 0;
        let mut plain = true;
        for &b in digits {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                plain = false;
                break;
            }
            v = v * 10 + i64::from(d);
        }
        if plain {
            let v = if neg { -v } else { v };
            if v < kind.min || v > kind.max {
                return Err(int_range(s, kind));
            }
            return Ok(v);
        }
    }
    match parse_int_slow(s, kind) {
        Ok(v) => Ok(v),
        Err(IntFail::Range) => Err(int_range(s, kind)),
        Err(IntFail::Syntax) => Err(ValueError::syntax(
            DataErrorKind::InvalidTextRepresentation,
            kind.name,
            s,
        )),
    }
}

fn int_range(s: &[u8], kind: IntKind) -> ValueError {
    ValueError::new(
        DataErrorKind::NumericValueOutOfRange,
        format!(
            "value \"{}\" is out of range for type {}",
            String::from_utf8_lossy(s),
            kind.name
        ),
    )
}

fn parse_int_slow(s: &[u8], kind: IntKind) -> Result<i64, IntFail> {
    let t = trim(s);
    let (neg, rest) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, body) = match rest {
        [b'0', b'x' | b'X', r @ ..] => (16u32, r),
        [b'0', b'o' | b'O', r @ ..] => (8, r),
        [b'0', b'b' | b'B', r @ ..] => (2, r),
        r => (10, r),
    };
    let mut mag: u64 = 0;
    let mut any = false;
    let mut prev_digit = false;
    let mut overflow = false;
    for (i, &b) in body.iter().enumerate() {
        if b == b'_' {
            // Only between digits.
            if !prev_digit || i + 1 == body.len() {
                return Err(IntFail::Syntax);
            }
            prev_digit = false;
            continue;
        }
        let d = (b as char).to_digit(radix).ok_or(IntFail::Syntax)?;
        match mag
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => mag = m,
            None => overflow = true,
        }
        any = true;
        prev_digit = true;
    }
    if !any {
        return Err(IntFail::Syntax);
    }
    if overflow {
        return Err(IntFail::Range);
    }
    let v = if neg {
        0i128 - i128::from(mag)
    } else {
        i128::from(mag)
    };
    if v < i128::from(kind.min) || v > i128::from(kind.max) {
        return Err(IntFail::Range);
    }
    i64::try_from(v).map_err(|_| IntFail::Range)
}

/// `real` or `double precision`, for messages.
fn float_name(single: bool) -> &'static str {
    if single {
        "real"
    } else {
        "double precision"
    }
}

fn float_input(s: &[u8], single: bool) -> Result<&str, ValueError> {
    let t = trim(s);
    let bad = || {
        ValueError::syntax(
            DataErrorKind::InvalidTextRepresentation,
            float_name(single),
            s,
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    std::str::from_utf8(t).map_err(|_| bad())
}

/// Whether an input's mantissa names a finite non-zero number (so an
/// infinite or zero parse result means overflow or underflow).
fn range_error(
    t: &str,
    v_is_inf: bool,
    v_is_zero: bool,
    s: &[u8],
    single: bool,
) -> Option<ValueError> {
    let mantissa = t.split(['e', 'E']).next().unwrap_or("");
    let literal_special = t
        .bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E');
    if literal_special {
        return None;
    }
    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if v_is_inf || (v_is_zero && nonzero) {
        return Some(ValueError::new(
            DataErrorKind::NumericValueOutOfRange,
            format!(
                "\"{}\" is out of range for type {}",
                String::from_utf8_lossy(s),
                float_name(single)
            ),
        ));
    }
    None
}

/// Parses `double precision` input, including `NaN`, `Infinity`, `-inf`.
pub(crate) fn parse_f64(s: &[u8]) -> Result<f64, ValueError> {
    let t = float_input(s, false)?;
    let v: f64 = t.parse().map_err(|_| {
        ValueError::syntax(
            DataErrorKind::InvalidTextRepresentation,
            "double precision",
            s,
        )
    })?;
    if v.is_infinite() || v == 0.0 {
        if let Some(e) = range_error(t, v.is_infinite(), v == 0.0, s, false) {
            return Err(e);
        }
    }
    Ok(v)
}

/// Parses `real` input.
pub(crate) fn parse_f32(s: &[u8]) -> Result<f32, ValueError> {
    let t = float_input(s, true)?;
    let v: f32 = t
        .parse()
        .map_err(|_| ValueError::syntax(DataErrorKind::InvalidTextRepresentation, "real", s))?;
    if v.is_infinite() || v == 0.0 {
        if let Some(e) = range_error(t, v.is_infinite(), v == 0.0, s, true) {
            return Err(e);
        }
    }
    Ok(v)
}

/// Writes a float the way PostgreSQL 12+ does with `extra_float_digits = 1`:
/// shortest round-trip digits, fixed notation for decimal exponents in
/// `-4..threshold` (15 for float8, 6 for float4), else `d.ddde+XX`.
fn write_float(out: &mut Vec<u8>, sci: &str, threshold: i32) {
    // `sci` is Rust's shortest `{:e}` rendering: `-1.2345e-7`, `0e0`.
    let (neg, body) = match sci.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, sci),
    };
    let (mant, exp) = body.split_once('e').unwrap_or((body, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    let n = digits.len() as i32;
    if neg {
        out.push(b'-');
    }
    if (-4..threshold).contains(&exp) {
        if exp < 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(&digits);
        } else if exp + 1 >= n {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', (exp + 1 - n) as usize));
        } else {
            let split = (exp + 1) as usize;
            out.extend_from_slice(&digits[..split]);
            out.push(b'.');
            out.extend_from_slice(&digits[split..]);
        }
    } else {
        out.push(digits.first().copied().unwrap_or(b'0'));
        if n > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        let _ = write!(ByteWriter(out), "{a}");
    }
}

/// Appends a `double precision` value as PostgreSQL prints it.
pub fn format_f64(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let mut s = StackStr::new();
        let _ = write!(s, "{v:e}");
        write_float(out, s.as_str(), 15);
    }
}

/// Appends a `real` value as PostgreSQL prints it.
pub fn format_f32(v: f32, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let mut s = StackStr::new();
        let _ = write!(s, "{v:e}");
        write_float(out, s.as_str(), 6);
    }
}

/// `fmt::Write` into a byte vector.
pub(crate) struct ByteWriter<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A small stack string for float rendering (no allocation).
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl StackStr {
    fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0e0")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The decimal digits of `m`, written at the end of `buf`.
pub(crate) fn u128_digits(mut m: u128, buf: &mut [u8; 40]) -> &[u8] {
    let mut n = buf.len();
    // u128 division is a library call: switch to u64 once the value fits.
    while m > u128::from(u64::MAX) {
        n -= 1;
        buf[n] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    let mut m = m as u64;
    loop {
        n -= 1;
        buf[n] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    &buf[n..]
}

/// Appends an integer in decimal.
pub(crate) fn format_int(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    let mut buf = [0u8; 40];
    out.extend_from_slice(u128_digits(u128::from(v.unsigned_abs()), &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64s(v: f64) -> String {
        let mut o = Vec::new();
        format_f64(v, &mut o);
        String::from_utf8(o).unwrap()
    }

    fn f32s(v: f32) -> String {
        let mut o = Vec::new();
        format_f32(v, &mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn bools() {
        for s in ["t", "true", "TRUE", "tr", "y", "yes", "on", "1", " true "] {
            assert!(parse_bool(s.as_bytes()).unwrap(), "{s}");
        }
        for s in ["f", "false", "fal", "n", "no", "off", "of", "0", "FALSE"] {
            assert!(!parse_bool(s.as_bytes()).unwrap(), "{s}");
        }
        for s in ["", "o", "2", "truex", "ye s", "onn"] {
            let e = parse_bool(s.as_bytes()).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22P02", "{s}");
        }
        assert_eq!(
            parse_bool(b"abc").unwrap_err().message,
            "invalid input syntax for type boolean: \"abc\""
        );
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"123", INT4).unwrap(), 123);
        assert_eq!(parse_int(b"-2147483648", INT4).unwrap(), i32::MIN as i64);
        assert_eq!(parse_int(b" +42 ", INT4).unwrap(), 42);
        assert_eq!(parse_int(b"1_000_000", INT4).unwrap(), 1_000_000);
        assert_eq!(parse_int(b"0x1F", INT2).unwrap(), 31);
        assert_eq!(parse_int(b"-0o17", INT2).unwrap(), -15);
        assert_eq!(parse_int(b"0b101", INT8).unwrap(), 5);
        assert_eq!(parse_int(b"-9223372036854775808", INT8).unwrap(), i64::MIN);
        assert_eq!(parse_int(b"9223372036854775807", INT8).unwrap(), i64::MAX);
        let e = parse_int(b"2147483648", INT4).unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22003");
        assert_eq!(
            e.message,
            "value \"2147483648\" is out of range for type integer"
        );
        assert_eq!(
            parse_int(b"32768", INT2).unwrap_err().kind.sqlstate(),
            "22003"
        );
        assert_eq!(
            parse_int(b"9223372036854775808", INT8)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22003"
        );
        assert_eq!(
            parse_int(b"99999999999999999999999", INT8)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22003"
        );
        for bad in [
            "", "abc", "1.5", "1_", "_1", "1__0", "-", "0x", "12a", "1 2",
        ] {
            let e = parse_int(bad.as_bytes(), INT4).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22P02", "{bad}");
        }
        assert_eq!(
            parse_int(b"abc", INT4).unwrap_err().message,
            "invalid input syntax for type integer: \"abc\""
        );
    }

    #[test]
    fn floats_parse() {
        assert_eq!(parse_f64(b"1.5").unwrap(), 1.5);
        assert_eq!(parse_f64(b" -2e3 ").unwrap(), -2000.0);
        assert!(parse_f64(b"NaN").unwrap().is_nan());
        assert_eq!(parse_f64(b"Infinity").unwrap(), f64::INFINITY);
        assert_eq!(parse_f64(b"-Infinity").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_f64(b"-inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_f64(b"0").unwrap(), 0.0);
        assert_eq!(parse_f64(b"0e10").unwrap(), 0.0);
        assert_eq!(parse_f64(b"1e400").unwrap_err().kind.sqlstate(), "22003");
        assert_eq!(
            parse_f64(b"1e-400").unwrap_err().message,
            "\"1e-400\" is out of range for type double precision"
        );
        assert_eq!(parse_f32(b"1e39").unwrap_err().kind.sqlstate(), "22003");
        assert_eq!(parse_f32(b"1.25").unwrap(), 1.25);
        for bad in ["", "x", "1.2.3", "1e", "--1"] {
            assert_eq!(
                parse_f64(bad.as_bytes()).unwrap_err().kind.sqlstate(),
                "22P02"
            );
        }
        assert_eq!(
            parse_f32(b"z").unwrap_err().message,
            "invalid input syntax for type real: \"z\""
        );
    }

    #[test]
    fn floats_format() {
        assert_eq!(f64s(1.5), "1.5");
        assert_eq!(f64s(0.0), "0");
        assert_eq!(f64s(-0.0), "-0");
        assert_eq!(f64s(100.0), "100");
        assert_eq!(f64s(0.1), "0.1");
        assert_eq!(f64s(0.0001), "0.0001");
        assert_eq!(f64s(0.00001), "1e-05");
        assert_eq!(f64s(123456789012345.0), "123456789012345");
        assert_eq!(f64s(1234567890123456.0), "1.234567890123456e+15");
        assert_eq!(f64s(1e20), "1e+20");
        assert_eq!(f64s(1.5e300), "1.5e+300");
        assert_eq!(f64s(-2.5e-7), "-2.5e-07");
        assert_eq!(f64s(f64::NAN), "NaN");
        assert_eq!(f64s(f64::INFINITY), "Infinity");
        assert_eq!(f64s(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f64s(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f32s(1.5), "1.5");
        assert_eq!(f32s(100000.0), "100000");
        assert_eq!(f32s(1000000.0), "1e+06");
        assert_eq!(f32s(0.1), "0.1");
        assert_eq!(f32s(3.4028235e38), "3.4028235e+38");
    }

    #[test]
    fn int_format() {
        for v in [0i64, 7, -7, i64::MAX, i64::MIN, 1234567890] {
            let mut o = Vec::new();
            format_int(v, &mut o);
            assert_eq!(String::from_utf8(o).unwrap(), v.to_string());
        }
    }

    #[test]
    fn u128_digits_across_the_u64_boundary() {
        let big = u128::from(u64::MAX);
        for m in [0, 9, 10, big - 1, big, big + 1, big * 10 + 7, u128::MAX] {
            let mut buf = [0u8; 40];
            assert_eq!(u128_digits(m, &mut buf), m.to_string().as_bytes());
        }
    }
}
