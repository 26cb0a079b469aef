//! A worker's part in shard moves (ADR 0013): the source ships a shard
//! table's rows and changes, the target applies them, and the source's
//! fence keeps new writers out for the cut-over.
//!
//! Step in the flow: the coordinator's mover ([`super::mover`]) asks the
//! *target* to pull a round ([`pull`]): for each shard table it opens a
//! `do_get` of a [`MoveTicket`] on the *source*, which answers with
//! [`MoveSource::changes`]: the whole table (round 0, or whenever the source
//! no longer holds the base round) or the exact changes since the version
//! it shipped in the base round ([`crate::storage::changes`]). Rows keep
//! their row ids, every chunk is checked against its CRC32, and the target
//! applies them a few MB per commit. For the cut-over the mover fences the
//! source ([`MoveFences`]): a transaction that has not written to the
//! moving tables may not start to, the ones that have may finish, and the
//! fence answers once none is left; the last round then ships everything.
//! After the switch the source's tables are *retired*: they take no write
//! again until the cleaner drops them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;

use super::client::WorkerClients;
use super::wire::{Action, MoveHeader, MovePull, MoveTicket};
use crate::sql::{Database, SqlError};
use crate::storage::changes::{changes_since, Changes};
use crate::storage::table::TableData;
use crate::storage::Engine;

/// Rows per IPC chunk of a move's stream.
const CHUNK_ROWS: usize = 16_384;
/// Bytes of rows the target applies per storage commit: small, because a
/// commit holds the engine's commit lock, and the target's other shards
/// take writes meanwhile.
const APPLY_BYTES: usize = 1 << 20;

fn internal(e: impl std::fmt::Display) -> SqlError {
    SqlError::new("XX000", format!("shard move: {e}"))
}

/// A shipped round: its number and the version of the table it shipped.
type Shipped = (u64, Arc<TableData>);

/// What a source remembers of each move: per (job, shard table), the last
/// round shipped.
#[derive(Default)]
pub struct MoveSource {
    shipped: Mutex<HashMap<(String, String), Shipped>>,
}

impl MoveSource {
    /// The changes of `t.table` for round `t.round`: since the version of
    /// round `t.base` when this source still holds it, else the whole
    /// table (`full`).
    pub fn changes(
        &self,
        engine: &Engine,
        t: &MoveTicket,
    ) -> Result<(MoveHeader, Changes), SqlError> {
        let snap = engine.snapshot();
        let now = snap.table_by_name(&t.table).cloned().ok_or_else(|| {
            SqlError::new("42P01", format!("shard table {} does not exist", t.table))
        })?;
        let key = (t.move_job.clone(), t.table.clone());
        let base = match (t.base, self.shipped.lock().get(&key)) {
            (Some(b), Some((round, old))) if *round == b => Some(old.clone()),
            _ => None,
        };
        let changes = changes_since(base.as_deref(), &now).map_err(SqlError::from)?;
        self.shipped.lock().insert(key, (t.round, now));
        Ok((
            MoveHeader {
                full: base.is_none(),
                deleted: changes.deleted.clone(),
            },
            changes,
        ))
    }

    /// Forgets what was shipped for `job`.
    pub fn forget(&self, job: &str) {
        self.shipped.lock().retain(|(j, _), _| j != job);
    }
}

/// The Flight messages of a move's changes: the header, then each chunk of
/// rows as an IPC stream with its CRC32.
pub fn encode_changes(
    header: &MoveHeader,
    changes: Changes,
) -> Result<impl Stream<Item = FlightData> + Send + 'static, SqlError> {
    let first = FlightData {
        app_metadata: Bytes::from(serde_json::to_vec(header).map_err(internal)?),
        ..Default::default()
    };
    let chunks = changes.inserted.into_iter().flat_map(|b| {
        (0..b.num_rows())
            .step_by(CHUNK_ROWS)
            .map(move |at| b.slice(at, CHUNK_ROWS.min(b.num_rows() - at)))
            .collect::<Vec<_>>()
    });
    let rows = futures::stream::iter(chunks).filter_map(|b| async move {
        match ipc_bytes(&b) {
            Ok(body) => Some(FlightData {
                app_metadata: Bytes::copy_from_slice(&crc32fast::hash(&body).to_le_bytes()),
                data_body: Bytes::from(body),
                ..Default::default()
            }),
            Err(e) => {
                // The target sees the stream end early: its row count is
                // short, and the round fails there.
                tracing::warn!(error = %e, "cannot encode rows of a shard move");
                None
            }
        }
    });
    Ok(futures::stream::once(async move { first }).chain(rows))
}

fn ipc_bytes(b: &RecordBatch) -> Result<Vec<u8>, SqlError> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &b.schema()).map_err(internal)?;
    w.write(b).map_err(internal)?;
    w.finish().map_err(internal)?;
    drop(w);
    Ok(out)
}

fn decode_chunk(msg: &FlightData) -> Result<Vec<RecordBatch>, SqlError> {
    let want: [u8; 4] = msg
        .app_metadata
        .as_ref()
        .try_into()
        .map_err(|_| internal("a chunk without its checksum"))?;
    if crc32fast::hash(&msg.data_body) != u32::from_le_bytes(want) {
        return Err(SqlError::new(
            "XX001",
            "shard move: a chunk of rows failed its checksum",
        ));
    }
    let reader = StreamReader::try_new(std::io::Cursor::new(msg.data_body.as_ref()), None)
        .map_err(internal)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(internal)
}

/// One round of a move on its target: every table of `p` brought up to
/// date with the source. Returns the bytes and rows received.
pub async fn pull(
    db: &Arc<Database>,
    peers: &WorkerClients,
    p: &MovePull,
) -> Result<(u64, u64), SqlError> {
    let engine = &db.engine;
    let missing: Vec<String> = {
        let snap = engine.snapshot();
        p.tables
            .iter()
            .filter(|t| snap.table_by_name(t).is_none())
            .cloned()
            .collect()
    };
    if !missing.is_empty() {
        let reply = peers
            .action(&p.source, &Action::ShardMetas { names: missing })
            .await?;
        for meta in reply.metas {
            engine.create_table(meta, true).await?;
        }
    }
    let (mut bytes, mut rows) = (0u64, 0u64);
    for table in &p.tables {
        let ticket = MoveTicket {
            move_job: p.job.clone(),
            table: table.clone(),
            round: p.round,
            base: p.base,
        };
        let body = serde_json::to_vec(&ticket).map_err(internal)?;
        let mut stream = peers.raw_get(&p.source, body).await?;
        let header: MoveHeader = match stream.next().await {
            Some(Ok(first)) => serde_json::from_slice(&first.app_metadata).map_err(internal)?,
            Some(Err(s)) => {
                return Err(super::client::remote_error(
                    &p.source,
                    "copying a shard",
                    FlightError::Tonic(Box::new(s)),
                ))
            }
            None => return Err(internal("the source sent nothing")),
        };
        if header.full {
            restart_copy(engine, table).await?;
        }
        let mut pending = Changes {
            deleted: header.deleted,
            inserted: Vec::new(),
        };
        let mut pending_bytes = 0usize;
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|s| {
                super::client::remote_error(
                    &p.source,
                    "copying a shard",
                    FlightError::Tonic(Box::new(s)),
                )
            })?;
            bytes += msg.data_body.len() as u64;
            pending_bytes += msg.data_body.len();
            for b in decode_chunk(&msg)? {
                rows += b.num_rows() as u64;
                pending.inserted.push(b);
            }
            if pending_bytes >= APPLY_BYTES {
                engine
                    .apply_changes(table, &std::mem::take(&mut pending))
                    .await?;
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            engine.apply_changes(table, &pending).await?;
        }
    }
    Ok((bytes, rows))
}

/// Empties a copy before a full copy: dropped and made again from its own
/// definition (a half-done copy of an earlier attempt is not reused).
async fn restart_copy(engine: &Engine, table: &str) -> Result<(), SqlError> {
    let Some(t) = engine.snapshot().table_by_name(table).cloned() else {
        return Err(SqlError::new(
            "42P01",
            format!("shard table {table} does not exist"),
        ));
    };
    if t.next_rowid <= 1 {
        return Ok(());
    }
    let meta = (*t.meta).clone();
    engine.drop_table(table, true).await?;
    engine.create_table(meta, false).await?;
    Ok(())
}

/// A fence on a move's source tables.
#[derive(Debug, Clone)]
struct Fence {
    job: String,
    /// `None`: retired (the move switched).
    until: Option<Instant>,
}

/// The source's fences, by shard table name.
#[derive(Debug, Default)]
pub struct MoveFences {
    tables: Mutex<HashMap<String, Fence>>,
}

impl MoveFences {
    /// Fences `tables` for `job` until `deadline_ms` (Unix ms).
    pub fn fence(&self, job: &str, tables: &[String], deadline_ms: u64) {
        let left = deadline_ms.saturating_sub(crate::meta::moves::now_ms());
        let until = Instant::now() + Duration::from_millis(left);
        let mut map = self.tables.lock();
        for t in tables {
            map.insert(
                t.clone(),
                Fence {
                    job: job.to_owned(),
                    until: Some(until),
                },
            );
        }
    }

    /// Lifts `job`'s fences (not retired tables).
    pub fn unfence(&self, job: &str) {
        self.tables
            .lock()
            .retain(|_, f| !(f.job == job && f.until.is_some()));
    }

    /// `job`'s tables take no write again.
    pub fn retire(&self, job: &str) {
        for f in self.tables.lock().values_mut() {
            if f.job == job {
                f.until = None;
            }
        }
    }

    /// Forgets the fence of a dropped table.
    pub fn dropped(&self, table: &str) {
        self.tables.lock().remove(table);
    }

    /// The fenced tables now, with their job (a lapsed fence is lifted).
    pub fn fenced(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut map = self.tables.lock();
        map.retain(|_, f| f.until.is_none_or(|u| u > now));
        map.iter()
            .map(|(t, f)| (t.clone(), f.job.clone()))
            .collect()
    }

    /// The error for a new writer of fenced table `table`.
    pub fn refused(table: &str) -> SqlError {
        SqlError::new(
            "40001",
            format!(
                "could not serialize access: shard table {table} is moving to another node; \
                 retry the transaction"
            ),
        )
    }
}

/// The definitions of the shard tables `names` that exist here.
pub fn shard_metas(engine: &Engine, names: &[String]) -> Vec<crate::storage::table::TableMeta> {
    let snap = engine.snapshot();
    names
        .iter()
        .filter_map(|n| snap.table_by_name(n).map(|t| (*t.meta).clone()))
        .collect()
}
