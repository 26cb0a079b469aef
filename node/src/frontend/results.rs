//! Turning statement outcomes into pgwire responses: row streams (Arrow to
//! PostgreSQL text/binary through `arrow-pg`), command tags, `SHOW` rows and
//! `COPY ... TO STDOUT` data.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyResponse, DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::types::format::FormatOptions;
use quiver_copy::{encode_batch, encode_header, CopyOptions};

use crate::sql::{Outcome, SqlError};

/// The one text column of a `SHOW` result.
pub fn show_fields(name: &str, format: &Format) -> Vec<FieldInfo> {
    vec![FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        format.format_for(0),
    )]
}

/// Converts a statement outcome into the response pgwire sends.
pub async fn outcome_to_response<C: ClientInfo>(
    out: Outcome,
    client: &C,
    format: &Format,
) -> Result<Response, SqlError> {
    match out {
        Outcome::Rows(df) => {
            let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            arrow_pg::datatypes::df::encode_dataframe(df, format, Some(opts))
                .await
                .map(Response::Query)
                .map_err(|e| SqlError::new("XX000", e.to_string()))
        }
        Outcome::Command(tag) => Ok(Response::Execution(Tag::new(&tag))),
        Outcome::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
        Outcome::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
        Outcome::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        Outcome::Show { name, value } => {
            let fields = Arc::new(show_fields(&name, format));
            let mut enc = DataRowEncoder::new(fields.clone());
            enc.encode_field(&Some(value))
                .map_err(|e| SqlError::new("XX000", e.to_string()))?;
            let row = enc.take_row();
            Ok(Response::Query(QueryResponse::new(
                fields,
                futures::stream::iter(vec![Ok(row)]),
            )))
        }
        Outcome::CopyOut { df, options } => {
            let opts = CopyOptions::parse(&options)
                .map_err(|e| SqlError::new(e.sqlstate(), e.to_string()))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let ncols = schema.fields().len();
            let stream = df.execute_stream().await?;
            let mut header = Vec::new();
            if opts.header {
                encode_header(&schema, &opts, &mut header);
            }
            let head = futures::stream::iter(if header.is_empty() {
                vec![]
            } else {
                vec![Ok(CopyData::new(Bytes::from(header)))]
            });
            let body = stream.map(move |b| encode(b, &opts));
            Ok(Response::CopyOut(CopyResponse::new(
                0,
                ncols,
                head.chain(body),
            )))
        }
        Outcome::CopyIn(_) => Err(SqlError::new("XX000", "COPY IN handled elsewhere")),
    }
}

fn encode(b: datafusion::error::Result<RecordBatch>, opts: &CopyOptions) -> PgWireResult<CopyData> {
    let b = b.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut out = Vec::with_capacity(b.num_rows() * 64);
    encode_batch(&b, opts, &mut out).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(CopyData::new(Bytes::from(out)))
}
