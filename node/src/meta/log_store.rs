//! The durable Raft log and vote of the metadata group.
//!
//! Step in the flow: openraft hands every log entry to [`LogStore::append`]
//! before it counts it as replicated here, and reads entries back through a
//! [`LogReader`] to replicate them. Layout under `<data_dir>/raft/`:
//!
//! - `log/<first-index>.log`: the entries, framed and group-committed by the
//!   storage engine's WAL ([`crate::storage::wal`], ADR 0002), with the WAL's
//!   lsn = the Raft index and its payload = the JSON of the entry. `append`
//!   calls `LogFlushed::log_io_completed` only after the fsync.
//! - `meta.json`: the vote, the committed log id and the last purged log id,
//!   replaced atomically (temp file, fsync, rename, directory fsync).
//!
//! `truncate(i)` switches the writer to a new file `i.log` (deleting files
//! that start after `i`); on recovery a record whose index is not above the
//! previous one replaces the tail from that index, so entries written after
//! a truncation win over the ones they replaced. Files are read in name
//! order, which is also the order they were written in: the active file
//! always has the largest name. `purge` records the new `last_purged` first
//! and then deletes the files whose entries are all at or below it.
//!
//! Every entry since the last purge is also kept in memory (the metadata log
//! is short: snapshots purge it), shared with the readers.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use super::MetaError;
use crate::storage::wal::{self, WalError, WalWriter};

/// Name of the hard-state file inside the Raft directory.
const META_FILE: &str = "meta.json";
/// Name of the log directory inside the Raft directory.
const LOG_DIR: &str = "log";

/// What must survive a restart besides the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HardState {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// Entries since the last purge, shared by the store and its readers.
type Entries = Arc<RwLock<BTreeMap<u64, Entry>>>;

/// Progress of the flusher: how many appends are durable, and whether the
/// writer failed.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    seq: u64,
    failed: bool,
}

/// One append waiting for its fsync.
struct PendingFlush {
    seq: u64,
    durable: Option<oneshot::Receiver<Result<(), WalError>>>,
    callback: LogFlushed<TypeConfig>,
}

/// The Raft log storage of one coordinator.
pub struct LogStore {
    raft_dir: PathBuf,
    log_dir: PathBuf,
    entries: Entries,
    hard: HardState,
    writer: WalWriter,
    /// Log files by first index, ascending; the last one is being written.
    files: Vec<u64>,
    /// Appends submitted so far (sequence numbers, not Raft indexes).
    submitted: u64,
    flush_tx: mpsc::UnboundedSender<PendingFlush>,
    flushed: watch::Receiver<Flushed>,
}

/// A cheap, cloneable reader of the log (used by replication tasks).
#[derive(Clone)]
pub struct LogReader {
    entries: Entries,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> MetaError {
    MetaError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn write_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn write_vote_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

/// Replaces `path` with `bytes` atomically: temp file, fsync, rename,
/// directory fsync.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Fsyncs a directory so that created and deleted entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_hard_state(path: &Path) -> Result<HardState, MetaError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HardState::default()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads every log file in order and rebuilds the entries after
/// `last_purged`, applying the replace-the-tail rule. Cuts torn tails.
fn recover_entries(
    log_dir: &Path,
    last_purged: Option<&LogId>,
) -> Result<(BTreeMap<u64, Entry>, Vec<u64>), MetaError> {
    let wal_err = |e: WalError| corrupt(log_dir, e.to_string());
    let files = wal::list_files(log_dir).map_err(wal_err)?;
    let purged = last_purged.map(|l| l.index);
    let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
    for (_, path) in &files {
        let (records, torn) = wal::read_file(path).map_err(wal_err)?;
        if torn {
            tracing::warn!(file = %path.display(), "raft log: cut a torn tail");
        }
        for rec in records {
            let entry: Entry = serde_json::from_slice(&rec.payload)
                .map_err(|e| corrupt(path, format!("entry {}: {e}", rec.lsn)))?;
            if entry.log_id.index != rec.lsn {
                return Err(corrupt(
                    path,
                    format!("record {} holds entry {}", rec.lsn, entry.log_id.index),
                ));
            }
            let index = rec.lsn;
            // A later record at or below the last index was written after a
            // truncation: it replaces the tail from its index.
            entries.split_off(&index);
            if purged.is_some_and(|p| index <= p) {
                continue;
            }
            let expected = match (entries.last_key_value(), purged) {
                (Some((last, _)), _) => Some(last + 1),
                (None, Some(p)) => Some(p + 1),
                (None, None) => None,
            };
            if let Some(expected) = expected {
                if index != expected {
                    return Err(corrupt(
                        path,
                        format!("hole in the raft log: expected entry {expected}, found {index}"),
                    ));
                }
            }
            entries.insert(index, entry);
        }
    }
    Ok((entries, files.into_iter().map(|(first, _)| first).collect()))
}

fn read_range<RB: RangeBounds<u64>>(entries: &Entries, range: RB) -> Vec<Entry> {
    entries
        .read()
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl LogStore {
    /// Opens (or creates) the log under `raft_dir` (`<data_dir>/raft`).
    /// Must run inside a Tokio runtime: it starts the task that reports
    /// flushed appends to openraft.
    pub async fn open(raft_dir: &Path) -> Result<Self, MetaError> {
        let log_dir = raft_dir.join(LOG_DIR);
        fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        let hard = read_hard_state(&raft_dir.join(META_FILE))?;
        let (entries, mut files) = recover_entries(&log_dir, hard.last_purged.as_ref())?;
        // Keep appending to the newest file; start a new one named after the
        // next index when there is none.
        let active = match files.last() {
            Some(last) => *last,
            None => {
                let next = entries
                    .last_key_value()
                    .map(|(i, _)| i + 1)
                    .or(hard.last_purged.as_ref().map(|l| l.index + 1))
                    .unwrap_or(0);
                files.push(next);
                next
            }
        };
        let writer = WalWriter::start(&log_dir, active, Box::new(|_| {}), None)
            .map_err(|e| corrupt(&log_dir, e.to_string()))?;
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let (flushed_tx, flushed) = watch::channel(Flushed::default());
        tokio::spawn(run_flusher(flush_rx, flushed_tx));
        Ok(Self {
            raft_dir: raft_dir.to_path_buf(),
            log_dir,
            entries: Arc::new(RwLock::new(entries)),
            hard,
            writer,
            files,
            submitted: 0,
            flush_tx,
            flushed,
        })
    }

    /// Writes `meta.json` (off the async runtime's threads).
    async fn persist_hard_state(&self) -> io::Result<()> {
        let path = self.raft_dir.join(META_FILE);
        let bytes = serde_json::to_vec_pretty(&self.hard).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(io::Error::other)?
    }

    /// Waits until every append submitted so far is durable, so that a vote
    /// or purge is never written ahead of an earlier append.
    async fn wait_flushed(&mut self) -> io::Result<()> {
        let target = self.submitted;
        let state = self
            .flushed
            .wait_for(|f| f.failed || f.seq >= target)
            .await
            .map_err(|_| io::Error::other("raft log flusher stopped"))?;
        if state.failed {
            return Err(io::Error::other("an earlier raft log write failed"));
        }
        Ok(())
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .read()
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.hard.last_purged)
    }
}

/// Reports appends to openraft in submission order, once each is durable.
async fn run_flusher(
    mut rx: mpsc::UnboundedReceiver<PendingFlush>,
    flushed: watch::Sender<Flushed>,
) {
    while let Some(pending) = rx.recv().await {
        let result = match pending.durable {
            None => Ok(()),
            Some(durable) => match durable.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(io::Error::other(e)),
                Err(_) => Err(io::Error::other("WAL writer stopped")),
            },
        };
        flushed.send_modify(|f| {
            f.seq = pending.seq;
            f.failed |= result.is_err();
        });
        pending.callback.log_io_completed(result);
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.hard.last_purged,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.wait_flushed().await.map_err(write_vote_err)?;
        self.hard.vote = Some(*vote);
        self.persist_hard_state().await.map_err(write_vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.hard.vote)
    }

    /// Keeps the committed log id in memory only; it reaches `meta.json`
    /// with the next vote or purge. Writing it on every commit cost a
    /// temp file, two fsyncs and a rename per Raft entry, on the path of
    /// every two-phase commit decision. An older committed id on disk is
    /// safe: after a restart openraft applies the log up to it and the rest
    /// once the leader commits again (the state machine is rebuilt from
    /// its snapshot at start, so nothing is applied twice).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.hard.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.hard.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut durable = None;
        for entry in entries {
            let payload = serde_json::to_vec(&entry).map_err(write_logs_err)?;
            let index = entry.log_id.index;
            durable = Some(
                self.writer
                    .submit(index, vec![payload])
                    .map_err(write_logs_err)?,
            );
            // Readable as soon as append returns, durable once flushed.
            self.entries.write().insert(index, entry);
        }
        self.submitted += 1;
        let pending = PendingFlush {
            seq: self.submitted,
            durable,
            callback,
        };
        self.flush_tx
            .send(pending)
            .map_err(|_| write_logs_err(io::Error::other("raft log flusher stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        self.entries.write().split_off(&index);
        // Rotation is queued behind earlier appends: they are durable first.
        let rotated = self.writer.rotate_request(index).map_err(write_logs_err)?;
        rotated
            .await
            .map_err(|_| write_logs_err(io::Error::other("WAL writer stopped")))?
            .map_err(write_logs_err)?;
        // Files that start after `index` hold only removed entries.
        let stale: Vec<u64> = self.files.iter().copied().filter(|f| *f > index).collect();
        self.files.retain(|f| *f < index);
        self.files.push(index);
        let log_dir = self.log_dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            for first in stale {
                fs::remove_file(log_dir.join(format!("{first:020}.log")))?;
            }
            sync_dir(&log_dir)
        })
        .await
        .map_err(write_logs_err)?
        .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wait_flushed().await.map_err(write_logs_err)?;
        if self
            .hard
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        self.hard.last_purged = Some(log_id);
        self.persist_hard_state().await.map_err(write_logs_err)?;
        {
            let mut entries = self.entries.write();
            let keep = entries.split_off(&(log_id.index + 1));
            *entries = keep;
        }
        // File k holds live entries only below the first index of file k+1.
        let mut delete = Vec::new();
        while self.files.len() > 1 && self.files[1] <= log_id.index + 1 {
            delete.push(self.files.remove(0));
        }
        if delete.is_empty() {
            return Ok(());
        }
        let log_dir = self.log_dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            for first in delete {
                fs::remove_file(log_dir.join(format!("{first:020}.log")))?;
            }
            sync_dir(&log_dir)
        })
        .await
        .map_err(write_logs_err)?
        .map_err(write_logs_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::command::MetaCommand;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(MetaCommand::ForgetTxns {
                gids: vec![format!("t{term}-i{index}")],
            }),
        }
    }

    async fn indexes(store: &mut LogStore) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    async fn append_truncate_purge_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).await.unwrap();
            store
                .blocking_append((0..10).map(|i| entry(1, i)))
                .await
                .unwrap();
            // A new leader replaces 6.. with entries of term 2.
            store.truncate(log_id(1, 6)).await.unwrap();
            store
                .blocking_append((6..8).map(|i| entry(2, i)))
                .await
                .unwrap();
            store.purge(log_id(1, 2)).await.unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
            assert_eq!(state.last_log_id, Some(log_id(2, 7)));
        }
        let mut store = LogStore::open(dir.path()).await.unwrap();
        let expected: Vec<(u64, u64)> = (3..6).map(|i| (1, i)).chain([(2, 6), (2, 7)]).collect();
        assert_eq!(indexes(&mut store).await, expected);
        // Readers see the same entries, and a bounded range works.
        let mut reader = store.get_log_reader().await;
        let some = reader.try_get_log_entries(4..7).await.unwrap();
        assert_eq!(some.len(), 3);
        assert_eq!(some[2].log_id, log_id(2, 6));

        // Purging past the first file deletes it; the rest stays readable.
        store.purge(log_id(2, 6)).await.unwrap();
        let files = wal::list_files(&dir.path().join(LOG_DIR)).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        store.blocking_append([entry(2, 8)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(indexes(&mut store).await, vec![(2, 7), (2, 8)]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 6)));
    }

    #[tokio::test]
    async fn purge_everything_keeps_last_log_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).await.unwrap();
        store
            .blocking_append((0..3).map(|i| entry(1, i)))
            .await
            .unwrap();
        // As after installing a snapshot that is ahead of the log.
        store.purge(log_id(1, 9)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 9)));
        drop(store);
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert!(indexes(&mut store).await.is_empty());
        store.blocking_append([entry(1, 10)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(indexes(&mut store).await, vec![(1, 10)]);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).await.unwrap();
            store
                .blocking_append((0..5).map(|i| entry(1, i)))
                .await
                .unwrap();
        }
        let files = wal::list_files(&dir.path().join(LOG_DIR)).unwrap();
        let path = &files[files.len() - 1].1;
        let len = fs::metadata(path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(
            indexes(&mut store).await,
            (0..4).map(|i| (1, i)).collect::<Vec<_>>()
        );
        // The log continues cleanly after the cut.
        store.blocking_append([entry(2, 4)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).await.unwrap();
        let got = indexes(&mut store).await;
        assert_eq!(got.last(), Some(&(2, 4)));
        assert_eq!(got.len(), 5);
    }

    #[tokio::test]
    async fn vote_and_committed_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).await.unwrap();
            assert_eq!(store.read_vote().await.unwrap(), None);
            store
                .blocking_append([entry(1, 0), entry(1, 1)])
                .await
                .unwrap();
            store.save_committed(Some(log_id(1, 0))).await.unwrap();
            store.save_vote(&Vote::new(3, 1)).await.unwrap();
            // Kept in memory only until the next vote or purge.
            store.save_committed(Some(log_id(1, 1))).await.unwrap();
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1)));
        }
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        // Behind the truth, never ahead of it.
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 0)));
        assert!(!dir.path().join("meta.json.tmp").exists());
    }

    #[tokio::test]
    async fn a_hole_in_the_log_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).await.unwrap();
            store
                .blocking_append((0..3).map(|i| entry(1, i)))
                .await
                .unwrap();
            store.truncate(log_id(1, 3)).await.unwrap();
            store
                .blocking_append((3..5).map(|i| entry(1, i)))
                .await
                .unwrap();
        }
        // Lose the first file's tail: entry 2 goes missing before 3.
        let files = wal::list_files(&dir.path().join(LOG_DIR)).unwrap();
        let (records, _) = wal::read_file(&files[0].1).unwrap();
        assert_eq!(records.len(), 3);
        let len = fs::metadata(&files[0].1).unwrap().len();
        let last = (16 + records[2].payload.len()) as u64;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&files[0].1)
            .unwrap();
        f.set_len(len - last).unwrap();
        drop(f);
        match LogStore::open(dir.path()).await {
            Err(MetaError::Corrupt { reason, .. }) => assert!(reason.contains("hole"), "{reason}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a log with a hole opened"),
        }
    }
}
