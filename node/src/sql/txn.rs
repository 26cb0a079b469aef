//! Per-connection transaction state, shared with table providers through a
//! `SessionConfig` extension.
//!
//! Reads see the statement's snapshot (taken when the statement starts)
//! overlaid with this transaction's own pending writes. Pending inserts carry
//! provisional row ids (high bit set) so the transaction can delete or update
//! its own rows before they are committed; at commit they are stripped and
//! real row ids are assigned by the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use parking_lot::Mutex;

use crate::storage::engine::{StageTicket, StagedWrites};
use crate::storage::table::{rowids, with_rowids, TableData};
use crate::storage::{DbVersion, Engine, StorageError, TableWrites, WriteSet};

/// Row ids at or above this are provisional (not yet committed).
pub const PROVISIONAL: u64 = 1 << 63;

/// Pending changes to one table.
#[derive(Debug, Default, Clone)]
pub struct PendingTable {
    pub truncate: bool,
    pub deletes: BTreeSet<u64>,
    /// Stored batches with provisional row ids.
    pub inserts: Vec<RecordBatch>,
    /// The leading `inserts` already logged as staged WAL records.
    pub staged: Option<PendingStage>,
}

/// Which pending inserts were logged ahead of the commit.
#[derive(Debug, Clone)]
pub struct PendingStage {
    pub ticket: Arc<StageTicket>,
    /// The first `batches` entries of `inserts`, holding `rows` rows.
    pub batches: usize,
    pub rows: u64,
}

/// Everything a transaction has written so far.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    pub tables: BTreeMap<u64, PendingTable>,
    pub next_provisional: u64,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.tables
            .values()
            .all(|t| !t.truncate && t.deletes.is_empty() && t.inserts.is_empty())
    }

    /// Converts to the engine's write set (provisional row ids stripped).
    pub fn to_write_set(&self) -> WriteSet {
        let mut ws = WriteSet::default();
        for (id, t) in &self.tables {
            ws.tables.insert(*id, to_table_writes(t));
        }
        ws
    }
}

fn to_table_writes(t: &PendingTable) -> TableWrites {
    TableWrites {
        truncate: t.truncate,
        deletes: t.deletes.clone(),
        inserts: t
            .inserts
            .iter()
            .filter_map(|b| {
                let n = b.num_columns();
                b.project(&(0..n.saturating_sub(1)).collect::<Vec<_>>())
                    .ok()
            })
            .collect(),
        staged: t.staged.as_ref().map(|s| StagedWrites {
            ticket: s.ticket.clone(),
            rows: s.rows,
        }),
    }
}

/// Where a transaction context keeps its read point.
enum ReadPointSlot {
    /// A repeatable-read block's, kept to its end.
    Block(Arc<dyn std::any::Any + Send + Sync>),
    /// A statement's, alive while its plan is.
    Statement(std::sync::Weak<dyn std::any::Any + Send + Sync>),
}

/// The transaction context of one connection.
pub struct TxnContext {
    pub engine: Arc<Engine>,
    inner: Mutex<TxnInner>,
    /// The transaction's id as an owner of row locks (renewed when it ends).
    lock_owner: std::sync::atomic::AtomicU64,
    /// How long a lock wait may last; `None`: until the holder ends (a
    /// worker bounds it, see [`crate::dist::worker_txn`]).
    pub lock_wait_limit: parking_lot::Mutex<Option<std::time::Duration>>,
}

#[derive(Default)]
struct TxnInner {
    snapshot: Option<Arc<DbVersion>>,
    /// Repeatable read: keep the first statement's snapshot until the end.
    fixed: bool,
    pending: Pending,
    /// Writes to distributed tables (see [`crate::dist::coord`]).
    dist: Option<crate::dist::coord::DistTxn>,
    /// The next statement reads this version, not the newest (a worker
    /// running a fragment of a pinned read, see [`crate::dist::read_point`]).
    preset: Option<Arc<DbVersion>>,
    /// The statement's read point on the cluster (for the whole block in
    /// repeatable read), see [`crate::dist::read_point`]. Held strongly
    /// only in repeatable read: otherwise the statement's plan holds it, and
    /// its pins go when the plan does (an idle session pins nothing).
    read_point: Option<ReadPointSlot>,
}

impl Drop for TxnContext {
    /// A session that goes away ends its transaction: its locks go too.
    fn drop(&mut self) {
        self.engine.locks.release(self.lock_owner());
    }
}

impl std::fmt::Debug for TxnContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxnContext")
    }
}

impl TxnContext {
    pub fn new(engine: Arc<Engine>) -> Self {
        TxnContext {
            lock_owner: std::sync::atomic::AtomicU64::new(engine.new_txn_id()),
            engine,
            inner: Mutex::new(TxnInner::default()),
            lock_wait_limit: parking_lot::Mutex::new(None),
        }
    }

    /// Runs `f` on the distributed transaction, opening an empty one first.
    pub fn with_dist<R>(&self, f: impl FnOnce(&mut crate::dist::coord::DistTxn) -> R) -> R {
        let mut inner = self.inner.lock();
        f(inner.dist.get_or_insert_with(Default::default))
    }

    /// The global id of the distributed transaction, if it has one.
    pub fn dist_gid(&self) -> Option<String> {
        self.inner
            .lock()
            .dist
            .as_ref()
            .map(|d| d.gid.clone())
            .filter(|g| !g.is_empty())
    }

    /// How many distributed writes the transaction has made.
    /// True when the distributed transaction has written to one of the
    /// shard tables `tables`.
    pub fn dist_wrote_any(&self, tables: &std::collections::BTreeSet<String>) -> bool {
        self.inner
            .lock()
            .dist
            .as_ref()
            .is_some_and(|d| d.tables.iter().any(|t| tables.contains(t)))
    }

    pub fn dist_writes(&self) -> u64 {
        self.inner.lock().dist.as_ref().map_or(0, |d| d.writes)
    }

    /// Ends the distributed transaction, handing it to commit or abort.
    pub fn take_dist(&self) -> Option<crate::dist::coord::DistTxn> {
        self.inner
            .lock()
            .dist
            .take()
            .filter(|d| !d.nodes.is_empty())
    }

    /// Takes a fresh snapshot for the next statement.
    pub fn begin_statement(&self) {
        let mut inner = self.inner.lock();
        if let Some(v) = inner.preset.take() {
            inner.snapshot = Some(v);
            return;
        }
        if !(inner.fixed && inner.snapshot.is_some()) {
            inner.snapshot = Some(self.engine.snapshot());
            inner.read_point = None;
        }
    }

    /// The transaction's id as a lock owner.
    pub fn lock_owner(&self) -> u64 {
        self.lock_owner.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends the transaction's hold on its row locks: they are released, or
    /// (`keep`) handed to a new owner id that is returned (a prepared
    /// transaction keeps its rows until its decision). The context gets a
    /// fresh id for its next transaction.
    pub fn end_locks(&self, keep: bool) -> u64 {
        let fresh = self.engine.new_txn_id();
        let old = self
            .lock_owner
            .swap(fresh, std::sync::atomic::Ordering::Relaxed);
        if keep {
            let kept = self.engine.new_txn_id();
            self.engine.locks.transfer(old, kept);
            kept
        } else {
            self.engine.locks.release(old);
            old
        }
    }

    /// True when a statement of the block has taken its snapshot.
    pub fn has_snapshot(&self) -> bool {
        self.inner.lock().snapshot.is_some()
    }

    /// True in a repeatable-read block.
    pub fn snapshot_fixed(&self) -> bool {
        self.inner.lock().fixed
    }

    /// Makes the next statement read `version` (or forgets such a request).
    pub fn preset_snapshot(&self, version: Option<Arc<DbVersion>>) {
        self.inner.lock().preset = version;
    }

    /// The statement's read point, made by `make` (told whether it serves
    /// a whole repeatable-read block) on first use.
    pub fn statement_slot(
        &self,
        make: impl FnOnce(bool) -> Arc<dyn std::any::Any + Send + Sync>,
    ) -> Arc<dyn std::any::Any + Send + Sync> {
        let mut inner = self.inner.lock();
        let fixed = inner.fixed;
        let live = match &inner.read_point {
            Some(ReadPointSlot::Block(rp)) => Some(rp.clone()),
            Some(ReadPointSlot::Statement(w)) => w.upgrade(),
            None => None,
        };
        if let Some(rp) = live {
            return rp;
        }
        let rp = make(fixed);
        inner.read_point = Some(if fixed {
            ReadPointSlot::Block(rp.clone())
        } else {
            ReadPointSlot::Statement(Arc::downgrade(&rp))
        });
        rp
    }

    /// Switches repeatable-read mode on (at BEGIN) or off (at the end).
    pub fn fix_snapshot(&self, fixed: bool) {
        let mut inner = self.inner.lock();
        inner.fixed = fixed;
        inner.snapshot = None;
        inner.read_point = None;
    }

    /// The statement's snapshot (a fresh one if none was taken).
    pub fn snapshot(&self) -> Arc<DbVersion> {
        let mut inner = self.inner.lock();
        inner
            .snapshot
            .get_or_insert_with(|| self.engine.snapshot())
            .clone()
    }

    pub fn pending(&self) -> Pending {
        self.inner.lock().pending.clone()
    }

    pub fn pending_table(&self, id: u64) -> Option<PendingTable> {
        self.inner.lock().pending.tables.get(&id).cloned()
    }

    /// True when this transaction has written to `id` and not committed.
    pub fn has_pending(&self, id: u64) -> bool {
        self.inner
            .lock()
            .pending
            .tables
            .get(&id)
            .is_some_and(|t| t.truncate || !t.deletes.is_empty() || !t.inserts.is_empty())
    }

    pub fn set_pending(&self, p: Pending) {
        self.inner.lock().pending = p;
    }

    pub fn take_pending(&self) -> Pending {
        std::mem::take(&mut self.inner.lock().pending)
    }

    /// Adds user batches as pending inserts.
    pub fn add_inserts(
        &self,
        table: &TableData,
        batches: Vec<RecordBatch>,
    ) -> Result<(), StorageError> {
        let stored = table.meta.stored_schema();
        let mut inner = self.inner.lock();
        let mut next = inner.pending.next_provisional;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let n = b.num_rows() as u64;
            out.push(with_rowids(&b, &stored, PROVISIONAL + next)?);
            next += n;
        }
        inner.pending.next_provisional = next;
        let t = inner.pending.tables.entry(table.meta.id).or_default();
        t.inserts.extend(out);
        Ok(())
    }

    /// Adds user batches as pending inserts and logs them ahead of the
    /// commit: `ipc` is `codec::ipc_stream(&batches)`. When the table's
    /// pending inserts do not end in staged ones (rows were added without
    /// staging), the batches are only added.
    pub fn add_staged_inserts(
        &self,
        table: &TableData,
        batches: Vec<RecordBatch>,
        ipc: Vec<u8>,
    ) -> Result<(), StorageError> {
        let id = table.meta.id;
        // Staged rows must stay the leading inserts, in staging order, and
        // the ticket's rows must all be ours (a rolled-back statement's
        // staged rows would otherwise sit in the middle).
        let (stageable, ticket) = {
            let inner = self.inner.lock();
            match inner.pending.tables.get(&id) {
                None => (true, None),
                Some(t) => match &t.staged {
                    None => (t.inserts.is_empty(), None),
                    Some(s) => (
                        t.inserts.len() == s.batches && s.ticket.rows() == s.rows,
                        Some(s.ticket.clone()),
                    ),
                },
            }
        };
        if !stageable {
            return self.add_inserts(table, batches);
        }
        let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let count = batches.len();
        let ticket = ticket.unwrap_or_else(|| self.engine.begin_stage());
        self.engine.stage(&ticket, id, n, ipc)?;
        self.add_inserts(table, batches)?;
        let mut inner = self.inner.lock();
        let t = inner.pending.tables.entry(id).or_default();
        let st = t.staged.get_or_insert(PendingStage {
            ticket,
            batches: 0,
            rows: 0,
        });
        st.batches += count;
        st.rows += n;
        Ok(())
    }

    /// Deletes rows by id: committed ones become pending deletes, pending
    /// ones are dropped from the pending inserts.
    pub fn delete_rows(&self, table: u64, ids: &[u64]) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let t = inner.pending.tables.entry(table).or_default();
        let mut provisional = BTreeSet::new();
        for &r in ids {
            if r >= PROVISIONAL {
                provisional.insert(r);
            } else {
                t.deletes.insert(r);
            }
        }
        if !provisional.is_empty() {
            let mut kept = Vec::with_capacity(t.inserts.len());
            for b in &t.inserts {
                let rid = rowids(b)?;
                let mask: BooleanArray = rid
                    .values()
                    .iter()
                    .map(|r| Some(!provisional.contains(r)))
                    .collect();
                let f = filter_record_batch(b, &mask)?;
                if f.num_rows() > 0 {
                    kept.push(f);
                }
            }
            t.inserts = kept;
            // The staged rows no longer match: commit them inline.
            t.staged = None;
        }
        Ok(())
    }

    pub fn truncate(&self, table: u64) {
        let mut inner = self.inner.lock();
        let t = inner.pending.tables.entry(table).or_default();
        t.truncate = true;
        t.deletes.clear();
        t.inserts.clear();
        t.staged = None;
    }

    /// Checks unique keys of the pending inserts of `table` against the
    /// snapshot, so a duplicate fails the statement that caused it.
    pub fn precheck_unique(&self, table: u64) -> Result<(), StorageError> {
        let snap = self.snapshot();
        let Some(p) = self.pending_table(table) else {
            return Ok(());
        };
        self.engine.precheck(&snap, table, &to_table_writes(&p))
    }
}

/// Live stored batches of `t` as this transaction sees them.
pub fn visible_batches(
    t: &TableData,
    pending: Option<&PendingTable>,
) -> Result<Vec<RecordBatch>, StorageError> {
    let mut out = Vec::new();
    match pending {
        None => out.extend(t.live_batches()?),
        Some(p) => {
            if !p.truncate {
                for b in t.live_batches()? {
                    if p.deletes.is_empty() {
                        out.push(b);
                        continue;
                    }
                    let rid = rowids(&b)?;
                    let mask: BooleanArray = rid
                        .values()
                        .iter()
                        .map(|r| Some(!p.deletes.contains(r)))
                        .collect();
                    let f = filter_record_batch(&b, &mask)?;
                    if f.num_rows() > 0 {
                        out.push(f);
                    }
                }
            }
            out.extend(p.inserts.iter().cloned());
        }
    }
    Ok(out)
}
