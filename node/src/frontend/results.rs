//! Turning statement outcomes into pgwire responses: row streams (Arrow to
//! PostgreSQL text/binary through `arrow-pg`), command tags, `SHOW` rows and
//! `COPY ... TO STDOUT` data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use pgwire::messages::data::DataRow;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::{ClientInfo, ConnectionHandle, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use quiver_copy::{encode_batch, encode_header, CopyOptions};

use super::handler::pg_error;
use super::rows::encode_rows;
use crate::sql::chars::pad_output;
use crate::sql::{Outcome, SqlError};
use crate::storage::table::PG_TYPE_KEY;

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

/// Wraps a result stream so a CancelRequest for this connection stops it
/// with SQLSTATE 57014 (the query runs while rows stream, after pgwire's own
/// cancel window has closed).
/// Runs `stream` to its first batch: a read whose plan a shard move made
/// stale fails there, before any row reaches the client, so the caller can
/// plan it again ([`crate::dist::read_point::is_stale_plan`]).
async fn first_checked(
    mut stream: datafusion::execution::SendableRecordBatchStream,
) -> Result<datafusion::execution::SendableRecordBatchStream, SqlError> {
    let schema = stream.schema();
    let first = match stream.next().await {
        Some(Err(e)) => {
            let e = SqlError::from(e);
            if crate::dist::read_point::is_stale_plan(&e) {
                return Err(e);
            }
            Some(Err(datafusion::error::DataFusionError::External(Box::new(
                e,
            ))))
        }
        other => other,
    };
    Ok(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(first).chain(stream),
        ),
    ))
}

fn cancellable(
    stream: datafusion::execution::SendableRecordBatchStream,
    handle: Option<Arc<ConnectionHandle>>,
    failed: Arc<AtomicBool>,
) -> impl futures::Stream<Item = Result<RecordBatch, SqlError>> + Send {
    struct State {
        stream: datafusion::execution::SendableRecordBatchStream,
        handle: Option<Arc<ConnectionHandle>>,
        cancel: Option<futures::channel::oneshot::Receiver<()>>,
        done: bool,
    }
    let state = State {
        stream,
        handle,
        cancel: None,
        done: false,
    };
    futures::stream::unfold(state, move |mut st| {
        let failed = failed.clone();
        async move {
            if st.done {
                return None;
            }
            if st.cancel.is_none() {
                if let Some(h) = &st.handle {
                    st.cancel = Some(h.start_query().await);
                }
            }
            let next = match st.cancel.as_mut() {
                Some(rx) => tokio::select! {
                    r = rx => match r {
                        Ok(()) => {
                            failed.store(true, Ordering::SeqCst);
                            st.done = true;
                            return Some((
                                Err(SqlError::new("57014", "canceling statement due to user request")),
                                st,
                            ));
                        }
                        // The sender went away: no cancel can come any more.
                        Err(_) => {
                            st.handle = None;
                            st.cancel = None;
                            st.stream.next().await
                        }
                    },
                    n = st.stream.next() => n,
                },
                None => st.stream.next().await,
            };
            match next {
                None => None,
                Some(Ok(b)) => Some((Ok(b), st)),
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(SqlError::from(e)), st))
                }
            }
        }
    })
}

/// Row description for a result, with PostgreSQL's column names when known.
pub fn result_fields(
    schema: &datafusion::arrow::datatypes::Schema,
    names: Option<&[String]>,
    format: &Format,
    opts: Arc<FormatOptions>,
) -> Result<Vec<FieldInfo>, SqlError> {
    // arrow-pg has no `Decimal256`: describe it as the `numeric` it is.
    // Unsigned integers (`row_number()`, `rank()`) are sent as the signed
    // type PostgreSQL would use (see `rows::signed_integers`).
    let described;
    let for_types = if schema.fields().iter().any(|f| {
        matches!(f.data_type(), DataType::Decimal256(..))
            || crate::frontend::rows::signed_for(f.data_type()).is_some()
    }) {
        described = Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Decimal256(_, s) => f
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::Decimal128(38, (*s).min(38))),
                    t => match crate::frontend::rows::signed_for(t) {
                        Some(signed) => f.as_ref().clone().with_data_type(signed),
                        None => f.as_ref().clone(),
                    },
                })
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        );
        &described
    } else {
        schema
    };
    let fields = arrow_schema_to_pg_fields(for_types, format, Some(opts.clone()))
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
    let n = fields.len();
    let names: Vec<String> = match names {
        Some(names) if names.len() == n => names.to_vec(),
        _ => fields.iter().map(|f| f.name().to_string()).collect(),
    };
    Ok(fields
        .into_iter()
        .zip(names)
        .zip(schema.fields())
        .map(|((f, name), af)| {
            FieldInfo::new(
                name,
                f.table_id(),
                f.column_id(),
                pg_type(af, &f),
                f.format(),
            )
            .with_format_options(opts.clone())
        })
        .collect())
}

/// The PostgreSQL type of a result column: varchar, char and json columns
/// are tagged in their Arrow field's metadata. (A json value's binary form
/// is its text, so the string encoder writes it as is.)
fn pg_type(af: &datafusion::arrow::datatypes::Field, f: &FieldInfo) -> Type {
    // A cast to char(n) or varchar(n), in a plan schema computed before
    // Quiver's analyzer rewrote the cast (`sql::pg_text`).
    match af
        .metadata()
        .get(crate::sql::type_planner::CAST_LENGTH_KEY)
        .and_then(|tag| tag.chars().next())
    {
        Some('c') => return Type::BPCHAR,
        Some('v') => return Type::VARCHAR,
        _ => {}
    }
    match af.metadata().get(PG_TYPE_KEY).map(|s| s.as_str()) {
        Some("varchar") => Type::VARCHAR,
        Some("bpchar") => Type::BPCHAR,
        Some("json") => Type::JSON,
        // A regtype's binary form is its oid: binary results stay text.
        Some("regtype") if f.format() == FieldFormat::Text => Type::REGTYPE,
        _ => f.datatype().clone(),
    }
}

/// Converts a statement outcome into the response pgwire sends.
///
/// `failed` is set when a row stream fails after the response has started,
/// so the session can abort its transaction block.
pub async fn outcome_to_response<C: ClientInfo>(
    out: Outcome,
    client: &C,
    format: &Format,
    failed: Arc<AtomicBool>,
    time_zone: Option<Arc<str>>,
) -> Result<Response, SqlError> {
    match out {
        Outcome::Rows { df, names } => {
            let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let fields = Arc::new(result_fields(
                df.schema().as_arrow(),
                names.as_deref(),
                format,
                opts,
            )?);
            let stream = first_checked(df.execute_stream().await?).await?;
            let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
            let stream = cancellable(stream, handle.map(|h| (*h).clone()), failed.clone());
            let f2 = fields.clone();
            let rows = stream
                .map(move |rb| {
                    let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> =
                        match rb {
                            Ok(rb) => encode_rows(f2.clone(), rb, time_zone.clone()),
                            Err(e) => {
                                failed.store(true, Ordering::SeqCst);
                                Box::new(std::iter::once(Err(pg_error(e))))
                            }
                        };
                    futures::stream::iter(rows)
                })
                .flatten();
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
        Outcome::Batches { schema, batches } => {
            let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let fields = Arc::new(result_fields(&schema, None, format, opts)?);
            let mut rows = Vec::new();
            for b in batches {
                rows.extend(encode_rows(fields.clone(), b, time_zone.clone()));
            }
            Ok(Response::Query(QueryResponse::new(
                fields,
                futures::stream::iter(rows),
            )))
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
        Outcome::CopyOut { .. } => Err(SqlError::new("XX000", "COPY TO handled by copy_out")),
        Outcome::CopyIn(_) => Err(SqlError::new("XX000", "COPY IN handled elsewhere")),
    }
}

/// `COPY ... TO STDOUT`, ready to send: the rows as CopyData messages,
/// and whether the first message is a header line.
pub struct CopyOut {
    pub response: CopyResponse,
    pub header: bool,
}

/// Starts a `COPY ... TO STDOUT` outcome's row stream.
pub async fn copy_out(
    df: datafusion::dataframe::DataFrame,
    options: &[(String, Option<String>)],
) -> Result<CopyOut, SqlError> {
    let opts =
        CopyOptions::parse(options).map_err(|e| SqlError::new(e.sqlstate(), e.to_string()))?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let ncols = schema.fields().len();
    let stream = df.execute_stream().await?;
    let mut header = Vec::new();
    if opts.header {
        encode_header(&schema, &opts, &mut header);
    }
    let has_header = !header.is_empty();
    let head = futures::stream::iter(if has_header {
        vec![Ok(CopyData::new(Bytes::from(header)))]
    } else {
        vec![]
    });
    let body = stream
        .map(move |b| futures::stream::iter(encode(b, &opts)))
        .flatten();
    Ok(CopyOut {
        response: CopyResponse::new(0, ncols, head.chain(body)),
        header: has_header,
    })
}

/// Sends a `COPY ... TO STDOUT` answer: CopyOutResponse, one CopyData per
/// row, CopyDone; returns the `COPY n` tag, where `n` counts rows only, not
/// the header line (pgwire's own sender counts every message).
pub async fn send_copy_out<C>(client: &mut C, out: CopyOut) -> PgWireResult<Tag>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let formats = out.response.column_formats();
    let (format, columns) = (out.response.format, out.response.columns);
    let mut data_stream = out.response.data_stream;
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            format,
            columns as i16,
            formats,
        )))
        .await?;
    let mut messages = 0usize;
    while let Some(data) = data_stream.next().await {
        let data = data?;
        if data.data.is_empty() {
            continue;
        }
        messages += 1;
        client.feed(PgWireBackendMessage::CopyData(data)).await?;
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    let rows = messages - usize::from(out.header && messages > 0);
    Ok(Tag::new("COPY").with_rows(rows))
}

/// One batch of `COPY TO STDOUT` output: one CopyData message per row, as
/// the protocol says and as drivers that read COPY row by row (psycopg's
/// `rows()`, JDBC's `readFromCopy`) expect. The rows share one buffer.
fn encode(
    b: datafusion::error::Result<RecordBatch>,
    opts: &CopyOptions,
) -> Vec<PgWireResult<CopyData>> {
    let encoded = b
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
        .and_then(|b| pad_output(b).map_err(|e| PgWireError::ApiError(Box::new(e))))
        .and_then(|b| {
            let mut out = Vec::with_capacity(b.num_rows() * 64);
            let ends =
                encode_batch(&b, opts, &mut out).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            Ok((Bytes::from(out), ends))
        });
    match encoded {
        Ok((buf, ends)) => {
            let mut start = 0;
            ends.into_iter()
                .map(|end| {
                    let row = buf.slice(start..end);
                    start = end;
                    Ok(CopyData::new(row))
                })
                .collect()
        }
        Err(e) => vec![Err(e)],
    }
}
