//! Arrow record batches to PostgreSQL `DataRow`s.
//!
//! Values go through `arrow-pg`'s per-type encoder, with two corrections:
//! a NULL of any type is sent as NULL here (arrow-pg 0.16 sends a NULL
//! interval as `0`), and `character(n)` columns are blank-padded first
//! ([`crate::sql::chars::pad_output`]).

use std::sync::Arc;

use arrow_pg::encoder::{encode_value, Encoder};
use datafusion::arrow::array::{Array, RecordBatch};
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use super::handler::pg_error;
use crate::sql::chars::pad_output;
use crate::sql::SqlError;

/// The rows of one batch, encoded lazily.
pub type Rows = Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>;

/// Encodes `batch` as rows described by `fields` (one per column).
pub fn encode_rows(fields: Arc<Vec<FieldInfo>>, batch: RecordBatch) -> Rows {
    let batch = match pad_output(batch) {
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
    Box::new((0..batch.num_rows()).map(move |row| {
        for (col, arr) in batch.columns().iter().enumerate() {
            let pg_field = &fields[col];
            if arr.is_null(row) {
                Encoder::encode_field(&mut enc, &None::<i8>, pg_field)?;
            } else {
                encode_value(&mut enc, arr, row, schema.field(col), pg_field)?;
            }
        }
        Ok(Encoder::take_row(&mut enc))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{IntervalMonthDayNanoArray, StringArray};
    use datafusion::arrow::datatypes::{Field, IntervalMonthDayNano, Schema};
    use pgwire::api::results::FieldFormat;
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
        let rows: Vec<DataRow> = encode_rows(fields, batch).map(|r| r.unwrap()).collect();
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
