//! The Raft state machine of the metadata group, and its snapshots.
//!
//! Step in the flow: openraft applies committed entries here. Each batch is
//! applied to a private copy of the [`MetaState`] with the pure
//! [`super::state::apply`], and the copy is then swapped into a
//! `RwLock<Arc<MetaState>>`; readers (the planner, `pg_dist_*`) take the
//! `Arc` ([`MetaSnapshot`]) and never wait for a write.
//!
//! The state itself is not persisted on apply; snapshots are. A snapshot is
//! the file `raft/snapshots/<term>-<index>-<n>.snap`:
//! `[meta length: u32 LE][SnapshotMeta JSON][MetaState JSON][crc32: u32 LE]`,
//! the crc covering everything before it. It is written to a temp file,
//! fsynced and renamed, and only the newest (largest `n`) is kept. On start
//! the state machine loads the newest snapshot and openraft re-applies the
//! log after it (up to the persisted `committed`). The data openraft ships
//! to a follower is the state JSON alone; `install_snapshot` persists it
//! before swapping the state.
//!
//! This module knows nothing of the transport.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};

use super::command::{apply, MetaResponse};
use super::log_store::{sync_dir, write_atomic};
use super::state::MetaState;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::MetaError;

/// What readers hold: the catalogue as of some applied index.
pub type MetaSnapshot = Arc<MetaState>;

/// Name of the snapshot directory inside the Raft directory.
const SNAPSHOT_DIR: &str = "snapshots";
const SNAPSHOT_EXT: &str = "snap";

/// The published state, shared by the state machine and readers.
pub type SharedState = Arc<RwLock<MetaSnapshot>>;

/// Snapshot files, shared by the state machine and its builders.
#[derive(Debug)]
struct SnapshotStore {
    dir: PathBuf,
    /// The newest persisted snapshot file.
    current: Option<PathBuf>,
    next_seq: u64,
}

/// The state machine openraft drives.
pub struct StateMachineStore {
    state: SharedState,
    snapshots: Arc<Mutex<SnapshotStore>>,
}

/// Builds a snapshot of the state as of when it was created.
pub struct SnapshotBuilder {
    state: MetaSnapshot,
    snapshots: Arc<Mutex<SnapshotStore>>,
}

fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

fn read_snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

/// Encodes a snapshot file: header length, header, data, crc.
fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> io::Result<Vec<u8>> {
    let header = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let header_len = u32::try_from(header.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(8 + header.len() + data.len());
    buf.extend_from_slice(&header_len.to_le_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Decodes a snapshot file into its header and data.
fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), String> {
    if bytes.len() < 8 {
        return Err("snapshot file is too short".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if crc32fast::hash(body) != u32::from_le_bytes(crc_bytes) {
        return Err("snapshot checksum mismatch".into());
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&body[..4]);
    let header_len = u32::from_le_bytes(len_bytes) as usize;
    let header = body
        .get(4..4 + header_len)
        .ok_or("snapshot header length out of range")?;
    let meta: SnapshotMeta = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    Ok((meta, body[4 + header_len..].to_vec()))
}

/// `(seq, path)` of every snapshot file in `dir`; removes leftover temp files.
fn list_snapshots(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            fs::remove_file(&path)?;
            continue;
        }
        let Some(stem) = name.strip_suffix(&format!(".{SNAPSHOT_EXT}")) else {
            continue;
        };
        if let Some(seq) = stem.rsplit('-').next().and_then(|s| s.parse().ok()) {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn parse_state(data: &[u8]) -> Result<MetaState, serde_json::Error> {
    serde_json::from_slice(data)
}

impl SnapshotStore {
    /// Persists a snapshot and makes it the current one, deleting older ones.
    fn save(&mut self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        // Named by the local sequence number, not by the (maybe remote)
        // snapshot id, so the largest number is always the newest file.
        let seq = self.next_seq;
        self.next_seq += 1;
        let (term, index) = meta
            .last_log_id
            .map_or((0, 0), |l| (l.leader_id.term, l.index));
        let path = self
            .dir
            .join(format!("{term}-{index}-{seq}.{SNAPSHOT_EXT}"));
        write_atomic(&path, &encode_snapshot(meta, data)?)?;
        let old = self.current.replace(path.clone());
        if let Some(old) = old {
            if old != path {
                fs::remove_file(&old)?;
                sync_dir(&self.dir)?;
            }
        }
        Ok(())
    }

    fn snapshot_id(&self, last: Option<&LogId>) -> String {
        let (term, index) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
        format!("{term}-{index}-{}", self.next_seq)
    }
}

impl StateMachineStore {
    /// Opens the state machine under `raft_dir`, loading the newest snapshot.
    pub fn open(raft_dir: &Path) -> Result<Self, MetaError> {
        let dir = raft_dir.join(SNAPSHOT_DIR);
        let io_err = |source| MetaError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_err)?;
        let files = list_snapshots(&dir).map_err(io_err)?;
        let next_seq = files.last().map_or(1, |(seq, _)| seq + 1);
        let mut state = MetaState::default();
        let mut current = None;
        if let Some((_, path)) = files.last() {
            let corrupt = |reason: String| MetaError::Corrupt {
                path: path.clone(),
                reason,
            };
            let bytes = fs::read(path).map_err(|source| MetaError::Io {
                path: path.clone(),
                source,
            })?;
            let (meta, data) = decode_snapshot(&bytes).map_err(corrupt)?;
            state = parse_state(&data).map_err(|e| corrupt(e.to_string()))?;
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
            current = Some(path.clone());
            // Older snapshots left by a crash between save and delete.
            for (_, old) in &files[..files.len() - 1] {
                fs::remove_file(old).map_err(io_err)?;
            }
        }
        Ok(Self {
            state: Arc::new(RwLock::new(Arc::new(state))),
            snapshots: Arc::new(Mutex::new(SnapshotStore {
                dir,
                current,
                next_seq,
            })),
        })
    }

    /// The handle readers use; stays valid for the life of the process.
    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    /// The catalogue as of the last applied entry.
    pub fn snapshot(&self) -> MetaSnapshot {
        self.state.read().clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = serde_json::to_vec(&*self.state).map_err(snapshot_err)?;
        let snapshots = self.snapshots.clone();
        let state = self.state.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let mut store = snapshots.lock();
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
                snapshot_id: store.snapshot_id(state.last_applied.as_ref()),
            };
            store.save(&meta, &data).map(|()| (meta, data))
        })
        .await
        .map_err(snapshot_err)?
        .map_err(snapshot_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.snapshot();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(Vec::new());
        }
        // One copy per batch; readers keep the old Arc until they drop it.
        let mut next = MetaState::clone(&self.snapshot());
        let mut responses = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetaResponse::Ok,
                EntryPayload::Normal(cmd) => apply(&mut next, &cmd),
                EntryPayload::Membership(m) => {
                    next.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    MetaResponse::Ok
                }
            };
            responses.push(response);
        }
        *self.state.write() = Arc::new(next);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.snapshot(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut state = parse_state(&data).map_err(read_snapshot_err)?;
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        // Persist first: a crash after this point restarts from the snapshot.
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || snapshots.lock().save(&meta, &data))
            .await
            .map_err(snapshot_err)?
            .map_err(snapshot_err)?;
        *self.state.write() = Arc::new(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(current) = self.snapshots.lock().current.clone() else {
            return Ok(None);
        };
        let bytes = tokio::task::spawn_blocking(move || fs::read(&current))
            .await
            .map_err(read_snapshot_err)?
            .map_err(read_snapshot_err)?;
        let (meta, data) =
            decode_snapshot(&bytes).map_err(|e| read_snapshot_err(io::Error::other(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
