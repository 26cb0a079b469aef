//! A worker's durable record of its prepared distributed transactions.
//!
//! Step in the flow: `prepare` of a distributed transaction
//! ([`super::worker_txn`]) must make its writes durable before it answers,
//! so that the worker can commit them after a crash if the coordinator
//! decides so. They go to this log, `prepared/log/<first-lsn>.log`, framed,
//! checksummed and group-committed by the storage engine's WAL writer
//! ([`crate::storage::wal`]): one `fdatasync` makes every prepare waiting at
//! that moment durable, where a file per transaction cost a create, two
//! fsyncs and a rename each.
//!
//! Records: `Prepare(gid, writes)` and `Resolved(gid)`. A transaction is
//! *live* from its `Prepare` until its `Resolved`. A `Resolved` record is
//! written without waiting for its fsync: losing it in a crash only makes
//! the transaction look prepared again, and then
//! - a committed one has its gid in the worker's committed-gid table (the
//!   same storage commit as its rows), and [`PreparedLog::open`] drops it;
//! - an aborted one waits for the coordinator's decision again (abort).
//!
//! [`PreparedLog::compact`] starts a new file holding only the live
//! transactions and deletes the older files, so the log stays small; after
//! it no record of a resolved transaction is left, which is when the
//! committed-gid table may be emptied. Reading the log in file order gives
//! every transaction's last record, so a crash in the middle of a
//! compaction (old and new files both present) loses nothing.
//!
//! Files `prepared/<gid>.prep` written by earlier versions (one file per
//! prepared transaction) are read once at start and moved into the log.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::storage::codec::{self, Op};
use crate::storage::parts::sync_dir;
use crate::storage::wal::{self, WalWriter};
use crate::storage::WriteSet;

use super::worker_txn::WorkerTxnError;

const PREPARE: u8 = 1;
const RESOLVED: u8 = 2;
/// Header of a legacy `<gid>.prep` file.
const LEGACY_MAGIC: &[u8; 8] = b"QPREP01\n";

/// The log of prepared transactions (see the module docs).
pub struct PreparedLog {
    dir: PathBuf,
    writer: WalWriter,
    state: tokio::sync::Mutex<LogState>,
}

struct LogState {
    /// LSN of the last record submitted.
    lsn: u64,
    /// First LSN of every file, ascending; the last one is being written.
    files: Vec<u64>,
    /// Encoded `Prepare` payload of every live transaction.
    live: BTreeMap<String, Vec<u8>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerTxnError + '_ {
    move |source| WorkerTxnError::Io {
        path: path.to_owned(),
        source,
    }
}

fn damaged(path: &Path, reason: &str) -> WorkerTxnError {
    WorkerTxnError::Damaged {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn wal_err(dir: &Path) -> impl FnOnce(wal::WalError) -> WorkerTxnError + '_ {
    move |e| WorkerTxnError::Damaged {
        path: dir.to_owned(),
        reason: e.to_string(),
    }
}

/// `kind`, the gid's length and the gid: the head of every record.
fn head(kind: u8, gid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(gid.len() + 2);
    out.push(kind);
    // check_gid bounds a gid to 128 ASCII bytes.
    out.push(gid.len().min(255) as u8);
    out.extend_from_slice(&gid.as_bytes()[..gid.len().min(255)]);
    out
}

/// A `Prepare` record's payload.
fn prepare_record(gid: &str, ws: &WriteSet) -> Result<Vec<u8>, WorkerTxnError> {
    let mut ops = Vec::new();
    for (id, w) in &ws.tables {
        if w.truncate {
            ops.push(Op::Truncate { table: *id });
        }
        if !w.deletes.is_empty() {
            ops.push(Op::Delete {
                table: *id,
                rowids: w.deletes.iter().copied().collect(),
            });
        }
        if !w.inserts.is_empty() {
            ops.push(Op::Insert {
                table: *id,
                batches: w.inserts.clone(),
                staged: None,
            });
        }
    }
    let mut out = head(PREPARE, gid);
    for piece in codec::encode(&ops)? {
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// The writes of an encoded transaction (`ops` as [`prepare_record`] wrote
/// them).
fn decode_writes(path: &Path, ops: &[u8]) -> Result<WriteSet, WorkerTxnError> {
    let mut ws = WriteSet::default();
    for op in codec::decode(ops)? {
        match op {
            Op::Truncate { table } => ws.tables.entry(table).or_default().truncate = true,
            Op::Delete { table, rowids } => {
                ws.tables.entry(table).or_default().deletes.extend(rowids)
            }
            Op::Insert { table, batches, .. } => {
                ws.tables.entry(table).or_default().inserts.extend(batches)
            }
            _ => return Err(damaged(path, "unexpected operation")),
        }
    }
    Ok(ws)
}

/// Splits a record into its kind, gid and body.
fn split(path: &Path, payload: &[u8]) -> Result<(u8, String, usize), WorkerTxnError> {
    let (&kind, rest) = payload
        .split_first()
        .ok_or_else(|| damaged(path, "empty record"))?;
    let (&len, rest) = rest
        .split_first()
        .ok_or_else(|| damaged(path, "record without gid"))?;
    let gid = rest
        .get(..usize::from(len))
        .and_then(|g| std::str::from_utf8(g).ok())
        .ok_or_else(|| damaged(path, "bad gid"))?;
    Ok((kind, gid.to_owned(), 2 + usize::from(len)))
}

/// The writes of a legacy `<gid>.prep` file.
fn read_legacy(path: &Path) -> Result<WriteSet, WorkerTxnError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.len() < 20 || &bytes[..8] != LEGACY_MAGIC {
        return Err(damaged(path, "bad header"));
    }
    let crc = u32::from_le_bytes(
        bytes[8..12]
            .try_into()
            .map_err(|_| damaged(path, "header"))?,
    );
    let len = u64::from_le_bytes(
        bytes[12..20]
            .try_into()
            .map_err(|_| damaged(path, "header"))?,
    );
    let payload = &bytes[20..];
    if payload.len() as u64 != len || crc32fast::hash(payload) != crc {
        return Err(damaged(path, "checksum mismatch"));
    }
    decode_writes(path, payload)
}

impl PreparedLog {
    /// Opens the log under `prepared_dir` and returns the transactions
    /// still prepared, leaving out those in `committed` (their commit
    /// reached storage before a crash). The log is compacted to them.
    pub async fn open(
        prepared_dir: &Path,
        committed: &HashSet<String>,
    ) -> Result<(Self, Vec<(String, WriteSet)>), WorkerTxnError> {
        let dir = prepared_dir.join("log");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut live: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // Legacy files first: they are older than any log.
        let mut legacy = Vec::new();
        for entry in std::fs::read_dir(prepared_dir).map_err(io(prepared_dir))? {
            let path = entry.map_err(io(prepared_dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(gid) = name.strip_suffix(".prep") {
                let ws = read_legacy(&path)?;
                live.insert(gid.to_owned(), prepare_record(gid, &ws)?);
            } else if !name.ends_with(".tmp") {
                continue;
            }
            legacy.push(path);
        }
        let mut files = Vec::new();
        let mut lsn = 0;
        for (first, path) in wal::list_files(&dir).map_err(wal_err(&dir))? {
            files.push(first);
            let (records, _torn) = wal::read_file(&path).map_err(wal_err(&path))?;
            for r in records {
                lsn = lsn.max(r.lsn);
                let (kind, gid, _) = split(&path, &r.payload)?;
                match kind {
                    PREPARE => {
                        live.insert(gid, r.payload);
                    }
                    RESOLVED => {
                        live.remove(&gid);
                    }
                    _ => return Err(damaged(&path, "unknown record kind")),
                }
            }
        }
        live.retain(|gid, _| !committed.contains(gid));
        let mut out = Vec::new();
        for (gid, payload) in &live {
            let (_, _, body) = split(&dir, payload)?;
            out.push((gid.clone(), decode_writes(&dir, &payload[body..])?));
        }
        let active = files.last().copied().unwrap_or(lsn + 1);
        if files.is_empty() {
            files.push(active);
        }
        let writer =
            WalWriter::start(&dir, active, Box::new(|_| {}), None).map_err(wal_err(&dir))?;
        let log = PreparedLog {
            dir,
            writer,
            state: tokio::sync::Mutex::new(LogState { lsn, files, live }),
        };
        log.compact().await?;
        // The legacy files' transactions are in the log now; a `.tmp` is a
        // prepare an earlier version never acknowledged.
        if !legacy.is_empty() {
            for path in &legacy {
                std::fs::remove_file(path).map_err(io(path))?;
            }
            sync_dir(prepared_dir)?;
        }
        Ok((log, out))
    }

    /// Waits for a submitted record (or a rotation) to be durable.
    async fn durable(
        &self,
        rx: tokio::sync::oneshot::Receiver<Result<(), wal::WalError>>,
    ) -> Result<(), WorkerTxnError> {
        rx.await
            .unwrap_or(Err(wal::WalError::Stopped))
            .map_err(wal_err(&self.dir))
    }

    /// Records `gid` as prepared with writes `ws`; returns once durable.
    pub async fn prepare(&self, gid: &str, ws: &WriteSet) -> Result<(), WorkerTxnError> {
        let payload = prepare_record(gid, ws)?;
        let durable = {
            let mut s = self.state.lock().await;
            s.lsn += 1;
            let rx = self
                .writer
                .submit(s.lsn, vec![payload.clone()])
                .map_err(wal_err(&self.dir))?;
            s.live.insert(gid.to_owned(), payload);
            rx
        };
        self.durable(durable).await
    }

    /// Records that `gid` was committed or aborted. Does not wait for the
    /// fsync (see the module docs).
    pub async fn resolved(&self, gid: &str) -> Result<(), WorkerTxnError> {
        let mut s = self.state.lock().await;
        if s.live.remove(gid).is_none() {
            return Ok(());
        }
        self.writer
            .stage(vec![head(RESOLVED, gid)])
            .map_err(wal_err(&self.dir))
    }

    /// Rewrites the live transactions into a new file and deletes the
    /// older ones. When it returns, no record of a resolved transaction is
    /// left. Prepares and resolutions wait meanwhile.
    pub async fn compact(&self) -> Result<(), WorkerTxnError> {
        let mut s = self.state.lock().await;
        let first = s.lsn + 1;
        let rotated = self
            .writer
            .rotate_request(first)
            .map_err(wal_err(&self.dir))?;
        self.durable(rotated).await?;
        let old: Vec<u64> = std::mem::take(&mut s.files)
            .into_iter()
            .filter(|f| *f != first)
            .collect();
        s.files.push(first);
        let mut last = None;
        let records: Vec<Vec<u8>> = s.live.values().cloned().collect();
        for payload in records {
            s.lsn += 1;
            last = Some(
                self.writer
                    .submit(s.lsn, vec![payload])
                    .map_err(wal_err(&self.dir))?,
            );
        }
        if let Some(rx) = last {
            self.durable(rx).await?;
        }
        for f in old {
            let path = self.dir.join(format!("{f:020}.log"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(sync_dir(&self.dir)?)
    }

    /// Live transactions and log files.
    #[cfg(test)]
    pub async fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().await;
        (s.live.len(), s.files.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn writes(table: u64, v: i64) -> WriteSet {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
        let mut ws = WriteSet::default();
        let w = ws.tables.entry(table).or_default();
        w.inserts.push(batch);
        w.deletes.insert(v as u64 * 10);
        ws
    }

    fn value(ws: &WriteSet, table: u64) -> i64 {
        let b = &ws.tables[&table].inserts[0];
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        a.value(0)
    }

    #[tokio::test]
    async fn live_transactions_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashSet::new();
        {
            let (log, live) = PreparedLog::open(dir.path(), &none).await.unwrap();
            assert!(live.is_empty());
            for i in 0..5 {
                log.prepare(&format!("g{i}"), &writes(7, i)).await.unwrap();
            }
            log.resolved("g1").await.unwrap();
            log.resolved("g3").await.unwrap();
            // Unknown and repeated resolutions are no-ops.
            log.resolved("g1").await.unwrap();
            log.resolved("nope").await.unwrap();
            assert_eq!(log.counts().await.0, 3);
            // Dropped without compacting, as in a crash after the fsyncs.
        }
        let committed: HashSet<String> = ["g4".to_string()].into();
        let (log, live) = PreparedLog::open(dir.path(), &committed).await.unwrap();
        let gids: Vec<&str> = live.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(gids, ["g0", "g2"]);
        assert_eq!(value(&live[1].1, 7), 2);
        assert!(live[1].1.tables[&7].deletes.contains(&20));
        // Opening compacted the log to one file holding the live two.
        assert_eq!(log.counts().await, (2, 1));
        assert_eq!(wal::list_files(&dir.path().join("log")).unwrap().len(), 1);
        log.prepare("g5", &writes(7, 5)).await.unwrap();
        log.resolved("g0").await.unwrap();
        log.compact().await.unwrap();
        drop(log);
        let (_, live) = PreparedLog::open(dir.path(), &none).await.unwrap();
        let gids: Vec<&str> = live.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(gids, ["g2", "g5"]);
    }

    #[tokio::test]
    async fn legacy_files_move_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        // A file as earlier versions wrote it: magic, crc, length, ops.
        let record = prepare_record("old-1", &writes(3, 9)).unwrap();
        let (_, _, body) = split(dir.path(), &record).unwrap();
        let payload = &record[body..];
        let mut bytes = LEGACY_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(payload);
        std::fs::write(dir.path().join("old-1.prep"), &bytes).unwrap();
        std::fs::write(dir.path().join("old-2.tmp"), b"torn").unwrap();
        let none = HashSet::new();
        let (log, live) = PreparedLog::open(dir.path(), &none).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(value(&live[0].1, 3), 9);
        assert!(!dir.path().join("old-1.prep").exists());
        assert!(!dir.path().join("old-2.tmp").exists());
        drop(log);
        let (_, live) = PreparedLog::open(dir.path(), &none).await.unwrap();
        assert_eq!(live.len(), 1, "now in the log");
        // A damaged legacy file is refused, not skipped.
        std::fs::write(dir.path().join("bad.prep"), b"QPREP01\nshort").unwrap();
        assert!(PreparedLog::open(dir.path(), &none).await.is_err());
    }
}
