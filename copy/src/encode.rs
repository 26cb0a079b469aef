//! Encode side (`COPY ... TO STDOUT`): Arrow record batches to the bytes
//! PostgreSQL sends for text and CSV formats, with each type rendered as
//! PostgreSQL's output function does (`DateStyle = ISO`, `IntervalStyle =
//! postgres`, `extra_float_digits = 1`, `bytea_output = hex`, UTC session)
//! and then escaped (text) or quoted (CSV) like `CopyAttributeOut*`.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, IntervalMonthDayNano, IntervalMonthDayNanoType,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, BinaryArray, BinaryViewArray, BooleanArray, LargeBinaryArray, LargeStringArray,
    RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::{DataType, IntervalUnit, Schema, TimeUnit};

use crate::bytes::format_bytea;
use crate::datetime::{format_date, format_time, format_timestamp};
use crate::decimal::{format_decimal, format_decimal256, trims_zeros};
use crate::error::CopyError;
use crate::interval::format_interval;
use crate::numeric::{format_f32, format_f64, format_int, ByteWriter};
use crate::options::{CopyFormat, CopyOptions};

/// A column of a batch, downcast once per batch.
enum Cell<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Dec(&'a [i128], i8, bool),
    Dec256(&'a [arrow_buffer::i256], i8, bool),
    Str(&'a StringArray),
    LargeStr(&'a LargeStringArray),
    StrView(&'a StringViewArray),
    Bin(&'a BinaryArray),
    LargeBin(&'a LargeBinaryArray),
    BinView(&'a BinaryViewArray),
    Date32(&'a [i32]),
    Date64(&'a [i64]),
    Ts(&'a [i64], TimeUnit, bool),
    Time32(&'a [i32], TimeUnit),
    Time64(&'a [i64], TimeUnit),
    Interval(&'a [IntervalMonthDayNano]),
}

/// Rendered value: borrowed from the array or written to the scratch buffer.
enum Rendered<'a> {
    Borrowed(&'a [u8]),
    Scratch,
}

impl<'a> Cell<'a> {
    fn new(name: &str, a: &'a dyn Array) -> Result<Self, CopyError> {
        let unsupported = || CopyError::UnsupportedType {
            column: name.to_string(),
            data_type: a.data_type().clone(),
        };
        macro_rules! prim {
            ($t:ty) => {
                a.as_primitive_opt::<$t>()
                    .ok_or_else(unsupported)?
                    .values()
                    .as_ref()
            };
        }
        Ok(match a.data_type() {
            DataType::Null => Cell::Null,
            DataType::Boolean => Cell::Bool(a.as_boolean_opt().ok_or_else(unsupported)?),
            DataType::Int8 => Cell::I8(prim!(Int8Type)),
            DataType::Int16 => Cell::I16(prim!(Int16Type)),
            DataType::Int32 => Cell::I32(prim!(Int32Type)),
            DataType::Int64 => Cell::I64(prim!(Int64Type)),
            DataType::UInt8 => Cell::U8(prim!(UInt8Type)),
            DataType::UInt16 => Cell::U16(prim!(UInt16Type)),
            DataType::UInt32 => Cell::U32(prim!(UInt32Type)),
            DataType::UInt64 => Cell::U64(prim!(UInt64Type)),
            DataType::Float32 => Cell::F32(prim!(Float32Type)),
            DataType::Float64 => Cell::F64(prim!(Float64Type)),
            DataType::Decimal128(p, s) => Cell::Dec(prim!(Decimal128Type), *s, trims_zeros(*p)),
            DataType::Decimal256(p, s) => Cell::Dec256(prim!(Decimal256Type), *s, trims_zeros(*p)),
            DataType::Utf8 => Cell::Str(a.as_string_opt::<i32>().ok_or_else(unsupported)?),
            DataType::LargeUtf8 => {
                Cell::LargeStr(a.as_string_opt::<i64>().ok_or_else(unsupported)?)
            }
            DataType::Utf8View => Cell::StrView(a.as_string_view_opt().ok_or_else(unsupported)?),
            DataType::Binary => Cell::Bin(a.as_binary_opt::<i32>().ok_or_else(unsupported)?),
            DataType::LargeBinary => {
                Cell::LargeBin(a.as_binary_opt::<i64>().ok_or_else(unsupported)?)
            }
            DataType::BinaryView => Cell::BinView(a.as_binary_view_opt().ok_or_else(unsupported)?),
            DataType::Date32 => Cell::Date32(prim!(Date32Type)),
            DataType::Date64 => Cell::Date64(prim!(Date64Type)),
            DataType::Timestamp(unit, tz) => {
                let v = match unit {
                    TimeUnit::Second => prim!(TimestampSecondType),
                    TimeUnit::Millisecond => prim!(TimestampMillisecondType),
                    TimeUnit::Microsecond => prim!(TimestampMicrosecondType),
                    TimeUnit::Nanosecond => prim!(TimestampNanosecondType),
                };
                Cell::Ts(v, *unit, tz.is_some())
            }
            DataType::Time32(unit @ TimeUnit::Second) => {
                Cell::Time32(prim!(Time32SecondType), *unit)
            }
            DataType::Time32(unit) => Cell::Time32(prim!(Time32MillisecondType), *unit),
            DataType::Time64(unit @ TimeUnit::Nanosecond) => {
                Cell::Time64(prim!(Time64NanosecondType), *unit)
            }
            DataType::Time64(unit) => Cell::Time64(prim!(Time64MicrosecondType), *unit),
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                Cell::Interval(prim!(IntervalMonthDayNanoType))
            }
            _ => return Err(unsupported()),
        })
    }

    /// Renders row `i` (known non-null).
    #[inline]
    fn render(&self, i: usize, s: &mut Vec<u8>) -> Rendered<'a> {
        s.clear();
        match self {
            Cell::Null => {}
            Cell::Bool(a) => s.push(if a.value(i) { b't' } else { b'f' }),
            Cell::I8(v) => format_int(i64::from(v[i]), s),
            Cell::I16(v) => format_int(i64::from(v[i]), s),
            Cell::I32(v) => format_int(i64::from(v[i]), s),
            Cell::I64(v) => format_int(v[i], s),
            Cell::U8(v) => format_int(i64::from(v[i]), s),
            Cell::U16(v) => format_int(i64::from(v[i]), s),
            Cell::U32(v) => format_int(i64::from(v[i]), s),
            Cell::U64(v) => {
                use std::fmt::Write as _;
                let _ = write!(ByteWriter(s), "{}", v[i]);
            }
            Cell::F32(v) => format_f32(v[i], s),
            Cell::F64(v) => format_f64(v[i], s),
            Cell::Dec(v, scale, trim) => format_decimal(v[i], *scale, *trim, s),
            Cell::Dec256(v, scale, trim) => format_decimal256(v[i], *scale, *trim, s),
            Cell::Str(a) => return Rendered::Borrowed(a.value(i).as_bytes()),
            Cell::LargeStr(a) => return Rendered::Borrowed(a.value(i).as_bytes()),
            Cell::StrView(a) => return Rendered::Borrowed(a.value(i).as_bytes()),
            Cell::Bin(a) => format_bytea(a.value(i), s),
            Cell::LargeBin(a) => format_bytea(a.value(i), s),
            Cell::BinView(a) => format_bytea(a.value(i), s),
            Cell::Date32(v) => format_date(v[i], s),
            Cell::Date64(v) => format_date(v[i].div_euclid(86_400_000) as i32, s),
            Cell::Ts(v, unit, tz) => format_timestamp(v[i], *unit, *tz, s),
            Cell::Time32(v, unit) => format_time(i64::from(v[i]), *unit, s),
            Cell::Time64(v, unit) => format_time(v[i], *unit, s),
            Cell::Interval(v) => format_interval(v[i], s),
        }
        Rendered::Scratch
    }
}

/// Appends a value escaped for the text format (`CopyAttributeOutText`).
fn put_text(out: &mut Vec<u8>, v: &[u8], delim: u8) {
    let special = |b: u8| b < 0x20 || b == b'\\' || b == delim;
    if !v.iter().any(|&b| special(b)) {
        out.extend_from_slice(v);
        return;
    }
    for &b in v {
        if !special(b) {
            out.push(b);
            continue;
        }
        let esc = match b {
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x0b => b'v',
            b'\\' => b'\\',
            _ if b == delim => b,
            // Other control characters go out as they are.
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(b'\\');
        out.push(esc);
    }
}

/// Appends a value quoted for CSV when needed (`CopyAttributeOutCSV`).
fn put_csv(out: &mut Vec<u8>, v: &[u8], opts: &CopyOptions, force: bool, single_column: bool) {
    let needs_quote = force
        || v == opts.null.as_bytes()
        || (single_column && v == b"\\.")
        || v.iter()
            .any(|&b| b == opts.delimiter || b == opts.quote || b == b'\n' || b == b'\r');
    if !needs_quote {
        out.extend_from_slice(v);
        return;
    }
    out.push(opts.quote);
    for &b in v {
        if b == opts.quote || b == opts.escape {
            out.push(opts.escape);
        }
        out.push(b);
    }
    out.push(opts.quote);
}

/// Appends the header line (column names) for `HEADER true` output.
pub fn encode_header(schema: &Schema, opts: &CopyOptions, out: &mut Vec<u8>) {
    let single = schema.fields().len() == 1;
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(opts.delimiter);
        }
        match opts.format {
            CopyFormat::Text => put_text(out, f.name().as_bytes(), opts.delimiter),
            CopyFormat::Csv => put_csv(out, f.name().as_bytes(), opts, false, single),
        }
    }
    out.push(b'\n');
}

/// Appends every row of `batch` in the COPY format of `opts`, one line per
/// row ending in `\n`. Does not write a header (see [`encode_header`]).
///
/// Returns where each row ends in `out` (a CSV value may hold a newline, so
/// rows cannot be found again by looking for one): the protocol sends each
/// row of `COPY TO STDOUT` in its own CopyData message.
pub fn encode_batch(
    batch: &RecordBatch,
    opts: &CopyOptions,
    out: &mut Vec<u8>,
) -> Result<Vec<usize>, CopyError> {
    let schema = batch.schema();
    let cells = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| Cell::new(f.name(), a.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let force: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| opts.is_force_quote(f.name()))
        .collect();
    let nulls: Vec<_> = batch.columns().iter().map(|a| a.logical_nulls()).collect();
    let single = cells.len() == 1;
    let null = opts.null.as_bytes();
    let csv = opts.format == CopyFormat::Csv;
    let mut scratch = Vec::with_capacity(64);
    let mut ends = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (c, (cell, nulls)) in cells.iter().zip(&nulls).enumerate() {
            if c > 0 {
                out.push(opts.delimiter);
            }
            if matches!(cell, Cell::Null) || nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(null);
                continue;
            }
            let v = match cell.render(row, &mut scratch) {
                Rendered::Borrowed(b) => b,
                Rendered::Scratch => scratch.as_slice(),
            };
            if csv {
                put_csv(out, v, opts, force[c], single);
            } else {
                put_text(out, v, opts.delimiter);
            }
        }
        out.push(b'\n');
        ends.push(out.len());
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> String {
        let mut o = Vec::new();
        put_text(&mut o, v.as_bytes(), b'\t');
        String::from_utf8(o).unwrap()
    }

    fn csv(v: &str, opts: &CopyOptions) -> String {
        let mut o = Vec::new();
        put_csv(&mut o, v.as_bytes(), opts, false, false);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn text_escapes() {
        assert_eq!(text("plain"), "plain");
        assert_eq!(text("a\tb\nc\\d\re"), "a\\tb\\nc\\\\d\\re");
        assert_eq!(text("\x08\x0c\x0b\x01"), "\\b\\f\\v\x01");
        let mut o = Vec::new();
        put_text(&mut o, b"a|b", b'|');
        assert_eq!(o, b"a\\|b");
    }

    #[test]
    fn csv_quoting() {
        let o = CopyOptions::csv();
        assert_eq!(csv("plain", &o), "plain");
        assert_eq!(csv("", &o), "\"\"");
        assert_eq!(csv("a,b", &o), "\"a,b\"");
        assert_eq!(csv("a\"b", &o), "\"a\"\"b\"");
        assert_eq!(csv("a\nb", &o), "\"a\nb\"");
        assert_eq!(csv("\\.", &o), "\\.");
        let mut out = Vec::new();
        put_csv(&mut out, b"\\.", &o, false, true);
        assert_eq!(out, b"\"\\.\"");
        let esc = CopyOptions {
            escape: b'\\',
            ..CopyOptions::csv()
        };
        assert_eq!(csv("a\"b\\c", &esc), "\"a\\\"b\\\\c\"");
        assert_eq!(csv("a\\c", &esc), "a\\c");
    }
}
