//! `numeric` on the wire: Arrow `Decimal128`/`Decimal256` values to
//! PostgreSQL's text and binary forms, and `numeric` parameters back.
//!
//! arrow-pg goes through `rust_decimal`, which holds 28 digits: wider
//! values failed to encode and could not be bound. Here the text is
//! `quiver_copy`'s (the same as `COPY TO`, unconstrained `numeric` without
//! trailing fraction zeros) and the binary form is PostgreSQL's
//! `numeric_send`: base-10000 digits with a weight, a sign and the display
//! scale. Text-format floats are written here too ([`float_text`]), as
//! COPY writes them.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, Decimal128Array, Decimal256Array, Float32Array, Float64Array,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{to_sql_checked, IsNull, ToSql};
use quiver_copy::{
    format_decimal, format_decimal256, parse_decimal, parse_decimal256, trims_zeros,
    UNCONSTRAINED_PRECISION, UNCONSTRAINED_SCALE,
};

use crate::sql::SqlError;

type BoxError = Box<dyn Error + Sync + Send>;

/// Appends row `row` of a decimal column in `numeric`'s text form
/// (`-12.50`); false, writing nothing, for other column types.
pub fn numeric_text(arr: &dyn Array, row: usize, out: &mut Vec<u8>) -> bool {
    match arr.data_type() {
        DataType::Decimal128(p, s) => {
            let Some(a) = arr.as_any().downcast_ref::<Decimal128Array>() else {
                return false;
            };
            format_decimal(a.value(row), *s, trims_zeros(*p), out);
        }
        DataType::Decimal256(p, s) => {
            let Some(a) = arr.as_any().downcast_ref::<Decimal256Array>() else {
                return false;
            };
            format_decimal256(a.value(row), *s, trims_zeros(*p), out);
        }
        _ => return false,
    }
    true
}

/// Appends row `row` of a float column as PostgreSQL writes it in text
/// (`-0`, `Infinity`, shortest round trip; arrow-pg writes `-0` as `0`);
/// false, writing nothing, for other column types.
pub fn float_text(arr: &dyn Array, row: usize, out: &mut Vec<u8>) -> bool {
    match arr.data_type() {
        DataType::Float64 => match arr.as_any().downcast_ref::<Float64Array>() {
            Some(a) => quiver_copy::format_f64(a.value(row), out),
            None => return false,
        },
        DataType::Float32 => match arr.as_any().downcast_ref::<Float32Array>() {
            Some(a) => quiver_copy::format_f32(a.value(row), out),
            None => return false,
        },
        _ => return false,
    }
    true
}

/// A value already written in its text form, by [`numeric_text`] or
/// [`float_text`]. Its binary form is `numeric`'s: floats are given to
/// this type only for text-format columns.
#[derive(Debug)]
pub struct PgText<'a>(pub &'a [u8]);

impl PgText<'_> {
    /// PostgreSQL's binary `numeric` (`numeric_send`) of this text.
    fn write_numeric_binary(&self, out: &mut BytesMut) {
        let (neg, text) = match self.0.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, self.0),
        };
        let (int, frac) = match text.iter().position(|&b| b == b'.') {
            Some(dot) => (&text[..dot], &text[dot + 1..]),
            None => (text, &[][..]),
        };
        let dscale = frac.len();
        // Base-10000 groups: the integer part aligned on the decimal point
        // from the right, the fraction from the left.
        let int_groups = int.len().div_ceil(4);
        let frac_groups = frac.len().div_ceil(4);
        let digit_at = |i: isize| -> u16 {
            // i: position relative to the decimal point, 0 = first fraction digit.
            let d = if i < 0 {
                let k = int.len() as isize + i;
                if k < 0 {
                    return 0;
                }
                int[k as usize]
            } else {
                match frac.get(i as usize) {
                    Some(d) => *d,
                    None => return 0,
                }
            };
            u16::from(d - b'0')
        };
        let mut groups: Vec<u16> = Vec::with_capacity(int_groups + frac_groups);
        for g in 0..int_groups + frac_groups {
            let first = (g as isize - int_groups as isize) * 4;
            let v = (0..4).fold(0u16, |acc, k| acc * 10 + digit_at(first + k));
            groups.push(v);
        }
        let mut weight = int_groups as i16 - 1;
        let lead = groups.iter().take_while(|&&g| g == 0).count();
        weight -= lead as i16;
        let groups = &groups[lead..];
        let trail = groups.iter().rev().take_while(|&&g| g == 0).count();
        let groups = &groups[..groups.len() - trail];
        if groups.is_empty() {
            weight = 0;
        }
        out.put_i16(groups.len() as i16);
        out.put_i16(weight);
        out.put_u16(if neg && !groups.is_empty() { 0x4000 } else { 0 });
        out.put_u16(dscale as u16);
        for g in groups {
            out.put_u16(*g);
        }
    }
}

impl ToSql for PgText<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if *ty != Type::NUMERIC {
            return Err(format!("no binary form for {ty} text").into());
        }
        self.write_numeric_binary(out);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8)
    }

    to_sql_checked!();
}

impl ToSqlText for PgText<'_> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, BoxError> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }
}

/// PostgreSQL's binary `numeric` as text, for the decimal parser.
fn binary_to_text(b: &[u8]) -> Result<String, SqlError> {
    let bad = || SqlError::new("22P03", "invalid binary numeric value");
    let word = |i: usize| -> Result<u16, SqlError> {
        b.get(i..i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or_else(bad)
    };
    let ndigits = usize::from(word(0)?);
    let weight = word(2)? as i16;
    let sign = word(4)?;
    // The display scale (word 6) does not matter: the target type's scale rules.
    if b.len() != 8 + 2 * ndigits {
        return Err(bad());
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 | 0xD000 | 0xF000 => {
            return Err(SqlError::new(
                "22003",
                "numeric NaN and infinity are not supported",
            ))
        }
        _ => return Err(bad()),
    }
    let mut digits = String::with_capacity(ndigits * 4 + 2);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if d > 9999 {
            return Err(bad());
        }
        digits.push_str(&format!("{d:04}"));
    }
    // digits * 10000^(weight + 1 - ndigits) = digits e(4 * (weight + 1 - ndigits)).
    let exp = 4 * (i32::from(weight) + 1 - ndigits as i32);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(format!(
        "{sign}{}e{exp}",
        if digits.is_empty() { "0" } else { &digits }
    ))
}

/// Decodes one `numeric` parameter into a decimal of `target` (or, with no
/// target, the narrowest decimal that holds its digits). `None` when the
/// target is not a decimal: the caller decodes those.
pub fn decode_param(
    value: Option<&[u8]>,
    binary: bool,
    target: Option<&DataType>,
) -> Option<Result<ScalarValue, SqlError>> {
    let (p, s) = match target {
        Some(DataType::Decimal128(p, s) | DataType::Decimal256(p, s)) => (*p, *s),
        None => (UNCONSTRAINED_PRECISION, UNCONSTRAINED_SCALE),
        Some(_) => return None,
    };
    let wide = !matches!(target, Some(DataType::Decimal128(..)));
    let Some(raw) = value else {
        return Some(Ok(if wide {
            ScalarValue::Decimal256(None, p, s)
        } else {
            ScalarValue::Decimal128(None, p, s)
        }));
    };
    Some((|| {
        let text = if binary {
            binary_to_text(raw)?
        } else {
            String::from_utf8(raw.to_vec())
                .map_err(|_| SqlError::new("22021", "invalid UTF-8 in a numeric parameter"))?
        };
        let err = |e: quiver_copy::ValueError| SqlError::new(e.kind.sqlstate(), e.message);
        Ok(if wide {
            ScalarValue::Decimal256(
                Some(parse_decimal256(text.as_bytes(), p, s).map_err(err)?),
                p,
                s,
            )
        } else {
            ScalarValue::Decimal128(
                Some(parse_decimal(text.as_bytes(), p, s).map_err(err)?),
                p,
                s,
            )
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::i256;
    use std::sync::Arc;

    fn binary(text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        PgText(text.as_bytes()).write_numeric_binary(&mut out);
        out.to_vec()
    }

    fn numeric(arr: &dyn Array, row: usize) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(numeric_text(arr, row, &mut out));
        out
    }

    fn words(b: &[u8]) -> Vec<i32> {
        b.chunks(2)
            .map(|w| i32::from(u16::from_be_bytes([w[0], w[1]])))
            .collect()
    }

    #[test]
    fn binary_form_is_numeric_send() {
        // ndigits, weight, sign, dscale, digits... as PostgreSQL sends them.
        assert_eq!(words(&binary("0")), vec![0, 0, 0, 0]);
        assert_eq!(words(&binary("0.00")), vec![0, 0, 0, 2]);
        assert_eq!(words(&binary("1")), vec![1, 0, 0, 0, 1]);
        assert_eq!(words(&binary("-12.50")), vec![2, 0, 0x4000, 2, 12, 5000]);
        assert_eq!(words(&binary("10000")), vec![1, 1, 0, 0, 1]);
        assert_eq!(words(&binary("0.000001")), vec![1, 0xFFFE, 0, 6, 100]);
        assert_eq!(
            words(&binary("123456789.123456789")),
            vec![6, 2, 0, 9, 1, 2345, 6789, 1234, 5678, 9000]
        );
    }

    #[test]
    fn binary_round_trips_through_the_parser() {
        for text in [
            "0",
            "1",
            "-12.5",
            "10000",
            "0.000001",
            "123456789012345678901234567890.123456789",
            "-99999999999999999999999999999999999999999999",
        ] {
            let b = binary(text);
            let v = decode_param(Some(&b), true, None).unwrap().unwrap();
            let arr = v.to_array().unwrap();
            assert_eq!(String::from_utf8(numeric(arr.as_ref(), 0)).unwrap(), text);
        }
    }

    #[test]
    fn params_take_the_target_type() {
        let t = DataType::Decimal128(10, 2);
        let v = decode_param(Some(b"1.005"), false, Some(&t))
            .unwrap()
            .unwrap();
        assert_eq!(v, ScalarValue::Decimal128(Some(101), 10, 2));
        let e = decode_param(Some(b"123456789.5"), false, Some(&t))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.sqlstate, "22003");
        let e = decode_param(Some(b"abc"), false, None)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.sqlstate, "22P02");
        assert!(decode_param(Some(b"1"), false, Some(&DataType::Int64)).is_none());
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        let e = decode_param(Some(&nan), true, None).unwrap().unwrap_err();
        assert_eq!(e.sqlstate, "22003");
        let e = decode_param(Some(&[0, 1]), true, None)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.sqlstate, "22P03");
    }

    #[test]
    fn floats_as_postgres_writes_them() {
        let arr: Arc<dyn Array> = Arc::new(Float64Array::from(vec![-0.0, f64::INFINITY, 0.1]));
        let text = |i| {
            let mut out = Vec::new();
            assert!(float_text(arr.as_ref(), i, &mut out));
            out
        };
        assert_eq!(text(0), b"-0");
        assert_eq!(text(1), b"Infinity");
        assert_eq!(text(2), b"0.1");
        let ints: Arc<dyn Array> = Arc::new(datafusion::arrow::array::Int64Array::from(vec![1]));
        let mut out = Vec::new();
        assert!(!float_text(ints.as_ref(), 0, &mut out));
        assert!(!numeric_text(ints.as_ref(), 0, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn binary_only_for_numeric() {
        let mut out = BytesMut::new();
        assert!(PgText(b"1.5").to_sql(&Type::FLOAT8, &mut out).is_err());
        assert!(PgText(b"1.5").to_sql(&Type::NUMERIC, &mut out).is_ok());
    }

    #[test]
    fn columns_as_text() {
        let arr: Arc<dyn Array> = Arc::new(
            Decimal256Array::from(vec![Some(i256::from_i128(15 * 10i128.pow(15))), None])
                .with_precision_and_scale(76, 16)
                .unwrap(),
        );
        assert_eq!(numeric(arr.as_ref(), 0), b"1.5");
        let arr: Arc<dyn Array> = Arc::new(
            Decimal128Array::from(vec![Some(1500)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        assert_eq!(numeric(arr.as_ref(), 0), b"15.00");
    }
}
