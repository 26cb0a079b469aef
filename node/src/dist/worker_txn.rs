//! A worker's share of distributed transactions, keyed by global id (gid).
//!
//! Step in the flow: every write the coordinator sends a worker (Flight
//! `do_put` rows, `exec` statements) lands in an **open** transaction: a
//! [`Session`] in a block, invisible to everyone else. Then either
//! - `commit` of an open transaction commits it at once (one-phase: the
//!   statement touched only this worker), or
//! - `prepare` takes its writes out, checks them against the newest
//!   version, and makes them durable in the worker's log of prepared
//!   transactions ([`super::prepared_log`]) before answering: from then on
//!   the worker can commit them even after a crash. `commit` or `abort`
//!   follows, as the coordinator's Raft-recorded decision says.
//!
//! A prepared transaction has promised to commit, so nothing may make its
//! commit fail: `prepare` *reserves* the rows it deletes (and a truncate
//! its table), and a prepare or one-phase commit that would delete a
//! reserved row fails with 40001 instead ([`Reservations`]). Without it,
//! two transactions that updated one row could both prepare, and the
//! second could never commit.
//!
//! Committing a prepared transaction also inserts its gid into the hidden
//! table [`COMMITTED_TABLE`] in the same storage commit, so a crash between
//! that commit and its `Resolved` record reaching the log cannot apply it
//! twice: at start the prepared transactions whose gid is in the table are
//! dropped, then the table is emptied. While the worker runs it is emptied
//! every [`PRUNE_GIDS_EVERY`] prepared commits, right after the log is
//! compacted (no record of a committed transaction is left then).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use parking_lot::Mutex;
use thiserror::Error;

use super::prepared_log::PreparedLog;
use super::wire::TxnEntry;
use super::worker_move::MoveFences;
use crate::sql::{Database, Session, SqlError};
use crate::storage::table::{ColumnMeta, SqlType, TableMeta};
use crate::storage::{StorageError, TableWrites, WriteSet};

/// Hidden table of committed prepared gids (see the module docs).
pub const COMMITTED_TABLE: &str = "__quiver_committed_gids";

/// Why the prepared-transaction files cannot be used.
#[derive(Debug, Error)]
pub enum WorkerTxnError {
    #[error("prepared transactions in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prepared transaction file {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Sql(#[from] SqlError),
}

enum Slot {
    Open(Box<Session>),
    Prepared(WriteSet),
}

/// The worker's transactions.
pub struct WorkerTxns {
    db: Arc<Database>,
    log: PreparedLog,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Slot>>>>>,
    reserved: Mutex<Reservations>,
    /// The row locks each prepared transaction keeps until its decision.
    prepared_locks: Mutex<HashMap<String, u64>>,
    /// Held shared from a prepared commit's storage commit until its
    /// `Resolved` record is in the log; held exclusively to compact the log
    /// and empty [`COMMITTED_TABLE`], which is safe only when no record of
    /// a committed transaction is left.
    gid_rows: tokio::sync::RwLock<()>,
    /// Prepared commits since the table was last emptied.
    gids_recorded: std::sync::atomic::AtomicUsize,
    /// A committed transaction's `Resolved` record could not be written:
    /// its row must stay, so the table is not emptied again before a
    /// restart.
    keep_gids: std::sync::atomic::AtomicBool,
    /// Shard tables a move's cut-over keeps new writers out of.
    fences: Arc<MoveFences>,
}

/// [`COMMITTED_TABLE`] is emptied after this many prepared commits (its rows
/// are needed only until the log of prepared transactions is compacted).
const PRUNE_GIDS_EVERY: usize = 1024;

/// How long a worker's statement waits for another transaction's row lock
/// before it gives up with 55P03. A cycle on one worker is found at once,
/// one between workers by the coordinator within about a second
/// ([`super::deadlock`]); this bounds what neither can see (a coordinator
/// that went away while its transaction waited).
const LOCK_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A table a move's fence covers.
struct Fenced {
    id: u64,
    name: String,
    job: String,
}

/// Rows that prepared (or committing) transactions delete, by table.
#[derive(Debug, Default)]
struct Reservations {
    rows: HashMap<u64, HashMap<u64, String>>,
    truncated: HashMap<u64, String>,
}

impl Reservations {
    /// Reserves what `ws` deletes for `gid`, all or nothing.
    fn reserve(&mut self, gid: &str, ws: &WriteSet) -> Result<(), SqlError> {
        let other = |owner: &String| owner != gid;
        for (table, w) in &ws.tables {
            let held = self.rows.get(table);
            let conflict = self.truncated.get(table).is_some_and(other)
                || (w.truncate && held.is_some_and(|h| h.values().any(other)))
                || held.is_some_and(|h| w.deletes.iter().any(|r| h.get(r).is_some_and(other)));
            if conflict {
                return Err(SqlError::new(
                    "40001",
                    "could not serialize access due to concurrent update",
                ));
            }
        }
        for (table, w) in &ws.tables {
            if w.truncate {
                self.truncated.insert(*table, gid.to_owned());
            }
            if !w.deletes.is_empty() {
                let held = self.rows.entry(*table).or_default();
                held.extend(w.deletes.iter().map(|r| (*r, gid.to_owned())));
            }
        }
        Ok(())
    }

    /// Releases what `ws` reserved for `gid`.
    fn release(&mut self, gid: &str, ws: &WriteSet) {
        for (table, w) in &ws.tables {
            if self.truncated.get(table).is_some_and(|g| g == gid) {
                self.truncated.remove(table);
            }
            if let Some(held) = self.rows.get_mut(table) {
                for r in &w.deletes {
                    if held.get(r).is_some_and(|g| g == gid) {
                        held.remove(r);
                    }
                }
                if held.is_empty() {
                    self.rows.remove(table);
                }
            }
        }
    }
}

fn no_txn(gid: &str) -> SqlError {
    SqlError::new(
        "42704",
        format!("transaction {gid} does not exist on this worker (it may have restarted)"),
    )
}

/// A gid names a file, so only a safe alphabet is accepted.
pub fn check_gid(gid: &str) -> Result<(), SqlError> {
    let ok = !gid.is_empty()
        && gid.len() <= 128
        && gid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SqlError::new(
            "22023",
            format!("invalid transaction id {gid:?}"),
        ))
    }
}

impl WorkerTxns {
    /// Opens the registry over `data_dir/prepared`, recovering prepared
    /// transactions left by an earlier run.
    pub async fn open(db: Arc<Database>, data_dir: &Path) -> Result<Arc<Self>, WorkerTxnError> {
        let dir = data_dir.join("prepared");
        let io = |source| WorkerTxnError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let committed_meta = TableMeta {
            id: 0,
            name: COMMITTED_TABLE.into(),
            columns: vec![ColumnMeta {
                name: "gid".into(),
                ty: SqlType::Text,
                nullable: false,
                default: None,
            }],
            primary_key: None,
            uniques: vec![],
        };
        db.engine.create_table(committed_meta, true).await?;
        let snap = db.engine.snapshot();
        let done: std::collections::HashSet<String> = match snap.table_by_name(COMMITTED_TABLE) {
            Some(t) => {
                let mut s = std::collections::HashSet::new();
                for b in t.live_batches()? {
                    if let Some(a) = b.column(0).as_any().downcast_ref::<StringArray>() {
                        s.extend(a.iter().flatten().map(str::to_owned));
                    }
                }
                s
            }
            None => Default::default(),
        };
        let (log, live) = PreparedLog::open(&dir, &done).await?;
        let mut slots = HashMap::new();
        let mut reserved = Reservations::default();
        for (gid, ws) in live {
            tracing::info!(%gid, "recovered a prepared transaction; waiting for the coordinator's decision");
            reserved.reserve(&gid, &ws)?;
            slots.insert(
                gid,
                Arc::new(tokio::sync::Mutex::new(Some(Slot::Prepared(ws)))),
            );
        }
        empty_committed_gids(&db).await?;
        Ok(Arc::new(WorkerTxns {
            db,
            log,
            slots: Mutex::new(slots),
            reserved: Mutex::new(reserved),
            prepared_locks: Mutex::default(),
            gid_rows: tokio::sync::RwLock::new(()),
            gids_recorded: Default::default(),
            keep_gids: Default::default(),
            fences: Arc::default(),
        }))
    }

    pub fn fences(&self) -> &Arc<MoveFences> {
        &self.fences
    }

    /// The fenced tables (see [`MoveFences`]).
    fn fenced_tables(&self) -> Vec<Fenced> {
        let names = self.fences.fenced();
        if names.is_empty() {
            return Vec::new();
        }
        let snap = self.db.engine.snapshot();
        names
            .into_iter()
            .filter_map(|(name, job)| {
                snap.table_by_name(&name).map(|t| Fenced {
                    id: t.meta.id,
                    name,
                    job,
                })
            })
            .collect()
    }

    /// Fails `session`'s block when its last statement made it a new
    /// writer of a move's fenced tables: one that, before that statement,
    /// had written none of that move's tables (`before`).
    fn check_fences(
        session: &mut Session,
        fenced: &[Fenced],
        before: &[u64],
    ) -> Result<(), SqlError> {
        let ids: Vec<u64> = fenced.iter().map(|f| f.id).collect();
        let jobs_before: Vec<&str> = fenced
            .iter()
            .filter(|f| before.contains(&f.id))
            .map(|f| f.job.as_str())
            .collect();
        for id in session.written_among(&ids) {
            let Some(f) = fenced.iter().find(|f| f.id == id) else {
                continue;
            };
            if !jobs_before.contains(&f.job.as_str()) {
                session.fail_block();
                return Err(MoveFences::refused(&f.name));
            }
        }
        Ok(())
    }

    /// Waits until no transaction here (open or prepared) has written to
    /// one of `tables`, up to `deadline_ms` (Unix ms); 55P03 after it.
    pub async fn quiesce(&self, tables: &[String], deadline_ms: u64) -> Result<(), SqlError> {
        let ids: Vec<u64> = {
            let snap = self.db.engine.snapshot();
            tables
                .iter()
                .filter_map(|n| snap.table_by_name(n).map(|t| t.meta.id))
                .collect()
        };
        loop {
            let slots: Vec<_> = self.slots.lock().values().cloned().collect();
            let busy = slots.iter().any(|slot| match slot.try_lock() {
                Ok(guard) => match guard.as_ref() {
                    Some(Slot::Open(session)) => !session.written_among(&ids).is_empty(),
                    Some(Slot::Prepared(ws)) => ids.iter().any(|id| ws.tables.contains_key(id)),
                    None => false,
                },
                // A statement runs in it now: it may be writing to them.
                Err(_) => true,
            });
            if !busy {
                return Ok(());
            }
            if crate::meta::moves::now_ms() >= deadline_ms {
                return Err(SqlError::new(
                    "55P03",
                    "transactions writing to the moving shards did not end before the fence's deadline",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    fn slot(&self, gid: &str, create: bool) -> Option<Arc<tokio::sync::Mutex<Option<Slot>>>> {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(gid) {
            return Some(s.clone());
        }
        if !create {
            return None;
        }
        let mut session = self.db.session();
        session.begin_block();
        session.set_lock_wait_limit(Some(LOCK_WAIT_LIMIT));
        self.db.engine.locks.label(session.lock_owner(), gid);
        let s = Arc::new(tokio::sync::Mutex::new(Some(Slot::Open(Box::new(session)))));
        slots.insert(gid.to_owned(), s.clone());
        Some(s)
    }

    fn release_prepared_locks(&self, gid: &str) {
        if let Some(owner) = self.prepared_locks.lock().remove(gid) {
            self.db.engine.locks.release(owner);
        }
    }

    fn forget(&self, gid: &str) {
        self.slots.lock().remove(gid);
    }

    /// Runs statements inside open transaction `gid` (created if new).
    /// `block`: the snapshot of the coordinator's repeatable-read block,
    /// which the transaction reads from its first statement on.
    pub async fn exec(
        &self,
        gid: &str,
        sql: &str,
        block: Option<Arc<crate::storage::DbVersion>>,
    ) -> Result<u64, SqlError> {
        check_gid(gid)?;
        let slot = self.slot(gid, true).ok_or_else(|| no_txn(gid))?;
        let mut guard = slot.lock().await;
        match guard.as_mut() {
            Some(Slot::Open(session)) => {
                if let Some(version) = block {
                    session.repeatable_at(version);
                }
                let fenced = self.fenced_tables();
                let before = if fenced.is_empty() {
                    Vec::new()
                } else {
                    session.written_among(&fenced.iter().map(|f| f.id).collect::<Vec<_>>())
                };
                let rows = session.exec_in_block(sql, None).await?;
                if !fenced.is_empty() {
                    Self::check_fences(session, &fenced, &before)?;
                }
                Ok(rows)
            }
            Some(Slot::Prepared(_)) => Err(prepared_already(gid)),
            None => Err(no_txn(gid)),
        }
    }

    /// Stages rows for shard table `table` in open transaction `gid`.
    pub async fn put(
        &self,
        gid: &str,
        table: &str,
        batches: &[RecordBatch],
    ) -> Result<u64, SqlError> {
        check_gid(gid)?;
        let slot = self.slot(gid, true).ok_or_else(|| no_txn(gid))?;
        let mut guard = slot.lock().await;
        match guard.as_mut() {
            Some(Slot::Open(session)) => {
                let fenced = self.fenced_tables();
                if let Some(f) = fenced.iter().find(|f| f.name == table) {
                    let same_job: Vec<u64> = fenced
                        .iter()
                        .filter(|o| o.job == f.job)
                        .map(|o| o.id)
                        .collect();
                    if session.written_among(&same_job).is_empty() {
                        session.fail_block();
                        return Err(MoveFences::refused(&f.name));
                    }
                }
                session.stage_rows(table, batches)
            }
            Some(Slot::Prepared(_)) => Err(prepared_already(gid)),
            None => Err(no_txn(gid)),
        }
    }

    /// Runs a query inside open transaction `gid`, if there is one: `None`
    /// when `gid` is unknown (the query then runs on its own).
    pub async fn query(
        &self,
        gid: &str,
        stmt: &datafusion::sql::sqlparser::ast::Statement,
        version: Option<Arc<crate::storage::DbVersion>>,
    ) -> Option<Result<Vec<RecordBatch>, SqlError>> {
        let slot = self.slot(gid, false)?;
        let mut guard = slot.lock().await;
        let Some(Slot::Open(session)) = guard.as_mut() else {
            return None;
        };
        session.read_at(version);
        let out = run_query(session, stmt).await;
        session.read_at(None);
        Some(out)
    }

    /// Prepares `gid`: its writes are checked and made durable.
    pub async fn prepare(&self, gid: &str) -> Result<(), SqlError> {
        check_gid(gid)?;
        let slot = self.slot(gid, false).ok_or_else(|| no_txn(gid))?;
        let mut guard = slot.lock().await;
        let ws = match guard.take() {
            Some(Slot::Open(mut session)) => match session.take_writes() {
                Ok(ws) => {
                    let owner = session.end_locks(true);
                    self.prepared_locks.lock().insert(gid.to_owned(), owner);
                    ws
                }
                Err(e) => {
                    drop(guard);
                    self.forget(gid);
                    return Err(e);
                }
            },
            Some(Slot::Prepared(ws)) => {
                *guard = Some(Slot::Prepared(ws));
                return Ok(());
            }
            None => return Err(no_txn(gid)),
        };
        if let Err(e) = self.reserved.lock().reserve(gid, &ws) {
            self.release_prepared_locks(gid);
            drop(guard);
            self.forget(gid);
            return Err(e);
        }
        let head = self.db.engine.snapshot();
        for (id, w) in &ws.tables {
            if let Err(e) = self.db.engine.precheck(&head, *id, w) {
                self.reserved.lock().release(gid, &ws);
                self.release_prepared_locks(gid);
                drop(guard);
                self.forget(gid);
                return Err(e.into());
            }
        }
        if let Err(e) = self.log.prepare(gid, &ws).await {
            self.reserved.lock().release(gid, &ws);
            self.release_prepared_locks(gid);
            drop(guard);
            self.forget(gid);
            return Err(SqlError::new("58030", e.to_string()));
        }
        *guard = Some(Slot::Prepared(ws));
        Ok(())
    }

    /// Commits `gid`: a prepared transaction, or an open one in one phase.
    /// An unknown gid was committed (or never wrote) already: nothing to do.
    pub async fn commit(&self, gid: &str) -> Result<(), SqlError> {
        check_gid(gid)?;
        let Some(slot) = self.slot(gid, false) else {
            return Ok(());
        };
        let mut guard = slot.lock().await;
        match guard.take() {
            Some(Slot::Open(mut session)) => {
                let ws = session.take_writes()?;
                // Rows a prepared transaction will delete are not ours to take.
                let reserved = self.reserved.lock().reserve(gid, &ws);
                let r = match reserved {
                    Ok(()) => {
                        let r = self.db.engine.commit(ws.clone()).await;
                        self.reserved.lock().release(gid, &ws);
                        session.end_locks(false);
                        r.map_err(SqlError::from)
                    }
                    Err(e) => Err(e),
                };
                drop(guard);
                self.forget(gid);
                r?;
            }
            Some(Slot::Prepared(ws)) => {
                let mut with_gid = ws.clone();
                self.record_gid(&mut with_gid, gid)?;
                let recording = self.gid_rows.read().await;
                if let Err(e) = self.db.engine.commit(with_gid).await {
                    // Keep it prepared: the coordinator will ask again.
                    *guard = Some(Slot::Prepared(ws));
                    return Err(e.into());
                }
                self.reserved.lock().release(gid, &ws);
                self.release_prepared_locks(gid);
                let removed = self.log.resolved(gid).await;
                if let Err(e) = &removed {
                    // Before `recording` goes: no prune may pass in between.
                    self.keep_gids
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%gid, error = %e, "cannot record a prepared transaction's commit");
                }
                drop(recording);
                drop(guard);
                self.forget(gid);
                if removed.is_ok() {
                    self.prune_gids().await;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Empties [`COMMITTED_TABLE`] every [`PRUNE_GIDS_EVERY`] prepared
    /// commits, while no commit is between its storage commit and its
    /// `Resolved` record: once the log is compacted, no record of any
    /// transaction in the table is left.
    /// Without it the table would grow by a row per distributed commit
    /// until the worker restarts. Best effort: a failure waits for the
    /// next round.
    async fn prune_gids(&self) {
        use std::sync::atomic::Ordering;
        if self.gids_recorded.fetch_add(1, Ordering::Relaxed) + 1 < PRUNE_GIDS_EVERY {
            return;
        }
        let _alone = self.gid_rows.write().await;
        if self.gids_recorded.swap(0, Ordering::Relaxed) < PRUNE_GIDS_EVERY
            || self.keep_gids.load(Ordering::Relaxed)
        {
            return;
        }
        let emptied = match self.log.compact().await {
            Ok(()) => empty_committed_gids(&self.db)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = emptied {
            tracing::warn!(error = %e, "cannot empty the committed-gid table; retrying later");
            self.gids_recorded
                .fetch_add(PRUNE_GIDS_EVERY, Ordering::Relaxed);
        }
    }

    fn record_gid(&self, ws: &mut WriteSet, gid: &str) -> Result<(), SqlError> {
        let snap = self.db.engine.snapshot();
        let t = snap
            .table_by_name(COMMITTED_TABLE)
            .ok_or_else(|| SqlError::new("XX000", "the committed-gid table is missing"))?;
        let schema = Arc::new(Schema::new(vec![Field::new("gid", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![gid]))])
            .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        ws.tables.entry(t.meta.id).or_default().inserts.push(batch);
        Ok(())
    }

    /// Forgets `gid` and its writes (also a prepared one).
    pub async fn abort(&self, gid: &str) -> Result<(), SqlError> {
        check_gid(gid)?;
        if let Some(slot) = self.slot(gid, false) {
            let mut guard = slot.lock().await;
            if let Some(Slot::Prepared(ws)) = guard.take() {
                self.reserved.lock().release(gid, &ws);
                self.release_prepared_locks(gid);
                self.log
                    .resolved(gid)
                    .await
                    .map_err(|e| SqlError::new("58030", e.to_string()))?;
            }
        }
        self.forget(gid);
        Ok(())
    }

    /// Every transaction this worker holds.
    pub async fn list(&self) -> Vec<TxnEntry> {
        let slots: Vec<_> = self
            .slots
            .lock()
            .iter()
            .map(|(g, s)| (g.clone(), s.clone()))
            .collect();
        let mut out = Vec::new();
        for (gid, slot) in slots {
            let prepared = match slot.try_lock() {
                Ok(g) => matches!(g.as_ref(), Some(Slot::Prepared(_))),
                // Busy: a statement is running in it, so it is open.
                Err(_) => false,
            };
            out.push(TxnEntry { gid, prepared });
        }
        out.sort_by(|a, b| a.gid.cmp(&b.gid));
        out
    }
}

/// Empties [`COMMITTED_TABLE`] (nothing to do when it is empty).
async fn empty_committed_gids(db: &Database) -> Result<(), StorageError> {
    let snap = db.engine.snapshot();
    let Some(t) = snap.table_by_name(COMMITTED_TABLE) else {
        return Ok(());
    };
    if t.live_rows() == 0 {
        return Ok(());
    }
    let mut ws = WriteSet::default();
    ws.tables.insert(
        t.meta.id,
        TableWrites {
            truncate: true,
            ..Default::default()
        },
    );
    db.engine.commit(ws).await.map(|_| ())
}

fn prepared_already(gid: &str) -> SqlError {
    SqlError::new(
        "25000",
        format!("transaction {gid} is prepared and takes no more writes"),
    )
}

/// Runs one query in `session` and collects its rows.
pub async fn run_query(
    session: &mut Session,
    stmt: &datafusion::sql::sqlparser::ast::Statement,
) -> Result<Vec<RecordBatch>, SqlError> {
    match session.execute(stmt, None, None).await? {
        crate::sql::Outcome::Rows { df, .. } => Ok(df.collect().await?),
        crate::sql::Outcome::Batches { batches, .. } => Ok(batches),
        _ => Err(SqlError::syntax("a fragment must be a query")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::DatabaseOptions;
    use crate::storage::{Engine, EngineOptions};

    async fn open(dir: &Path) -> (Arc<Database>, Arc<WorkerTxns>) {
        let engine = Engine::open(&dir.join("db"), EngineOptions::default()).unwrap();
        let db = Database::open(engine, DatabaseOptions::default())
            .await
            .unwrap();
        let txns = WorkerTxns::open(db.clone(), dir).await.unwrap();
        (db, txns)
    }

    fn rows(db: &Database, table: &str) -> usize {
        db.engine
            .snapshot()
            .table_by_name(table)
            .map_or(0, |t| t.live_rows())
    }

    #[tokio::test]
    async fn committed_gids_are_pruned_and_recovery_still_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let (db, txns) = open(dir.path()).await;
        let t = TableMeta {
            id: 0,
            name: "t".into(),
            columns: vec![ColumnMeta {
                name: "id".into(),
                ty: SqlType::Int4,
                nullable: false,
                default: None,
            }],
            primary_key: Some(vec![0]),
            uniques: vec![],
        };
        db.engine.create_table(t, false).await.unwrap();
        let n = PRUNE_GIDS_EVERY + 5;
        for i in 0..n {
            let gid = format!("g-{i}");
            txns.exec(&gid, &format!("INSERT INTO t VALUES ({i})"), None)
                .await
                .unwrap();
            txns.prepare(&gid).await.unwrap();
            txns.commit(&gid).await.unwrap();
        }
        assert_eq!(rows(&db, "t"), n);
        // Emptied once at PRUNE_GIDS_EVERY: only the later ones are left.
        assert_eq!(rows(&db, COMMITTED_TABLE), 5);
        // The log was compacted with the table: nothing resolved is left.
        assert_eq!(txns.log.counts().await, (0, 1));
        // One prepared and not decided when the worker stops, one
        // committed whose `Resolved` record a crash lost (its prepare is
        // recorded again after its commit, as if the record never landed).
        txns.exec("g-open", &format!("INSERT INTO t VALUES ({n})"), None)
            .await
            .unwrap();
        txns.prepare("g-open").await.unwrap();
        txns.exec("g-done", &format!("INSERT INTO t VALUES ({})", n + 1), None)
            .await
            .unwrap();
        txns.prepare("g-done").await.unwrap();
        txns.commit("g-done").await.unwrap();
        let t_id = db.engine.snapshot().table_by_name("t").unwrap().meta.id;
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        let again = RecordBatch::try_new(
            schema,
            vec![Arc::new(datafusion::arrow::array::Int32Array::from(vec![
                n as i32 + 1,
            ]))],
        )
        .unwrap();
        let mut lost = WriteSet::default();
        lost.tables.entry(t_id).or_default().inserts.push(again);
        txns.log.prepare("g-done", &lost).await.unwrap();
        assert_eq!(txns.log.counts().await.0, 2);
        drop((txns, db));
        let (db, txns) = open(dir.path()).await;
        // g-done is not applied twice; g-open waits for its decision.
        assert_eq!(rows(&db, "t"), n + 1);
        assert_eq!(txns.log.counts().await, (1, 1));
        let open_now: Vec<_> = txns.list().await.into_iter().map(|t| t.gid).collect();
        assert_eq!(open_now, vec!["g-open".to_string()]);
        txns.commit("g-open").await.unwrap();
        assert_eq!(rows(&db, "t"), n + 2);
    }
}
