//! Decode side, last step: one Arrow builder per target column, fed field
//! bytes straight from the COPY line (or the de-escape scratch buffer) and
//! turned into arrays when a batch is full. Also decides which Arrow types
//! the codec supports.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder,
    IntervalMonthDayNanoBuilder, LargeBinaryBuilder, StringViewBuilder,
};
use arrow_array::{make_array, Array, ArrayRef, GenericStringArray, OffsetSizeTrait};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};

use crate::bytes::{parse_bytea, validate_json};
use crate::datetime::{parse_date, parse_time, parse_timestamp};
use crate::decimal::{parse_decimal, parse_decimal256};
use crate::error::{CopyError, DataError, DataErrorKind, ValueError};
use crate::interval::parse_interval;
use crate::numeric::{parse_bool, parse_f32, parse_f64, parse_int};
use crate::numeric::{INT2, INT4, INT8, TINYINT};
use crate::options::CopyOptions;

/// Field metadata key of Arrow extension types.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Extension name marking a string column as SQL `json` (canonical `arrow.json`).
pub const JSON_EXTENSION_NAME: &str = "arrow.json";

/// Whether a field is a `json` column: a string type tagged `arrow.json`.
pub fn is_json_field(field: &Field) -> bool {
    field
        .metadata()
        .get(EXTENSION_NAME_KEY)
        .is_some_and(|v| v == JSON_EXTENSION_NAME)
}

/// Whether this codec can read and write a column of this type.
pub fn is_supported_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Date32
            | DataType::Timestamp(_, _)
            | DataType::Time64(_)
            | DataType::Interval(IntervalUnit::MonthDayNano)
    )
}

/// How a field compared with the NULL marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NullMatch {
    /// Not the NULL marker.
    No,
    /// Equal to the NULL marker and not quoted (text format: the raw field).
    Unquoted,
    /// Equal to the NULL marker inside CSV quotes.
    Quoted,
}

/// A typed Arrow builder.
enum Builder {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal128(Decimal128Builder, u8, i8),
    Decimal256(Decimal256Builder, u8, i8),
    Utf8(StrCol<i32>),
    LargeUtf8(StrCol<i64>),
    Utf8View(StringViewBuilder, bool),
    Binary(BinaryBuilder),
    LargeBinary(LargeBinaryBuilder),
    Date32(Date32Builder),
    /// Timestamps and times: ticks of `unit`, re-typed at finish.
    Ticks(Int64Builder, TickKind, TimeUnit),
    Interval(IntervalMonthDayNanoBuilder),
}

#[derive(Clone, Copy)]
enum TickKind {
    Timestamp { with_tz: bool },
    Time,
}

/// One target column being filled.
pub(crate) struct Column {
    pub name: String,
    pub nullable: bool,
    force_not_null: bool,
    force_null: bool,
    json: bool,
    data_type: DataType,
    capacity: usize,
    builder: Builder,
    bytes: Vec<u8>,
}

/// A builder for `dt` sized for `cap` rows and `bytes` bytes of values.
fn make_builder(field: &Field, json: bool, cap: usize, bytes: usize) -> Result<Builder, CopyError> {
    Ok(match field.data_type() {
        DataType::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(cap)),
        DataType::Int8 => Builder::Int8(Int8Builder::with_capacity(cap)),
        DataType::Int16 => Builder::Int16(Int16Builder::with_capacity(cap)),
        DataType::Int32 => Builder::Int32(Int32Builder::with_capacity(cap)),
        DataType::Int64 => Builder::Int64(Int64Builder::with_capacity(cap)),
        DataType::Float32 => Builder::Float32(Float32Builder::with_capacity(cap)),
        DataType::Float64 => Builder::Float64(Float64Builder::with_capacity(cap)),
        DataType::Decimal128(p, s) => Builder::Decimal128(
            Decimal128Builder::with_capacity(cap).with_precision_and_scale(*p, *s)?,
            *p,
            *s,
        ),
        DataType::Decimal256(p, s) => Builder::Decimal256(
            Decimal256Builder::with_capacity(cap).with_precision_and_scale(*p, *s)?,
            *p,
            *s,
        ),
        DataType::Utf8 => Builder::Utf8(StrCol::new(cap, bytes, json)),
        DataType::LargeUtf8 => Builder::LargeUtf8(StrCol::new(cap, bytes, json)),
        DataType::Utf8View => Builder::Utf8View(StringViewBuilder::with_capacity(cap), json),
        DataType::Binary => Builder::Binary(BinaryBuilder::with_capacity(cap, bytes)),
        DataType::LargeBinary => {
            Builder::LargeBinary(LargeBinaryBuilder::with_capacity(cap, bytes))
        }
        DataType::Date32 => Builder::Date32(Date32Builder::with_capacity(cap)),
        DataType::Timestamp(unit, tz) => Builder::Ticks(
            Int64Builder::with_capacity(cap),
            TickKind::Timestamp {
                with_tz: tz.is_some(),
            },
            *unit,
        ),
        DataType::Time64(unit) => {
            Builder::Ticks(Int64Builder::with_capacity(cap), TickKind::Time, *unit)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(cap))
        }
        other => {
            return Err(CopyError::UnsupportedType {
                column: field.name().clone(),
                data_type: other.clone(),
            })
        }
    })
}

impl Column {
    /// A builder for `field`, or `UnsupportedType`.
    pub fn new(field: &Field, opts: &CopyOptions, capacity: usize) -> Result<Self, CopyError> {
        let json = is_json_field(field);
        let builder = make_builder(field, json, capacity, capacity * 16)?;
        Ok(Self {
            name: field.name().clone(),
            nullable: field.is_nullable(),
            force_not_null: opts.is_force_not_null(field.name()),
            force_null: opts.is_force_null(field.name()),
            json,
            data_type: field.data_type().clone(),
            capacity,
            builder,
            bytes: Vec::new(),
        })
    }

    /// Whether a field with this NULL comparison is NULL for this column.
    #[inline]
    pub fn is_null(&self, null: NullMatch) -> bool {
        match null {
            NullMatch::No => false,
            NullMatch::Unquoted => !self.force_not_null,
            NullMatch::Quoted => self.force_null,
        }
    }

    /// Appends a NULL.
    pub fn append_null(&mut self) {
        match &mut self.builder {
            Builder::Boolean(b) => b.append_null(),
            Builder::Int8(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal128(b, _, _) => b.append_null(),
            Builder::Decimal256(b, _, _) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::LargeUtf8(b) => b.append_null(),
            Builder::Utf8View(b, _) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::LargeBinary(b) => b.append_null(),
            Builder::Date32(b) => b.append_null(),
            Builder::Ticks(b, _, _) => b.append_null(),
            Builder::Interval(b) => b.append_null(),
        }
    }

    /// Parses a field's text and appends it.
    #[inline]
    pub fn append(&mut self, v: &[u8]) -> Result<(), ValueError> {
        match &mut self.builder {
            Builder::Boolean(b) => b.append_value(parse_bool(v)?),
            Builder::Int8(b) => b.append_value(parse_int(v, TINYINT)? as i8),
            Builder::Int16(b) => b.append_value(parse_int(v, INT2)? as i16),
            Builder::Int32(b) => b.append_value(parse_int(v, INT4)? as i32),
            Builder::Int64(b) => b.append_value(parse_int(v, INT8)?),
            Builder::Float32(b) => b.append_value(parse_f32(v)?),
            Builder::Float64(b) => b.append_value(parse_f64(v)?),
            Builder::Decimal128(b, p, s) => b.append_value(parse_decimal(v, *p, *s)?),
            Builder::Decimal256(b, p, s) => b.append_value(parse_decimal256(v, *p, *s)?),
            Builder::Utf8(b) => b.append(v)?,
            Builder::LargeUtf8(b) => b.append(v)?,
            Builder::Utf8View(b, json) => b.append_value(text_json(v, *json)?),
            Builder::Binary(b) => {
                parse_bytea(v, &mut self.bytes)?;
                b.append_value(&self.bytes);
            }
            Builder::LargeBinary(b) => {
                parse_bytea(v, &mut self.bytes)?;
                b.append_value(&self.bytes);
            }
            Builder::Date32(b) => b.append_value(parse_date(v)?),
            Builder::Ticks(b, TickKind::Timestamp { with_tz }, unit) => {
                b.append_value(parse_timestamp(v, *unit, *with_tz)?)
            }
            Builder::Ticks(b, TickKind::Time, unit) => b.append_value(parse_time(v, *unit)?),
            Builder::Interval(b) => b.append_value(parse_interval(v)?),
        }
        Ok(())
    }

    /// Takes the values appended so far as an array of the column's type;
    /// `first_line` is the input line of the batch's first row (for errors
    /// found only now, such as invalid UTF-8 in a text column).
    pub fn finish(&mut self, first_line: u64) -> Result<ArrayRef, CopyError> {
        let cap = self.capacity;
        let array: ArrayRef = match &mut self.builder {
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Int8(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal128(b, _, _) => Arc::new(b.finish()),
            Builder::Decimal256(b, _, _) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish(cap).map_err(|e| e.at(first_line, &self.name))?),
            Builder::LargeUtf8(b) => {
                Arc::new(b.finish(cap).map_err(|e| e.at(first_line, &self.name))?)
            }
            Builder::Utf8View(b, _) => Arc::new(b.finish()),
            Builder::Binary(b) => {
                let a = b.finish();
                *b = BinaryBuilder::with_capacity(cap, a.values().len());
                Arc::new(a)
            }
            Builder::LargeBinary(b) => {
                let a = b.finish();
                *b = LargeBinaryBuilder::with_capacity(cap, a.values().len());
                Arc::new(a)
            }
            Builder::Date32(b) => Arc::new(b.finish()),
            Builder::Ticks(b, _, _) => {
                let data = b
                    .finish()
                    .into_data()
                    .into_builder()
                    .data_type(self.data_type.clone())
                    .build()?;
                make_array(data)
            }
            Builder::Interval(b) => Arc::new(b.finish()),
        };
        // Arrow builders forget their capacity on finish; start the next
        // batch at full size instead of regrowing by doubling.
        if !matches!(
            self.builder,
            Builder::Utf8(_) | Builder::LargeUtf8(_) | Builder::Binary(_) | Builder::LargeBinary(_)
        ) {
            let field = Field::new(&self.name, self.data_type.clone(), self.nullable);
            self.builder = make_builder(&field, self.json, cap, 0)?;
        }
        Ok(array)
    }
}

/// A string column: values and offsets appended as raw bytes, with UTF-8
/// validated once per batch over the whole buffer (much cheaper than per
/// field); a failure is traced back to its row.
struct StrCol<O: OffsetSizeTrait> {
    offsets: Vec<O>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
    json: bool,
}

/// An error in row `row` of a batch, found when the batch was finished.
struct RowValueError {
    row: usize,
    value: Vec<u8>,
    error: ValueError,
}

impl RowValueError {
    fn at(self, first_line: u64, column: &str) -> CopyError {
        DataError {
            kind: self.error.kind,
            message: self.error.message,
            detail: self.error.detail,
            line: first_line + self.row as u64,
            column: Some(column.to_string()),
            value: Some(String::from_utf8_lossy(&self.value).into_owned()),
            line_text: None,
        }
        .into()
    }
}

impl<O: OffsetSizeTrait> StrCol<O> {
    fn new(cap: usize, bytes: usize, json: bool) -> Self {
        let mut offsets = Vec::with_capacity(cap + 1);
        offsets.push(O::usize_as(0));
        Self {
            offsets,
            values: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(cap),
            json,
        }
    }

    #[inline]
    fn append(&mut self, v: &[u8]) -> Result<(), ValueError> {
        if self.json {
            validate_json(v)?;
        }
        self.values.extend_from_slice(v);
        let end = O::from_usize(self.values.len()).ok_or_else(|| {
            ValueError::new(
                DataErrorKind::ProgramLimitExceeded,
                "string data of one batch exceeds the offset range".to_string(),
            )
        })?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn append_null(&mut self) {
        let last = self.offsets.last().copied().unwrap_or(O::usize_as(0));
        self.offsets.push(last);
        self.nulls.append_null();
    }

    fn finish(&mut self, cap: usize) -> Result<GenericStringArray<O>, RowValueError> {
        let hint = self.values.len() + self.values.len() / 8;
        let fresh = Self::new(cap, hint, self.json);
        let Self {
            offsets,
            values,
            mut nulls,
            ..
        } = std::mem::replace(self, fresh);
        let values = Buffer::from_vec(values);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        if memchr::memchr(0, &values).is_some() {
            return Err(find_bad_row(&offsets, &values));
        }
        GenericStringArray::try_new(offsets.clone(), values.clone(), nulls.finish())
            .map_err(|_| find_bad_row(&offsets, &values))
    }
}

/// The first row whose bytes are not valid UTF-8 text (or contain NUL).
fn find_bad_row<O: OffsetSizeTrait>(offsets: &OffsetBuffer<O>, values: &[u8]) -> RowValueError {
    for (row, w) in offsets.windows(2).enumerate() {
        let v = &values[w[0].as_usize()..w[1].as_usize()];
        if let Err(error) = text(v) {
            return RowValueError {
                row,
                value: v.to_vec(),
                error,
            };
        }
    }
    RowValueError {
        row: 0,
        value: Vec::new(),
        error: ValueError::new(
            DataErrorKind::CharacterNotInRepertoire,
            "invalid byte sequence for encoding \"UTF8\"".to_string(),
        ),
    }
}

/// Validates UTF-8 (and JSON when asked) for a text column.
#[inline]
fn text_json(v: &[u8], json: bool) -> Result<&str, ValueError> {
    let s = text(v)?;
    if json {
        validate_json(v)?;
    }
    Ok(s)
}

/// Validates UTF-8 without NUL bytes, as PostgreSQL text requires.
fn text(v: &[u8]) -> Result<&str, ValueError> {
    let s = std::str::from_utf8(v).map_err(|e| invalid_utf8(v, &e))?;
    if memchr::memchr(0, v).is_some() {
        return Err(ValueError::new(
            DataErrorKind::CharacterNotInRepertoire,
            "invalid byte sequence for encoding \"UTF8\": 0x00".to_string(),
        ));
    }
    Ok(s)
}

/// `invalid byte sequence for encoding "UTF8": 0xff 0x41`.
pub(crate) fn invalid_utf8(v: &[u8], e: &std::str::Utf8Error) -> ValueError {
    let at = e.valid_up_to();
    let len = e.error_len().unwrap_or(v.len() - at).clamp(1, 4);
    let bytes: Vec<String> = v[at..(at + len).min(v.len())]
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect();
    ValueError::new(
        DataErrorKind::CharacterNotInRepertoire,
        format!(
            "invalid byte sequence for encoding \"UTF8\": {}",
            bytes.join(" ")
        ),
    )
}
