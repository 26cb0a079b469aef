//! PostgreSQL `COPY ... FROM STDIN` / `COPY ... TO STDOUT` codec for the
//! TEXT and CSV formats, between raw bytes and Arrow [`RecordBatch`]es.
//!
//! The frontend parses the statement's option list with
//! [`CopyOptions::parse`], feeds `CopyData` payloads to a [`CopyDecoder`]
//! (which parses straight into Arrow builders and emits full batches), and
//! for `COPY TO` renders batches with [`encode_header`] / [`encode_batch`].
//! Errors carry a SQLSTATE, the line, column and value, and a
//! PostgreSQL-style `CONTEXT` ([`DataError::context`]).
//!
//! Flow of the decode side: `decoder` (chunks -> records) -> `text` / `csv`
//! (record -> fields) -> `columns` (field -> builder) using the value
//! parsers in `numeric`, `decimal`, `datetime`, `interval` and `bytes`. The encode side
//! is `encode`, using the formatters of the same value modules.
//!
//! Type mapping: `bool` Boolean; `smallint`/`integer`/`bigint` Int16/32/64;
//! `real`/`double precision` Float32/64; `numeric(p,s)` Decimal128(p,s), or Decimal256(p,s) above 38 digits
//! (unconstrained `numeric` is Decimal256(76,16), see [`UNCONSTRAINED_PRECISION`]);
//! `text`/`varchar` Utf8, LargeUtf8 or Utf8View; `json` a string type whose
//! field has `ARROW:extension:name = arrow.json` ([`is_json_field`]);
//! `bytea` Binary/LargeBinary; `date` Date32; `timestamp` Timestamp(unit,
//! None); `timestamptz` Timestamp(unit, Some(tz)) (input without an offset
//! and all output are UTC); `time` Time64; `interval` Interval(MonthDayNano).
//! `infinity`/`-infinity` dates and timestamps map to the type's max/min.
//!
//! [`RecordBatch`]: arrow_array::RecordBatch

mod bytes;
mod columns;
mod csv;
mod datetime;
mod decimal;
mod decoder;
mod encode;
mod error;
mod interval;
mod numeric;
mod options;
mod record;
mod split;
mod text;

pub use bytes::parse_bytea;
pub use columns::{is_json_field, is_supported_type, EXTENSION_NAME_KEY, JSON_EXTENSION_NAME};
pub use datetime::{format_time, format_timestamp_at, parse_timestamp};
pub use decimal::{
    format_decimal, format_decimal256, parse_decimal, parse_decimal256, trims_zeros,
    UNCONSTRAINED_PRECISION, UNCONSTRAINED_SCALE,
};
pub use decoder::CopyDecoder;
pub use encode::{encode_batch, encode_header};
pub use error::{sqlstate, CopyError, DataError, DataErrorKind, ValueError};
pub use interval::parse_interval;
pub use numeric::{format_f32, format_f64};
pub use options::{CopyFormat, CopyOptions, ForceQuote};
pub use split::RecordSplitter;

#[cfg(test)]
mod tests;
