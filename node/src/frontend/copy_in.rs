//! `COPY ... FROM STDIN` on one connection: the data is cut into chunks of
//! whole records and decoded on blocking threads, several chunks at once,
//! while the connection keeps reading; decoded chunks join the transaction
//! in input order.
//!
//! At most [`max_in_flight`] chunks are decoded at a time, so memory stays
//! bounded (about that many times [`CHUNK_BYTES`] of raw input) and a slow
//! decoder pushes back on the client through the socket.
//!
//! A full chunk of a COPY into a local table with every column is also
//! encoded for the WAL on its decoder thread and logged ahead of the commit
//! (a staged record): the COPY's WAL is written while the data still
//! arrives, and the commit only adds a short record and an fsync.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::{Sink, SinkExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::PgWireBackendMessage;
use quiver_copy::{CopyDecoder, CopyError, CopyOptions, RecordSplitter};
use tokio::task::JoinHandle;

use super::handler::{pg_error, Conn, Handler};
use crate::server::metrics::QueryKind;
use crate::sql::copy::stage_form;
use crate::sql::{CopyIn, SqlError};
use crate::storage::codec::ipc_stream;
use crate::storage::table::TableMeta;

/// Rows per batch decoded from COPY data.
const COPY_BATCH_ROWS: usize = 8192;
/// Raw bytes per chunk handed to a decoder thread.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Chunks at least this large are logged ahead of the commit; smaller
/// COPYs log their rows in the commit record.
const STAGE_MIN_BYTES: usize = CHUNK_BYTES / 2;

/// Chunks decoded at the same time: one per core, and at least two so that
/// reading the socket and decoding overlap.
pub fn max_in_flight() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// What decoding one chunk produced.
struct Decoded {
    batches: Vec<RecordBatch>,
    /// Input lines (records) in the chunk, counting a header.
    lines: u64,
    /// The chunk held the `\.` end marker: ignore what follows.
    ended: bool,
    /// The batches in the table's form and their encoding for a staged WAL
    /// record (then `batches` is empty).
    staged: Option<(Vec<RecordBatch>, Vec<u8>)>,
}

/// A COPY FROM STDIN in progress.
pub struct CopyState {
    copy: CopyIn,
    opts: CopyOptions,
    splitter: RecordSplitter,
    in_flight: VecDeque<JoinHandle<Result<Decoded, CopyError>>>,
    chunks: u64,
    /// Lines of the chunks already applied (for error line numbers).
    lines: u64,
    ended: bool,
    started: Instant,
    rows: u64,
    /// Chunks are logged ahead of the commit.
    staging: bool,
}

impl CopyState {
    fn spawn(&mut self, data: Vec<u8>) {
        let schema: SchemaRef = self.copy.schema.clone();
        let opts = self.opts.for_chunk(self.chunks == 0);
        let table = self.copy.table.name.clone();
        // Once one chunk is staged, the rest (the short last one too) are,
        // so the staged rows stay the leading ones for a later COPY.
        self.staging |= self.copy.stageable && data.len() >= STAGE_MIN_BYTES;
        let stage = self.staging.then(|| self.copy.table.clone());
        self.chunks += 1;
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || {
                decode_chunk(schema, opts, table, &data, stage.as_deref())
            }));
    }
}

fn decode_chunk(
    schema: SchemaRef,
    opts: CopyOptions,
    table: String,
    data: &[u8],
    stage: Option<&TableMeta>,
) -> Result<Decoded, CopyError> {
    let mut d = CopyDecoder::new(schema, opts, COPY_BATCH_ROWS)?.with_table_name(table);
    let mut batches = d.push(data)?;
    let ended = d.saw_end_marker();
    let lines = d.lines();
    batches.extend(d.finish()?);
    // Anything that fails here (a NULL in a NOT NULL column) is reported
    // when the rows join the transaction: then they are simply not staged.
    let staged = stage.filter(|_| !batches.is_empty()).and_then(|meta| {
        let rows = batches
            .iter()
            .map(|b| stage_form(meta, b.clone()))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let ipc = ipc_stream(&rows).ok()?;
        Some((rows, ipc))
    });
    let batches = if staged.is_some() {
        Vec::new()
    } else {
        batches
    };
    Ok(Decoded {
        batches,
        lines,
        ended,
        staged,
    })
}

fn copy_error(e: CopyError, table: &str) -> SqlError {
    let mut err = SqlError::new(e.sqlstate(), e.to_string());
    if let Some(d) = e.data() {
        err = err.with_context(d.context(table));
        if let Some(detail) = &d.detail {
            err = err.with_detail(detail.clone());
        }
    } else if let Some(d) = e.detail() {
        err = err.with_detail(d.to_string());
    }
    err
}

impl Conn {
    /// Starts a COPY FROM STDIN after the statement was accepted.
    pub(super) fn start_copy(&self, copy: CopyIn) -> Result<CopyResponse, SqlError> {
        let opts = CopyOptions::parse(&copy.options)
            .map_err(|e| SqlError::new(e.sqlstate(), e.to_string()))?;
        // Reject unsupported column types now, not at the first data.
        CopyDecoder::new(copy.schema.clone(), opts.clone(), 1)
            .map_err(|e| SqlError::new(e.sqlstate(), e.to_string()))?;
        let ncols = copy.columns.len();
        let mut slot = self.copy.try_lock().map_err(|_| {
            SqlError::new("08P01", "COPY started while another COPY is in progress")
        })?;
        *slot = Some(CopyState {
            splitter: RecordSplitter::new(&opts, CHUNK_BYTES),
            opts,
            copy,
            in_flight: VecDeque::new(),
            chunks: 0,
            lines: 0,
            ended: false,
            started: Instant::now(),
            rows: 0,
            staging: false,
        });
        Ok(CopyResponse::new(0, ncols, futures::stream::empty()))
    }

    /// Fails the active COPY: its rows are dropped.
    async fn abort_copy(&self, e: SqlError) -> PgWireError {
        if let Some(state) = self.copy.lock().await.take() {
            for h in state.in_flight {
                h.abort();
            }
        }
        self.session.lock().await.fail_copy();
        self.metrics
            .observe_query(QueryKind::Copy, std::time::Duration::ZERO, Some(e.sqlstate));
        pg_error(e)
    }

    /// Applies decoded chunks in order: the finished ones at the front, and
    /// more (waiting for them) while more than `keep` are in flight.
    async fn drain(&self, state: &mut CopyState, keep: usize) -> Result<(), SqlError> {
        loop {
            let ready = match state.in_flight.front() {
                None => return Ok(()),
                Some(h) => h.is_finished() || state.in_flight.len() > keep,
            };
            if !ready {
                return Ok(());
            }
            let Some(h) = state.in_flight.pop_front() else {
                return Ok(());
            };
            let table = state.copy.table.name.clone();
            let decoded = h
                .await
                .map_err(|e| SqlError::new("XX000", format!("COPY decoder failed: {e}")))?
                .map_err(|e| copy_error(e.shift_lines(state.lines), &table))?;
            state.lines += decoded.lines;
            let batches = decoded.staged.as_ref().map_or(&decoded.batches, |(b, _)| b);
            state.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            self.session
                .lock()
                .await
                .copy_chunk(&state.copy, decoded.batches, decoded.staged)
                .await?;
            if decoded.ended {
                state.ended = true;
                for h in state.in_flight.drain(..) {
                    h.abort();
                }
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = &self.conn;
        let mut slot = conn.copy.lock().await;
        let Some(state) = slot.as_mut() else {
            return Ok(());
        };
        if state.ended {
            return Ok(());
        }
        if let Some(chunk) = state.splitter.push(&copy_data.data) {
            state.spawn(chunk);
        }
        if let Err(e) = conn.drain(state, max_in_flight()).await {
            drop(slot);
            return Err(conn.abort_copy(e).await);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = &self.conn;
        let mut slot = conn.copy.lock().await;
        let Some(mut state) = slot.take() else {
            return Ok(());
        };
        drop(slot);
        let mut r = Ok(());
        if !state.ended {
            let rest = state.splitter.finish();
            if !rest.is_empty() || state.chunks == 0 {
                state.spawn(rest);
            }
            r = conn.drain(&mut state, 0).await;
        }
        let r = match r {
            Ok(()) => conn.session.lock().await.finish_copy(&state.copy).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            // finish_copy has already failed the copy on its own errors;
            // failing it again is harmless.
            return Err(conn.abort_copy(e).await);
        }
        conn.metrics
            .observe_query(QueryKind::Copy, state.started.elapsed(), None);
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(state.rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.conn
            .abort_copy(SqlError::new(
                "57014",
                format!("COPY from stdin failed: {}", fail.message),
            ))
            .await
    }
}
