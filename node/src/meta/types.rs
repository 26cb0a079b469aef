//! Raft type configuration of the metadata group.
//!
//! Step in the flow: the vocabulary every other file of [`crate::meta`]
//! shares. One `declare_raft_types!` binds openraft 0.9 to our command
//! ([`MetaCommand`]) and response ([`MetaResponse`]) types, to `u64` member
//! ids (the coordinator pod ordinal) and to [`CoordinatorNode`], the address
//! a member is reached at. Moving to openraft 0.10 rewrites this file, the
//! log store, the state machine and the network, and nothing else.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::command::{MetaCommand, MetaResponse};

/// Raft member id of a coordinator: its pod ordinal (0, 1, 2, ...).
///
/// Not the same id space as [`super::state::NodeId`], which numbers the rows
/// of `pg_dist_node`.
pub type RaftId = u64;

/// What the Raft membership stores about a coordinator: where its internal
/// Raft service and its metadata API listen (`host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorNode {
    /// `host:port` of the coordinator's gRPC endpoint.
    pub rpc_addr: String,
}

impl CoordinatorNode {
    /// A member reachable at `rpc_addr`.
    pub fn new(rpc_addr: impl Into<String>) -> Self {
        Self {
            rpc_addr: rpc_addr.into(),
        }
    }
}

impl fmt::Display for CoordinatorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of the metadata group.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = RaftId,
        Node = CoordinatorNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry of the metadata group.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader and index).
pub type LogId = openraft::LogId<RaftId>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::Vote<RaftId>;
/// The membership last applied, with the log id it came from.
pub type StoredMembership = openraft::StoredMembership<RaftId, CoordinatorNode>;
/// The header of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, CoordinatorNode>;
/// A snapshot: header and data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The storage error every storage trait method returns.
pub type StorageError = openraft::StorageError<RaftId>;
/// A running Raft node of the metadata group.
pub type MetaRaft = openraft::Raft<TypeConfig>;
