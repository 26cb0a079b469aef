//! The engine: commit, snapshot, recovery.
//!
//! Commit protocol: under the commit lock the write set is validated against
//! the newest version (`head`): deleted rows must still be live (else
//! SQLSTATE 40001), unique keys must not collide, NOT NULL holds. The
//! operations get the next LSN, are applied to a new head version, and are
//! handed to the WAL writer, all still under the lock so LSN order, WAL order
//! and version order agree. The committer then waits, outside the lock, until
//! the WAL writer has fsynced its record; the writer publishes each version
//! to readers only once it is durable. Checkpoints live in `checkpoint.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use parking_lot::{Mutex, RwLock};

use super::codec::{self, Op, StagedRows};
use super::index::TableIndexes;
use super::parts;
use super::table::{check_not_null, chunk, with_rowids, Segment, TableData, TableMeta, TAIL_ROWS};
use super::wal::{self, WalObserver, WalWriter};
use super::StorageError;

/// Options of the engine.
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Receives WAL fsync counts and bytes (metrics).
    pub observer: Option<Arc<dyn WalObserver>>,
}

/// One immutable version of the whole database.
#[derive(Debug, Clone, Default)]
pub struct DbVersion {
    pub lsn: u64,
    pub tables: HashMap<u64, Arc<TableData>>,
    pub names: BTreeMap<String, u64>,
    pub next_table_id: u64,
}

impl DbVersion {
    pub fn table_by_name(&self, name: &str) -> Option<&Arc<TableData>> {
        self.names.get(name).and_then(|id| self.tables.get(id))
    }
}

/// Changes a transaction makes to one table.
#[derive(Debug, Default, Clone)]
pub struct TableWrites {
    /// When set, every row visible before is removed first.
    pub truncate: bool,
    /// Committed rows to delete, by row id.
    pub deletes: BTreeSet<u64>,
    /// New rows (user columns only; row ids are assigned at commit).
    pub inserts: Vec<RecordBatch>,
    /// The leading inserted rows that were logged ahead (see
    /// [`Engine::stage`]).
    pub staged: Option<StagedWrites>,
}

/// Rows of [`TableWrites::inserts`] already in the WAL as staged records.
#[derive(Debug, Clone)]
pub struct StagedWrites {
    pub ticket: Arc<StageTicket>,
    /// The first `rows` inserted rows, exactly as staged.
    pub rows: u64,
}

/// A transaction's licence to log rows ahead of its commit. While it lives,
/// checkpoints keep the WAL files its staged records may be in; dropping it
/// (commit or abort) releases them.
#[derive(Debug)]
pub struct StageTicket {
    txn: u64,
    open: Arc<Mutex<BTreeMap<u64, u64>>>,
    bytes: AtomicU64,
    rows: AtomicU64,
}

impl StageTicket {
    /// The staging transaction's id.
    pub fn txn(&self) -> u64 {
        self.txn
    }

    /// Rows staged under this ticket so far. A commit names a prefix of
    /// them (a rolled-back statement may have staged more).
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

impl Drop for StageTicket {
    fn drop(&mut self) {
        self.open.lock().remove(&self.txn);
    }
}

impl TableWrites {
    pub fn is_empty(&self) -> bool {
        !self.truncate && self.deletes.is_empty() && self.inserts.is_empty()
    }
}

/// The changes of a whole transaction, keyed by table id.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    pub tables: BTreeMap<u64, TableWrites>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.is_empty())
    }
}

pub(super) struct Head {
    pub(super) version: Arc<DbVersion>,
    pub(super) next_lsn: u64,
}

/// The storage engine of one data directory.
pub struct Engine {
    /// Row locks of open transactions ([`super::locks`]).
    pub locks: super::locks::RowLocks,
    /// Ids of transactions, as lock owners.
    next_txn: AtomicU64,
    pub(super) root: PathBuf,
    pub(super) head: Mutex<Head>,
    published: Arc<RwLock<Arc<DbVersion>>>,
    pending: Arc<Mutex<VecDeque<Arc<DbVersion>>>>,
    pub(super) wal: WalWriter,
    indexes: RwLock<HashMap<u64, Arc<TableIndexes>>>,
    pub(super) checkpoint_lock: Mutex<()>,
    pub(super) next_part_id: AtomicU64,
    pub(super) wal_bytes: AtomicU64,
    pub(super) disk_bytes: AtomicU64,
    /// Open staging transactions: id -> the head's next LSN when it began.
    pub(super) stages: Arc<Mutex<BTreeMap<u64, u64>>>,
    next_stage_txn: AtomicU64,
}

impl Engine {
    /// Opens a data directory: loads the manifest's parts, replays the WAL
    /// (cutting a torn tail) and starts the WAL writer.
    pub fn open(root: &Path, opts: EngineOptions) -> Result<Arc<Engine>, StorageError> {
        std::fs::create_dir_all(root).map_err(|source| StorageError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let manifest = parts::read_manifest(root)?.unwrap_or_default();
        let mut version = DbVersion {
            lsn: manifest.checkpoint_lsn,
            next_table_id: manifest.next_table_id.max(1),
            ..Default::default()
        };
        let mut indexes = HashMap::new();
        for entry in &manifest.tables {
            let meta = Arc::new(entry.meta.clone());
            let mut data = TableData::new(meta.clone());
            data.next_rowid = entry.next_rowid;
            for p in &entry.parts {
                let stored = meta.stored_schema();
                let batches = parts::read_part(&parts::part_path(root, meta.id, p.id))?
                    .into_iter()
                    .map(|b| RecordBatch::try_new(stored.clone(), b.columns().to_vec()))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut seg = Segment::new(batches, Some(p.id))?;
                if let Some(del) = &p.deletes {
                    let ids = parts::read_deletes(&parts::table_dir(root, meta.id).join(del))?;
                    let pos: Vec<_> = ids.iter().filter_map(|&r| seg.locate(r)).collect();
                    seg = seg.with_deleted(&pos);
                }
                data.segments.push(Arc::new(seg));
            }
            let idx = TableIndexes::new(&meta)?;
            for b in data.live_batches()? {
                idx.add_batch(&b)?;
            }
            indexes.insert(meta.id, Arc::new(idx));
            version.names.insert(meta.name.clone(), meta.id);
            version.tables.insert(meta.id, Arc::new(data));
        }

        // Replay the WAL past the checkpoint.
        let wal_dir = root.join("wal");
        let files = wal::list_files(&wal_dir)?;
        let mut wal_bytes = 0u64;
        let mut staged = Staged::default();
        let nfiles = files.len();
        for (i, (_, path)) in files.iter().enumerate() {
            let (records, torn) = wal::read_file(path)?;
            if torn {
                tracing::warn!(file = %path.display(), "cut a torn WAL tail");
                if i + 1 < nfiles {
                    return Err(StorageError::Corrupt(format!(
                        "WAL file {} is damaged before its end and newer files follow",
                        path.display()
                    )));
                }
            }
            for rec in records {
                wal_bytes += rec.payload.len() as u64;
                let ops = codec::decode(&rec.payload)?;
                if rec.lsn == 0 {
                    staged.keep(ops);
                    continue;
                }
                if rec.lsn <= version.lsn {
                    // Already in the parts; its staged records may be gone
                    // with the WAL files a checkpoint removed.
                    staged.forget(&ops);
                    continue;
                }
                let ops = staged.resolve(&version, ops)?;
                let ops = with_current_schemas(&version, ops)?;
                version = apply(&version, &ops, rec.lsn, &mut indexes)?;
            }
        }
        let next_stage_txn = staged.max_txn + 1;
        drop(staged);
        let next_lsn = version.lsn + 1;
        let version = Arc::new(version);
        let published = Arc::new(RwLock::new(version.clone()));
        let pending: Arc<Mutex<VecDeque<Arc<DbVersion>>>> = Arc::new(Mutex::new(VecDeque::new()));
        let (pub2, pend2) = (published.clone(), pending.clone());
        let hook = Box::new(move |lsn: u64| {
            let mut q = pend2.lock();
            let mut newest = None;
            while q.front().is_some_and(|v| v.lsn <= lsn) {
                newest = q.pop_front();
            }
            if let Some(v) = newest {
                *pub2.write() = v;
            }
        });
        let wal = WalWriter::start(&wal_dir, next_lsn, hook, opts.observer.clone())?;
        Ok(Arc::new(Engine {
            root: root.to_path_buf(),
            head: Mutex::new(Head { version, next_lsn }),
            published,
            pending,
            wal,
            indexes: RwLock::new(indexes),
            checkpoint_lock: Mutex::new(()),
            next_part_id: AtomicU64::new(manifest.next_part_id.max(1)),
            wal_bytes: AtomicU64::new(wal_bytes),
            disk_bytes: AtomicU64::new(0),
            stages: Arc::default(),
            next_stage_txn: AtomicU64::new(next_stage_txn),
            locks: Default::default(),
            next_txn: AtomicU64::new(1),
        }))
    }

    /// A new transaction id (a lock owner).
    pub fn new_txn_id(&self) -> u64 {
        self.next_txn.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a staging transaction (see [`Engine::stage`]).
    pub fn begin_stage(&self) -> Arc<StageTicket> {
        let txn = self.next_stage_txn.fetch_add(1, Ordering::Relaxed);
        // Under the commit lock, so that a checkpoint either sees this
        // ticket or rotated the WAL before any of its records.
        let head = self.head.lock();
        self.stages.lock().insert(txn, head.next_lsn);
        Arc::new(StageTicket {
            txn,
            open: self.stages.clone(),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        })
    }

    /// Logs rows of an uncommitted transaction ahead of its commit: `ipc`
    /// is [`codec::ipc_stream`] of user batches of `table`. They count only
    /// if the commit names them ([`TableWrites::staged`]); the caller keeps
    /// the batches as its pending inserts, in staging order.
    pub fn stage(
        &self,
        ticket: &StageTicket,
        table: u64,
        rows: u64,
        ipc: Vec<u8>,
    ) -> Result<(), StorageError> {
        let payload = codec::stage_payload(ticket.txn, table, ipc)?;
        let bytes: usize = payload.iter().map(Vec::len).sum();
        self.wal.stage(payload)?;
        ticket.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        ticket.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `head` to readers when no commit is still waiting for its
    /// WAL record (so `head` is durable). Called with the head lock held.
    pub(super) fn publish_if_durable(&self, head: &Arc<DbVersion>) {
        let pending = self.pending.lock();
        if pending.is_empty() {
            *self.published.write() = head.clone();
        }
    }

    /// The newest durable version: a consistent snapshot.
    pub fn snapshot(&self) -> Arc<DbVersion> {
        self.published.read().clone()
    }

    /// The unique indexes of a table.
    pub fn indexes(&self, table: u64) -> Option<Arc<TableIndexes>> {
        self.indexes.read().get(&table).cloned()
    }

    /// WAL bytes written since the last checkpoint.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of parts on disk as of the last checkpoint.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Commits operations computed from the head version under the commit
    /// lock, and waits until they are durable. Returns the new version.
    pub(super) async fn commit_with<F>(&self, build: F) -> Result<Arc<DbVersion>, StorageError>
    where
        F: FnOnce(&DbVersion, &HashMap<u64, Arc<TableIndexes>>) -> Result<Vec<Op>, StorageError>,
    {
        let (rx, version) = {
            let mut head = self.head.lock();
            let ops = {
                let idx = self.indexes.read();
                build(&head.version, &idx)?
            };
            if ops.is_empty() {
                return Ok(head.version.clone());
            }
            let lsn = head.next_lsn;
            let payload = codec::encode(&ops)?;
            let bytes: usize = payload.iter().map(Vec::len).sum();
            let version = {
                let mut idx = self.indexes.write();
                Arc::new(apply(&head.version, &ops, lsn, &mut idx)?)
            };
            self.pending.lock().push_back(version.clone());
            let rx = self.wal.submit(lsn, payload)?;
            self.wal_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            head.version = version.clone();
            head.next_lsn = lsn + 1;
            (rx, version)
        };
        rx.await.map_err(|_| StorageError::ShuttingDown)??;
        Ok(version)
    }

    /// Creates a table; its id is assigned here.
    pub async fn create_table(
        &self,
        mut meta: TableMeta,
        if_not_exists: bool,
    ) -> Result<bool, StorageError> {
        let mut created = true;
        self.commit_with(|head, _| {
            if head.names.contains_key(&meta.name) {
                if if_not_exists {
                    created = false;
                    return Ok(vec![]);
                }
                return Err(StorageError::DuplicateTable(meta.name.clone()));
            }
            meta.id = head.next_table_id;
            Ok(vec![Op::CreateTable(meta.clone())])
        })
        .await?;
        Ok(created)
    }

    /// Drops a table by name.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool, StorageError> {
        let mut dropped = true;
        self.commit_with(|head, _| match head.names.get(name) {
            Some(id) => Ok(vec![Op::DropTable { table: *id }]),
            None if if_exists => {
                dropped = false;
                Ok(vec![])
            }
            None => Err(StorageError::UndefinedTable(name.to_string())),
        })
        .await?;
        Ok(dropped)
    }

    /// Replaces a table's definition (ALTER TABLE). Existing rows take the
    /// value of each new column from `fill` (one row over the new user
    /// columns), or NULL; a new NOT NULL column that would hold NULL in an
    /// existing row is refused.
    pub async fn alter_table(
        &self,
        meta: TableMeta,
        mapping: Vec<Option<usize>>,
        fill: Option<RecordBatch>,
    ) -> Result<(), StorageError> {
        self.commit_with(|head, _| {
            let Some(old) = head.tables.get(&meta.id) else {
                return Err(StorageError::UndefinedTable(meta.name.clone()));
            };
            if old.live_rows() > 0 {
                if let Some(col) = super::table::unfilled_not_null(&meta, &mapping, fill.as_ref()) {
                    return Err(StorageError::NullsInNewColumn {
                        table: meta.name.clone(),
                        column: col.name.clone(),
                    });
                }
            }
            Ok(vec![Op::AlterTable {
                meta,
                mapping,
                fill,
            }])
        })
        .await?;
        Ok(())
    }

    /// Checks NOT NULL and unique keys of pending writes against `version`
    /// (statement time); commit checks again against the newest version.
    pub fn precheck(
        &self,
        version: &DbVersion,
        table: u64,
        w: &TableWrites,
    ) -> Result<(), StorageError> {
        let Some(t) = version.tables.get(&table) else {
            return Ok(());
        };
        for b in &w.inserts {
            check_not_null(&t.meta, b)?;
        }
        match self.indexes(table) {
            Some(idx) if idx.keys.iter().all(|k| k.usable_at(version.lsn)) => {
                check_unique(t, &idx, w, &w.inserts)
            }
            _ => Ok(()),
        }
    }

    /// Validates and commits a transaction's row changes.
    pub async fn commit(&self, ws: WriteSet) -> Result<Arc<DbVersion>, StorageError> {
        if ws.is_empty() {
            return Ok(self.snapshot());
        }
        let staged_bytes: u64 = ws
            .tables
            .values()
            .filter_map(|w| w.staged.as_ref())
            .map(|s| s.ticket.bytes.load(Ordering::Relaxed))
            .sum();
        let v = self
            .commit_with(|head, indexes| validate_writes(head, indexes, ws))
            .await?;
        self.wal_bytes.fetch_add(staged_bytes, Ordering::Relaxed);
        Ok(v)
    }
}

/// Checks a write set against `head` and turns it into operations.
fn validate_writes(
    head: &DbVersion,
    indexes: &HashMap<u64, Arc<TableIndexes>>,
    ws: WriteSet,
) -> Result<Vec<Op>, StorageError> {
    let mut ops = Vec::new();
    for (id, w) in ws.tables {
        let t = head
            .tables
            .get(&id)
            .ok_or_else(|| StorageError::UndefinedTable(format!("#{id}")))?;
        if w.truncate {
            ops.push(Op::Truncate { table: id });
        } else if !w.deletes.is_empty() {
            if w.deletes.iter().any(|&r| !t.is_live(r)) {
                return Err(StorageError::SerializationFailure);
            }
            ops.push(Op::Delete {
                table: id,
                rowids: w.deletes.iter().copied().collect(),
            });
        }
        if w.inserts.is_empty() {
            continue;
        }
        let schema = t.meta.schema();
        let stored_schema = t.meta.stored_schema();
        let mut next = t.next_rowid;
        let staged = w.staged.as_ref().map(|s| StagedRows {
            txn: s.ticket.txn,
            rows: s.rows,
            first_rowid: next,
        });
        let mut batches = Vec::new();
        for b in &w.inserts {
            if b.schema().fields() != schema.fields() {
                // The table changed shape since the statement was planned.
                return Err(StorageError::SerializationFailure);
            }
            check_not_null(&t.meta, b)?;
            for piece in chunk(b) {
                let n = piece.num_rows() as u64;
                batches.push(with_rowids(&piece, &stored_schema, next)?);
                next += n;
            }
        }
        if let Some(idx) = indexes.get(&id) {
            check_unique(t, idx, &w, &batches)?;
        }
        ops.push(Op::Insert {
            table: id,
            batches,
            staged,
        });
    }
    Ok(ops)
}

fn check_unique(
    t: &TableData,
    idx: &TableIndexes,
    w: &TableWrites,
    batches: &[RecordBatch],
) -> Result<(), StorageError> {
    for (k, key) in idx.keys.iter().enumerate() {
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        for b in batches {
            let rows = key.encode(b)?;
            for (i, row) in rows.iter().enumerate() {
                if key.has_null(b, i) {
                    continue;
                }
                let bytes = row.as_ref();
                let clash = !seen.insert(bytes.into())
                    || (!w.truncate
                        && key
                            .newest(bytes, |r| t.is_live(r))
                            .is_some_and(|r| !w.deletes.contains(&r)));
                if clash {
                    let names: Vec<&str> = key
                        .columns
                        .iter()
                        .map(|&c| t.meta.columns[c].name.as_str())
                        .collect();
                    let values: Vec<String> = key
                        .columns
                        .iter()
                        .map(|&c| array_value_to_string(b.column(c), i).unwrap_or_default())
                        .collect();
                    let is_pk = k == 0 && t.meta.primary_key.is_some();
                    let constraint = if is_pk {
                        format!("{}_pkey", t.meta.name)
                    } else {
                        format!("{}_{}_key", t.meta.name, names.join("_"))
                    };
                    return Err(StorageError::UniqueViolation {
                        table: t.meta.name.clone(),
                        constraint,
                        detail: format!(
                            "Key ({})=({}) already exists.",
                            names.join(", "),
                            values.join(", ")
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Applies committed operations to a version, producing the next one, and
/// keeps the unique indexes in step. Used by commit and by WAL replay.
pub(super) fn apply(
    base: &DbVersion,
    ops: &[Op],
    lsn: u64,
    indexes: &mut HashMap<u64, Arc<TableIndexes>>,
) -> Result<DbVersion, StorageError> {
    let mut v = base.clone();
    v.lsn = lsn;
    for op in ops {
        match op {
            Op::CreateTable(meta) => {
                let meta = Arc::new(meta.clone());
                v.names.insert(meta.name.clone(), meta.id);
                v.next_table_id = v.next_table_id.max(meta.id + 1);
                indexes.insert(meta.id, Arc::new(TableIndexes::new(&meta)?));
                v.tables.insert(meta.id, Arc::new(TableData::new(meta)));
            }
            Op::DropTable { table } => {
                if let Some(t) = v.tables.remove(table) {
                    v.names.remove(&t.meta.name);
                }
                indexes.remove(table);
            }
            Op::AlterTable {
                meta,
                mapping,
                fill,
            } => {
                let Some(old) = v.tables.get(&meta.id).cloned() else {
                    continue;
                };
                let meta = Arc::new(meta.clone());
                let stored = meta.stored_schema();
                let mut data = TableData::new(meta.clone());
                data.next_rowid = old.next_rowid;
                for seg in &old.segments {
                    let mut s = (**seg).clone();
                    s.part = None;
                    s.batches = seg
                        .batches
                        .iter()
                        .map(|b| super::table::remap(b, mapping, fill.as_ref(), &stored))
                        .collect::<Result<_, _>>()?;
                    data.segments.push(Arc::new(s));
                }
                if old.meta.name != meta.name {
                    v.names.remove(&old.meta.name);
                    v.names.insert(meta.name.clone(), meta.id);
                }
                let idx = TableIndexes::new(&meta)?;
                for b in data.live_batches()? {
                    idx.add_batch(&b)?;
                }
                indexes.insert(meta.id, Arc::new(idx));
                v.tables.insert(meta.id, Arc::new(data));
            }
            Op::Stage { .. } => {}
            Op::Insert { table, batches, .. } => {
                let Some(t) = v.tables.get(table) else {
                    continue;
                };
                let mut t = (**t).clone();
                let seg = Segment::new(batches.clone(), None)?;
                if let Some(last) = seg.last_rowid() {
                    t.next_rowid = t.next_rowid.max(last + 1);
                }
                if let Some(idx) = indexes.get(table) {
                    for b in &seg.batches {
                        idx.add_batch(b)?;
                    }
                }
                match t.segments.last_mut() {
                    _ if seg.rows == 0 => {}
                    Some(tail) if tail.part.is_none() && tail.rows + seg.rows <= TAIL_ROWS => {
                        *tail = Arc::new(tail.appended(&seg.batches)?);
                    }
                    _ => t.segments.push(Arc::new(seg)),
                }
                v.tables.insert(*table, Arc::new(t));
            }
            Op::Delete { table, rowids } => {
                let Some(t) = v.tables.get(table) else {
                    continue;
                };
                let mut t = (**t).clone();
                let mut by_seg: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
                for &r in rowids {
                    if let Some((si, bi, ri)) = t.locate(r) {
                        by_seg.entry(si).or_default().push((bi, ri));
                    }
                }
                for (si, pos) in by_seg {
                    t.segments[si] = Arc::new(t.segments[si].with_deleted(&pos));
                }
                v.tables.insert(*table, Arc::new(t));
            }
            Op::Truncate { table } => {
                let Some(t) = v.tables.get(table) else {
                    continue;
                };
                // Index entries of the removed rows stay until a checkpoint
                // prunes them: older snapshots may still look them up.
                let mut t = (**t).clone();
                t.segments.clear();
                v.tables.insert(*table, Arc::new(t));
            }
        }
    }
    Ok(v)
}

/// Logged batches under the schema their table has now (the field metadata
/// derived from column types may have changed since they were logged).
fn with_current_schemas(v: &DbVersion, ops: Vec<Op>) -> Result<Vec<Op>, StorageError> {
    ops.into_iter()
        .map(|op| match op {
            Op::Insert {
                table,
                batches,
                staged,
            } => {
                let batches = match v.tables.get(&table) {
                    Some(t) => {
                        let stored = t.meta.stored_schema();
                        batches
                            .into_iter()
                            .map(|b| RecordBatch::try_new(stored.clone(), b.columns().to_vec()))
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    None => batches,
                };
                Ok(Op::Insert {
                    table,
                    batches,
                    staged,
                })
            }
            other => Ok(other),
        })
        .collect()
}

/// Staged rows met during recovery, waiting for their commit record.
#[derive(Default)]
struct Staged {
    rows: HashMap<(u64, u64), Vec<RecordBatch>>,
    max_txn: u64,
}

impl Staged {
    fn keep(&mut self, ops: Vec<Op>) {
        for op in ops {
            if let Op::Stage {
                txn,
                table,
                batches,
            } = op
            {
                self.max_txn = self.max_txn.max(txn);
                self.rows.entry((txn, table)).or_default().extend(batches);
            }
        }
    }

    /// Drops the staged rows a checkpointed commit record names.
    fn forget(&mut self, ops: &[Op]) {
        for op in ops {
            if let Op::Insert {
                table,
                staged: Some(st),
                ..
            } = op
            {
                self.rows.remove(&(st.txn, *table));
            }
        }
    }

    /// Puts staged rows back into the inserts of a commit record (stored
    /// batches, row ids as the commit assigned them).
    fn resolve(&mut self, v: &DbVersion, ops: Vec<Op>) -> Result<Vec<Op>, StorageError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::Insert {
                table,
                batches,
                staged: Some(st),
            } = op
            else {
                out.push(op);
                continue;
            };
            let user = self.rows.remove(&(st.txn, table)).unwrap_or_default();
            let n: u64 = user.iter().map(|b| b.num_rows() as u64).sum();
            if n < st.rows {
                return Err(StorageError::Corrupt(format!(
                    "WAL: the commit of staging transaction {} names {} rows of table {table}, \
                     only {n} were staged",
                    st.txn, st.rows
                )));
            }
            // Rows staged by statements rolled back later follow the prefix.
            let user = codec::take_rows(&user, st.rows);
            let mut all = Vec::with_capacity(user.len() + batches.len());
            if let Some(t) = v.tables.get(&table) {
                let stored = t.meta.stored_schema();
                let user = user
                    .iter()
                    .map(|b| RecordBatch::try_new(t.meta.schema(), b.columns().to_vec()))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut next = st.first_rowid;
                for b in &user {
                    for piece in chunk(b) {
                        let n = piece.num_rows() as u64;
                        all.push(with_rowids(&piece, &stored, next)?);
                        next += n;
                    }
                }
            }
            all.extend(batches);
            out.push(Op::Insert {
                table,
                batches: all,
                staged: None,
            });
        }
        Ok(out)
    }
}
