//! Crate-level tests: round trips through encode and decode for every
//! type, chunk boundaries at every offset, error paths with their SQLSTATE,
//! and CSV/text edge cases.

mod chunks;
mod edge;
mod errors;
mod roundtrip;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::{encode_batch, CopyDecoder, CopyError, CopyOptions};

/// Builds a schema from `(name, type, nullable)`.
pub(super) fn schema(cols: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ))
}

/// A nullable `json` field.
pub(super) fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(
        crate::EXTENSION_NAME_KEY.to_string(),
        crate::JSON_EXTENSION_NAME.to_string(),
    )]))
}

/// Decodes `input` fed in chunks of `chunk` bytes; all batches in order.
pub(super) fn decode_chunked(
    schema: &SchemaRef,
    opts: &CopyOptions,
    input: &[u8],
    chunk: usize,
    batch_size: usize,
) -> Result<Vec<RecordBatch>, CopyError> {
    let mut d = CopyDecoder::new(schema.clone(), opts.clone(), batch_size)?;
    let mut out = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        out.extend(d.push(c)?);
    }
    out.extend(d.finish()?);
    Ok(out)
}

/// Decodes in one piece.
pub(super) fn decode(
    schema: &SchemaRef,
    opts: &CopyOptions,
    input: &[u8],
) -> Result<Vec<RecordBatch>, CopyError> {
    decode_chunked(schema, opts, input, input.len().max(1), 1024)
}

/// Renders batches back in `opts` format (no header).
pub(super) fn render(batches: &[RecordBatch], opts: &CopyOptions) -> String {
    let mut out = Vec::new();
    for b in batches {
        encode_batch(b, opts, &mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

/// Decodes then renders in text format: a readable normal form.
pub(super) fn normalize(schema: &SchemaRef, opts: &CopyOptions, input: &str) -> String {
    let batches = decode(schema, opts, input.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    render(&batches, &CopyOptions::text())
}

/// The error of decoding `input`.
pub(super) fn decode_err(schema: &SchemaRef, opts: &CopyOptions, input: &str) -> CopyError {
    match decode(schema, opts, input.as_bytes()) {
        Err(e) => e,
        Ok(b) => panic!(
            "expected an error, got {}",
            render(&b, &CopyOptions::text())
        ),
    }
}
