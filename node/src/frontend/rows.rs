//! Arrow record batches to PostgreSQL `DataRow`s.
//!
//! Values go through `arrow-pg`'s per-type encoder, with corrections:
//! a NULL of any type is sent as NULL here (arrow-pg 0.16 sends a NULL
//! interval as `0`), `numeric` values are written by [`numeric_text`]
//! (wider than arrow-pg's 28 digits), text floats by [`float_text`]
//! (`-0`), `character(n)` columns are blank-padded first
//! ([`crate::sql::chars::pad_output`]), and `timestamp with time zone`
//! values are shown in the session's `TimeZone`, as PostgreSQL does.

use std::sync::Arc;

use arrow_pg::encoder::{encode_value, Encoder};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use super::handler::pg_error;
use super::numeric::{float_text, numeric_text, PgText};
use crate::sql::chars::pad_output;
use crate::sql::pg_text::timestamp_text;
use crate::sql::SqlError;

/// The rows of one batch, encoded lazily.
pub type Rows = Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>;

/// Text-format timestamp columns as PostgreSQL's text (`2024-06-01
/// 21:00:00+09`, fraction only when there is one); timestamptz values in
/// `time_zone` (else the column's zone). Binary timestamptz is an instant,
/// the same in every zone, so binary columns are left alone.
fn timestamps_as_text(
    batch: RecordBatch,
    fields: &[FieldInfo],
    time_zone: Option<&str>,
) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let is_text_ts = |i: usize, f: &Field| {
        matches!(f.data_type(), DataType::Timestamp(..))
            && fields
                .get(i)
                .is_some_and(|p| p.format() == FieldFormat::Text)
    };
    if !schema
        .fields()
        .iter()
        .enumerate()
        .any(|(i, f)| is_text_ts(i, f))
    {
        return Ok(batch);
    }
    let mut out_fields = Vec::with_capacity(schema.fields().len());
    let mut cols = Vec::with_capacity(out_fields.capacity());
    for (i, (f, c)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        if !is_text_ts(i, f) {
            out_fields.push(f.as_ref().clone());
            cols.push(c.clone());
            continue;
        }
        let text = timestamp_text(c, time_zone)?;
        out_fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
        cols.push(Arc::new(text));
    }
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), cols)
}

/// The signed type PostgreSQL would send for an unsigned Arrow integer
/// (window functions such as `row_number()` return `UInt64`; PostgreSQL's
/// is `bigint`).
pub fn signed_for(t: &DataType) -> Option<DataType> {
    match t {
        DataType::UInt8 => Some(DataType::Int16),
        DataType::UInt16 => Some(DataType::Int32),
        DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
        _ => None,
    }
}

/// Unsigned integer columns as [`signed_for`] types; a value that does not
/// fit is an error (22003), never wrapped.
fn signed_integers(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| signed_for(f.data_type()).is_some())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut cols = Vec::with_capacity(fields.capacity());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match signed_for(f.data_type()) {
            Some(t) => {
                let opts = datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                cols.push(datafusion::arrow::compute::cast_with_options(c, &t, &opts)?);
                fields.push(f.as_ref().clone().with_data_type(t));
            }
            None => {
                cols.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// Encodes `batch` as rows described by `fields` (one per column), with
/// timestamptz values in `time_zone`.
pub fn encode_rows(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
    time_zone: Option<Arc<str>>,
) -> Rows {
    let batch = pad_output(batch)
        .and_then(signed_integers)
        .and_then(|b| timestamps_as_text(b, &fields, time_zone.as_deref()));
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            return Box::new(std::iter::once(Err(pg_error(SqlError::new(
                "XX000",
                e.to_string(),
            )))))
        }
    };
    let mut enc = DataRowEncoder::new(fields.clone());
    let schema = batch.schema();
    // How each column is written, chosen once for the batch.
    let writers: Vec<Writer> = schema
        .fields()
        .iter()
        .zip(fields.iter())
        .map(|(f, p)| Writer::for_column(f.data_type(), p.format()))
        .collect();
    let mut text = Vec::with_capacity(64);
    Box::new((0..batch.num_rows()).map(move |row| {
        for (col, arr) in batch.columns().iter().enumerate() {
            let pg_field = &fields[col];
            if arr.is_null(row) {
                Encoder::encode_field(&mut enc, &None::<i8>, pg_field)?;
                continue;
            }
            text.clear();
            let ours = match writers[col] {
                Writer::Numeric => numeric_text(arr.as_ref(), row, &mut text),
                Writer::FloatText => float_text(arr.as_ref(), row, &mut text),
                Writer::TimeText => time_text(arr.as_ref(), row, &mut text),
                Writer::ArrowPg => false,
            };
            if ours {
                Encoder::encode_field(&mut enc, &PgText(&text), pg_field)?;
            } else {
                encode_value(&mut enc, arr, row, schema.field(col), pg_field)?;
            }
        }
        Ok(Encoder::take_row(&mut enc))
    }))
}

/// A `time` value as PostgreSQL writes it (`12:34:56`, `12:34:56.5`).
fn time_text(arr: &dyn Array, row: usize, out: &mut Vec<u8>) -> bool {
    use datafusion::arrow::datatypes::{Time64MicrosecondType, Time64NanosecondType, TimeUnit};
    let DataType::Time64(unit) = arr.data_type() else {
        return false;
    };
    let v = match unit {
        TimeUnit::Nanosecond => arr.as_primitive::<Time64NanosecondType>().value(row),
        _ => arr.as_primitive::<Time64MicrosecondType>().value(row),
    };
    quiver_copy::format_time(v, *unit, out);
    true
}

/// Who writes a column's values.
#[derive(Clone, Copy)]
enum Writer {
    /// [`numeric_text`], both formats (wider than arrow-pg's 28 digits).
    Numeric,
    /// [`float_text`], for text-format floats (`-0`).
    FloatText,
    /// [`time_text`], for text-format `time` (fraction only when there is one).
    TimeText,
    /// arrow-pg's encoder.
    ArrowPg,
}

impl Writer {
    fn for_column(data_type: &DataType, format: FieldFormat) -> Writer {
        match data_type {
            DataType::Decimal128(..) | DataType::Decimal256(..) => Writer::Numeric,
            DataType::Float32 | DataType::Float64 if format == FieldFormat::Text => {
                Writer::FloatText
            }
            DataType::Time64(_) if format == FieldFormat::Text => Writer::TimeText,
            _ => Writer::ArrowPg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{IntervalMonthDayNanoArray, StringArray};
    use datafusion::arrow::datatypes::IntervalMonthDayNano;
    use pgwire::api::Type;

    #[test]
    fn null_interval_is_null_and_values_are_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "iv",
                datafusion::arrow::datatypes::DataType::Interval(
                    datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
                ),
                true,
            ),
            Field::new("s", datafusion::arrow::datatypes::DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(IntervalMonthDayNanoArray::from(vec![
                    None,
                    Some(IntervalMonthDayNano::new(0, 1, 0)),
                ])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let fields = Arc::new(vec![
            FieldInfo::new("iv".into(), None, None, Type::INTERVAL, FieldFormat::Text),
            FieldInfo::new("s".into(), None, None, Type::TEXT, FieldFormat::Text),
        ]);
        let rows: Vec<DataRow> = encode_rows(fields, batch, None)
            .map(|r| r.unwrap())
            .collect();
        let values = |r: &DataRow| {
            let mut out = Vec::new();
            let mut d = &r.data[..];
            for _ in 0..r.field_count {
                let n = i32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                d = &d[4..];
                if n < 0 {
                    out.push(None);
                } else {
                    out.push(Some(String::from_utf8(d[..n as usize].to_vec()).unwrap()));
                    d = &d[n as usize..];
                }
            }
            out
        };
        assert_eq!(values(&rows[0]), vec![None, Some("a".to_string())]);
        assert_eq!(values(&rows[1]), vec![Some("1 day".to_string()), None]);
    }
}
