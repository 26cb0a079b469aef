//! `numeric` values: text to Arrow `Decimal128`/`Decimal256` and back,
//! following PostgreSQL's `numeric_in` with typmod rounding (half away from
//! zero) and `numeric_out`.
//!
//! Quiver stores `numeric(p,s)` with `p <= 38` as `Decimal128(p,s)`, wider
//! ones as `Decimal256(p,s)`, and unconstrained `numeric` as
//! `Decimal256(`[`UNCONSTRAINED_PRECISION`]`, `[`UNCONSTRAINED_SCALE`]`)`.
//! PostgreSQL shows an unconstrained value with the digits it has, so
//! decimals of that precision (the columns and every result computed from
//! them, which DataFusion caps at the same precision) are written without
//! trailing fraction zeros ([`trims_zeros`]).

use arrow_buffer::i256;

use crate::error::{DataErrorKind, ValueError};
use crate::numeric::{trim, u128_digits};

/// Precision of unconstrained `numeric` (Arrow's widest decimal).
pub const UNCONSTRAINED_PRECISION: u8 = 76;
/// Fraction digits kept by unconstrained `numeric`.
pub const UNCONSTRAINED_SCALE: i8 = 16;

/// Whether values of a decimal of `precision` are shown without trailing
/// fraction zeros (see the module docs).
pub fn trims_zeros(precision: u8) -> bool {
    precision == UNCONSTRAINED_PRECISION
}

/// Powers of ten that fit an `i128` (`10^0 ..= 10^38`).
const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// A decimal's unscaled integer: `i128` or `i256`.
trait Mantissa: Copy + Ord {
    const ZERO: Self;
    fn digit(d: u8) -> Self;
    fn mul_add(self, mul: Self, add: Self) -> Option<Self>;
    fn pow10(n: u32) -> Option<Self>;
    fn negate(self) -> Self;
}

impl Mantissa for i128 {
    const ZERO: Self = 0;
    fn digit(d: u8) -> Self {
        i128::from(d)
    }
    fn mul_add(self, mul: Self, add: Self) -> Option<Self> {
        self.checked_mul(mul)?.checked_add(add)
    }
    fn pow10(n: u32) -> Option<Self> {
        POW10.get(n as usize).copied()
    }
    fn negate(self) -> Self {
        -self
    }
}

impl Mantissa for i256 {
    const ZERO: Self = i256::ZERO;
    fn digit(d: u8) -> Self {
        i256::from_i128(i128::from(d))
    }
    fn mul_add(self, mul: Self, add: Self) -> Option<Self> {
        self.checked_mul(mul)?.checked_add(add)
    }
    fn pow10(n: u32) -> Option<Self> {
        i256::from_i128(10).checked_pow(n)
    }
    fn negate(self) -> Self {
        self.wrapping_neg()
    }
}

/// `[-]digits[.digits]` with at most 18 integer digits and at most `scale`
/// fraction digits: the common case, parsed without rounding logic.
#[inline]
fn parse_decimal_fast(s: &[u8], scale: u32) -> Option<i128> {
    let (neg, d) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let mut int: u64 = 0;
    let mut i = 0;
    while i < d.len() {
        let c = d[i].wrapping_sub(b'0');
        if c > 9 {
            break;
        }
        if i == 18 {
            return None;
        }
        int = int * 10 + u64::from(c);
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let mut frac: u64 = 0;
    let mut frac_len = 0u32;
    if i < d.len() {
        if d[i] != b'.' {
            return None;
        }
        for &b in &d[i + 1..] {
            let c = b.wrapping_sub(b'0');
            if c > 9 || frac_len == scale {
                return None;
            }
            frac = frac * 10 + u64::from(c);
            frac_len += 1;
        }
    }
    let v = i128::from(int) * POW10[scale as usize]
        + i128::from(frac) * POW10[(scale - frac_len) as usize];
    Some(if neg { -v } else { v })
}

fn numeric_overflow(precision: u8, scale: i8) -> ValueError {
    let maxdigits = i32::from(precision) - i32::from(scale);
    let bound = if maxdigits > 0 {
        format!("10^{maxdigits}")
    } else {
        "1".to_string()
    };
    ValueError::new(
        DataErrorKind::NumericValueOutOfRange,
        "numeric field overflow".to_string(),
    )
    .with_detail(format!(
        "A field with precision {precision}, scale {scale} must round to an absolute value less than {bound}."
    ))
}

/// Parses `numeric` text into a `Decimal128(precision, scale)` value,
/// rounding half away from zero to `scale` digits like `numeric(p,s)`.
pub fn parse_decimal(s: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    if (0..=18).contains(&scale) {
        if let Some(v) = parse_decimal_fast(s, scale as u32) {
            if v.unsigned_abs() < POW10[usize::from(precision.min(38))].unsigned_abs() {
                return Ok(v);
            }
            return Err(numeric_overflow(precision, scale));
        }
    }
    parse_scaled(s, precision, scale)
}

/// Parses `numeric` text into a `Decimal256(precision, scale)` value, as
/// [`parse_decimal`] does for `Decimal128`.
pub fn parse_decimal256(s: &[u8], precision: u8, scale: i8) -> Result<i256, ValueError> {
    if (0..=18).contains(&scale) && precision >= 38 {
        // At most 36 digits: always within the precision.
        if let Some(v) = parse_decimal_fast(s, scale as u32) {
            return Ok(i256::from_i128(v));
        }
    }
    parse_scaled(s, precision, scale)
}

/// The general parser: signs, exponents, rounding, NaN and infinity.
fn parse_scaled<M: Mantissa>(s: &[u8], precision: u8, scale: i8) -> Result<M, ValueError> {
    let syntax = || ValueError::syntax(DataErrorKind::InvalidTextRepresentation, "numeric", s);
    let t = trim(s);
    let (neg, rest) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let int_digits = &rest[..int_len];
    let mut rest = &rest[int_len..];
    let mut frac_digits: &[u8] = &[];
    if let Some((b'.', r)) = rest.split_first() {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        frac_digits = &r[..n];
        rest = &r[n..];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        let word = if rest.is_empty() { t } else { rest };
        if word.eq_ignore_ascii_case(b"nan")
            || word.eq_ignore_ascii_case(b"infinity")
            || word.eq_ignore_ascii_case(b"inf")
        {
            let what = if word.eq_ignore_ascii_case(b"nan") {
                "NaN"
            } else {
                "an infinite value"
            };
            return Err(ValueError::new(
                DataErrorKind::NumericValueOutOfRange,
                "numeric field overflow".to_string(),
            )
            .with_detail(format!(
                "A field with precision {precision}, scale {scale} cannot hold {what}."
            )));
        }
        return Err(syntax());
    }
    let mut exp: i64 = 0;
    if let Some((b'e' | b'E', r)) = rest.split_first() {
        let (eneg, r) = match r.first() {
            Some(b'-') => (true, &r[1..]),
            Some(b'+') => (false, &r[1..]),
            _ => (false, r),
        };
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return Err(syntax());
        }
        for &b in &r[..n] {
            exp = (exp * 10 + i64::from(b - b'0')).min(1_000_000);
        }
        if eneg {
            exp = -exp;
        }
        rest = &r[n..];
    }
    if !rest.is_empty() {
        return Err(syntax());
    }
    let total = int_digits.len() + frac_digits.len();
    let digit = |i: usize| -> u8 {
        if i < int_digits.len() {
            int_digits[i] - b'0'
        } else {
            frac_digits[i - int_digits.len()] - b'0'
        }
    };
    // Number of digits that land left of the decimal point after scaling.
    let k = int_digits.len() as i64 + exp + i64::from(scale);
    let overflow = || numeric_overflow(precision, scale);
    let take = k.clamp(0, total as i64) as usize;
    let ten = M::digit(10);
    let mut acc = M::ZERO;
    for i in 0..take {
        acc = acc.mul_add(ten, M::digit(digit(i))).ok_or_else(overflow)?;
    }
    if k > total as i64 && acc != M::ZERO {
        let shift = u32::try_from(k - total as i64).map_err(|_| overflow())?;
        acc = M::pow10(shift)
            .and_then(|p| acc.mul_add(p, M::ZERO))
            .ok_or_else(overflow)?;
    }
    if k >= 0 && (k as usize) < total && digit(k as usize) >= 5 {
        acc = acc.mul_add(M::digit(1), M::digit(1)).ok_or_else(overflow)?;
    }
    let limit = M::pow10(u32::from(precision)).ok_or_else(overflow)?;
    if acc >= limit {
        return Err(overflow());
    }
    Ok(if neg { acc.negate() } else { acc })
}

/// Appends a decimal given by the digits of its magnitude (no leading
/// zeros, `"0"` for zero) and `scale`, with exactly `scale` fraction
/// digits, or with trailing fraction zeros dropped when `trim` is set.
fn format_digits(neg: bool, digits: &[u8], scale: i8, trim: bool, out: &mut Vec<u8>) {
    let zero = digits == b"0";
    if neg && !zero {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        if !zero {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let s = scale as usize;
    let n = digits.len();
    let start = out.len();
    if n > s {
        out.extend_from_slice(&digits[..n - s]);
        out.push(b'.');
        out.extend_from_slice(&digits[n - s..]);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', s - n));
        out.extend_from_slice(digits);
    }
    if trim {
        while out.len() > start && out.last() == Some(&b'0') {
            out.pop();
        }
        if out.last() == Some(&b'.') {
            out.pop();
        }
    }
}

/// Appends a `Decimal128(_, scale)` value with exactly `scale` fraction
/// digits, or without trailing fraction zeros when `trim` is set.
pub fn format_decimal(v: i128, scale: i8, trim: bool, out: &mut Vec<u8>) {
    let mut buf = [0u8; 40];
    let digits = u128_digits(v.unsigned_abs(), &mut buf);
    format_digits(v < 0, digits, scale, trim, out);
}

/// Appends a `Decimal256(_, scale)` value, as [`format_decimal`] does.
pub fn format_decimal256(v: i256, scale: i8, trim: bool, out: &mut Vec<u8>) {
    if let Some(small) = v.to_i128() {
        return format_decimal(small, scale, trim, out);
    }
    let text = v.to_string();
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.as_str()),
    };
    format_digits(neg, digits.as_bytes(), scale, trim, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: i128, s: i8) -> String {
        let mut o = Vec::new();
        format_decimal(v, s, false, &mut o);
        String::from_utf8(o).unwrap()
    }

    fn dec256(v: i256, s: i8, trim: bool) -> String {
        let mut o = Vec::new();
        format_decimal256(v, s, trim, &mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"123.45", 15, 2).unwrap(), 12345);
        assert_eq!(parse_decimal(b"-0.05", 15, 2).unwrap(), -5);
        assert_eq!(parse_decimal(b"17", 15, 2).unwrap(), 1700);
        assert_eq!(parse_decimal(b".5", 15, 2).unwrap(), 50);
        assert_eq!(parse_decimal(b"5.", 15, 2).unwrap(), 500);
        assert_eq!(parse_decimal(b"1.005", 15, 2).unwrap(), 101);
        assert_eq!(parse_decimal(b"-1.005", 15, 2).unwrap(), -101);
        assert_eq!(parse_decimal(b"1.004", 15, 2).unwrap(), 100);
        assert_eq!(parse_decimal(b"0.004", 15, 2).unwrap(), 0);
        assert_eq!(parse_decimal(b"1.5e2", 15, 2).unwrap(), 15000);
        assert_eq!(parse_decimal(b"15e-3", 15, 2).unwrap(), 2);
        assert_eq!(parse_decimal(b"1e-100", 15, 2).unwrap(), 0);
        assert_eq!(
            parse_decimal(b" +99.999 ", 4, 2)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22003"
        );
        assert_eq!(parse_decimal(b" +99.994 ", 4, 2).unwrap(), 9999);
        assert_eq!(parse_decimal(b"999.994", 5, 2).unwrap(), 99999);
        assert_eq!(parse_decimal(b"12345", 5, -2).unwrap(), 123);
        assert_eq!(
            parse_decimal(b"0.000000000000000000000000000000000000000000001", 38, 10).unwrap(),
            0
        );
        assert_eq!(
            parse_decimal(b"99999999999999999999999999999999999999", 38, 0).unwrap(),
            99999999999999999999999999999999999999
        );
        let e = parse_decimal(b"1000", 5, 2).unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22003");
        assert_eq!(e.message, "numeric field overflow");
        assert_eq!(
            e.detail.as_deref(),
            Some(
                "A field with precision 5, scale 2 must round to an absolute value less than 10^3."
            )
        );
        assert_eq!(
            parse_decimal(b"1", 2, 2).unwrap_err().detail.as_deref(),
            Some("A field with precision 2, scale 2 must round to an absolute value less than 1.")
        );
        assert_eq!(
            parse_decimal(b"1e1000000", 38, 0)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22003"
        );
        assert_eq!(
            parse_decimal(b"NaN", 10, 2).unwrap_err().kind.sqlstate(),
            "22003"
        );
        assert_eq!(
            parse_decimal(b"-Infinity", 10, 2)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22003"
        );
        for bad in ["", "abc", "1.2.3", ".", "-", "1e", "1x", "1 2"] {
            let e = parse_decimal(bad.as_bytes(), 10, 2).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22P02", "{bad}");
        }
        assert_eq!(dec(12345, 2), "123.45");
        assert_eq!(dec(-5, 2), "-0.05");
        assert_eq!(dec(0, 2), "0.00");
        assert_eq!(dec(7, 0), "7");
        assert_eq!(dec(123, -2), "12300");
        assert_eq!(dec(i128::MIN + 1, 0).len(), 40);
    }

    #[test]
    fn wide_decimals() {
        let p = UNCONSTRAINED_PRECISION;
        let s = UNCONSTRAINED_SCALE;
        let text = "123456789012345678901234567890.123456789";
        let v = parse_decimal256(text.as_bytes(), p, s).unwrap();
        assert_eq!(dec256(v, s, true), text);
        assert_eq!(dec256(v, s, false), format!("{text}0000000"));
        let neg = parse_decimal256(format!("-{text}").as_bytes(), p, s).unwrap();
        assert_eq!(neg, v.wrapping_neg());
        assert_eq!(dec256(neg, s, true), format!("-{text}"));
        // The widest value: 60 integer digits.
        let max = "9".repeat(60);
        let v = parse_decimal256(max.as_bytes(), p, s).unwrap();
        assert_eq!(dec256(v, s, true), max);
        let e = parse_decimal256(format!("1{max}").as_bytes(), p, s).unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22003");
        // Rounding at the 16th fraction digit, exponents, the fast path.
        let v = parse_decimal256(b"0.00000000000000005", p, s).unwrap();
        assert_eq!(dec256(v, s, true), "0.0000000000000001");
        let v = parse_decimal256(b"1.5e40", p, s).unwrap();
        assert_eq!(dec256(v, s, true), format!("15{}", "0".repeat(39)));
        let v = parse_decimal256(b"-12.50", p, s).unwrap();
        assert_eq!(dec256(v, s, true), "-12.5");
        assert_eq!(dec256(i256::ZERO, s, true), "0");
        assert_eq!(dec256(i256::ZERO, 2, false), "0.00");
        // numeric(50,2) is Decimal256 with its own precision.
        let v = parse_decimal256(b"1234567890123456789012345678901234567890.125", 50, 2).unwrap();
        assert_eq!(
            dec256(v, 2, false),
            "1234567890123456789012345678901234567890.13"
        );
        for bad in ["", "abc", "1.2.3", "-", "1e"] {
            let e = parse_decimal256(bad.as_bytes(), p, s).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22P02", "{bad}");
        }
        assert_eq!(
            parse_decimal256(b"NaN", p, s).unwrap_err().kind.sqlstate(),
            "22003"
        );
    }

    #[test]
    fn trimmed_output() {
        let mut o = Vec::new();
        format_decimal(15_000, 4, true, &mut o);
        assert_eq!(o, b"1.5");
        o.clear();
        format_decimal(-20_000, 4, true, &mut o);
        assert_eq!(o, b"-2");
        o.clear();
        format_decimal(-5, 4, true, &mut o);
        assert_eq!(o, b"-0.0005");
    }
}
