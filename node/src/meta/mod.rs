//! Cluster metadata, replicated with Raft (openraft 0.9, ADR 0005).
//!
//! Step in the flow: the coordinator owns the catalogue of nodes, tables,
//! shards, placements, co-location groups and 2PC decisions. Every change is
//! a committed Raft log entry, so the catalogue survives restarts and (with
//! three coordinators) the loss of one of them. The parts, each in its own
//! file, the state machine knowing nothing of the transport:
//!
//! - `types.rs`: the openraft type configuration ([`TypeConfig`]).
//! - `state.rs`: the catalogue ([`MetaState`]).
//! - `command.rs`: the commands ([`MetaCommand`]) and the pure
//!   [`apply`] that changes the state (deterministic: no clock, no I/O);
//!   `ddl.rs` holds its table handlers.
//! - `moves.rs`: shard-move jobs and cleanup records (ADR 0013).
//! - `placement.rs`: shard ranges and placement plans the leader computes
//!   before proposing.
//! - `log_store.rs`: the durable log, vote and committed id.
//! - `state_machine.rs`: applies entries; persists and installs snapshots.
//! - `network.rs`: how members reach each other (gRPC, or in-process for
//!   tests); `raft_service.rs`: the gRPC server half.
//!
//! - `health.rs`: the leader's in-memory view of worker heartbeats.
//! - `api.rs`: the public `quiver.meta.v1.MetadataService` ([`MetaApi`]),
//!   shared by gRPC and the SQL functions; `pb_impl.rs`: proto conversions.
//! - `sql.rs`: `pg_dist_node` and the `quiver_*_node` SQL functions.
//!
//! [`MetaNode`] puts them together: one Raft member with its stores under
//! `<data_dir>/raft/`, a `write` that proposes a command and waits for it to
//! be applied, and a lock-free `snapshot` for readers.

mod api;
pub mod command;
mod ddl;
mod health;
mod log_store;
pub mod moves;
mod network;
mod pb_impl;
pub mod placement;
mod raft_service;
pub mod rebalance;
pub mod sql;
pub mod state;
mod state_machine;
mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, RaftNetworkFactory, ServerState, SnapshotPolicy};
use thiserror::Error;

pub use api::{ApiError, CoordinatorMember, MetaApi, MetadataGrpc, NodeSelector, Registered};
pub use command::{
    apply, Distribution, MetaCommand, MetaResponse, NewTable, PlacementSpec, RebalanceOutcome,
    ShardSpec,
};
pub use health::{Health, HealthTracker};
pub use log_store::{LogReader, LogStore};
pub use network::{
    GrpcConnection, GrpcRaftNetworkFactory, InProcessConnection, InProcessRaftRouter,
};
pub use placement::{
    colocated_placements, hash_space, placeable_workers, plan_hash_shards, plan_placements,
    shard_index_for_hash, PlacementError, MAX_SHARD_COUNT,
};
pub use raft_service::RaftGrpcService;
pub use state::{
    ColocationGroup, ColocationId, ColumnDef, Decision, Gid, MetaState, NodeId, NodeInfo, NodeRole,
    PlacementId, PlacementInfo, PlacementState, RebalanceInfo, RebalanceState, ShardId, ShardInfo,
    ShardMove, TableId, TableInfo, TableKind, TxnDecision,
};
pub use state_machine::{MetaSnapshot, SharedState, SnapshotBuilder, StateMachineStore};
pub use types::{CoordinatorNode, LogId, MetaRaft, RaftId, TypeConfig};

/// Errors of the metadata layer.
#[derive(Debug, Error)]
pub enum MetaError {
    /// Reading or writing a file of the Raft directory failed.
    #[error("metadata I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of the Raft directory cannot be understood.
    #[error("corrupt metadata file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The openraft configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// This member is not the leader; the leader, if known, is given.
    #[error("not leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<RaftId>,
        leader_addr: Option<String>,
    },
    /// The leader could not confirm its leadership with a quorum.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Waiting for a condition (e.g. a leader) timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The Raft node failed or has stopped.
    #[error("raft: {0}")]
    Raft(String),
}

/// How a member with empty Raft state joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Initialize a cluster whose only voter is this member.
    SingleVoter,
    /// Initialize a cluster with these voters (this member among them).
    /// Exactly one member of a new cluster may do this.
    Voters(BTreeMap<RaftId, CoordinatorNode>),
    /// Initialize nothing; wait to be added by the leader.
    Join,
}

/// Plain settings of a [`MetaNode`] (the binary turns flags into this).
#[derive(Debug, Clone)]
pub struct MetaNodeConfig {
    /// Raft member id: the coordinator's pod ordinal.
    pub id: RaftId,
    /// `host:port` other members and clients reach this member at.
    pub rpc_addr: String,
    /// The node's data directory; Raft files go to `<data_dir>/raft/`.
    pub data_dir: PathBuf,
    pub bootstrap: Bootstrap,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the newest snapshot.
    pub keep_logs: u64,
}

impl MetaNodeConfig {
    /// Settings with ADR 0005's defaults: heartbeat 250 ms, election timeout
    /// 1000-2000 ms, a snapshot every 1024 entries keeping 128, and a
    /// single-voter bootstrap.
    pub fn new(id: RaftId, rpc_addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            rpc_addr: rpc_addr.into(),
            data_dir: data_dir.into(),
            bootstrap: Bootstrap::SingleVoter,
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_every: 1024,
            keep_logs: 128,
        }
    }

    fn raft_config(&self) -> Result<Config, MetaError> {
        let config = Config {
            cluster_name: "quiver-meta".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| MetaError::Config(e.to_string()))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One member of the metadata Raft group.
pub struct MetaNode {
    id: RaftId,
    raft: MetaRaft,
    state: SharedState,
}

impl std::fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNode").field("id", &self.id).finish()
    }
}

fn raft_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Raft(e.to_string())
}

fn write_err(e: RaftError<RaftId, ClientWriteError<RaftId, CoordinatorNode>>) -> MetaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MetaError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.rpc_addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MetaError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => raft_err(e),
    }
}

fn read_err(e: RaftError<RaftId, CheckIsLeaderError<RaftId, CoordinatorNode>>) -> MetaError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => MetaError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.rpc_addr),
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            MetaError::NoQuorum(q.to_string())
        }
        RaftError::Fatal(e) => raft_err(e),
    }
}

impl MetaNode {
    /// Opens the stores under `<data_dir>/raft/`, starts the Raft member
    /// and, if its state is empty, bootstraps as `config.bootstrap` says.
    pub async fn start<N>(config: MetaNodeConfig, network: N) -> Result<Self, MetaError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let raft_dir = config.data_dir.join("raft");
        std::fs::create_dir_all(&raft_dir).map_err(|source| MetaError::Io {
            path: raft_dir.clone(),
            source,
        })?;
        let log_store = LogStore::open(&raft_dir).await?;
        let state_machine = StateMachineStore::open(&raft_dir)?;
        let state = state_machine.shared_state();
        let raft = MetaRaft::new(
            config.id,
            Arc::new(config.raft_config()?),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(raft_err)?;
        let node = Self {
            id: config.id,
            raft,
            state,
        };
        if !node.raft.is_initialized().await.map_err(raft_err)? {
            let me = CoordinatorNode::new(config.rpc_addr.clone());
            let voters = match config.bootstrap {
                Bootstrap::SingleVoter => Some(BTreeMap::from([(config.id, me)])),
                Bootstrap::Voters(voters) => Some(voters),
                Bootstrap::Join => None,
            };
            if let Some(voters) = voters {
                node.raft.initialize(voters).await.map_err(raft_err)?;
            }
        }
        Ok(node)
    }

    /// This member's Raft id.
    pub fn id(&self) -> RaftId {
        self.id
    }

    /// The underlying openraft handle (membership changes, metrics, RPC
    /// handlers for the transport).
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    /// Returns the entry's log index and what [`apply`] answered, which may
    /// be [`MetaResponse::Rejected`] (the entry is in the log either way).
    /// Only the leader accepts writes; others answer [`MetaError::NotLeader`].
    pub async fn write(&self, cmd: MetaCommand) -> Result<(u64, MetaResponse), MetaError> {
        let resp = self.raft.client_write(cmd).await.map_err(write_err)?;
        Ok((resp.log_id.index, resp.data))
    }

    /// The catalogue as of the last entry applied on this member. Cheap: an
    /// `Arc` clone. May lag the leader.
    pub fn snapshot(&self) -> MetaSnapshot {
        self.state.read().clone()
    }

    /// This member currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The leader this member knows of, with its address.
    pub fn leader(&self) -> Option<(RaftId, CoordinatorNode)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let node = m
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .unwrap_or_default();
        Some((id, node))
    }

    /// Waits until some leader is known; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<RaftId, MetaError> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| MetaError::Timeout(e.to_string()))?;
        m.current_leader
            .ok_or_else(|| MetaError::Timeout("a leader".into()))
    }

    /// Waits until this member has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), MetaError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied index")
            .await
            .map_err(|e| MetaError::Timeout(e.to_string()))?;
        Ok(())
    }

    /// Adds `id` as a learner, waits for it to catch up, then makes it a
    /// voter (joint consensus). Leader only. Returns the log index of the
    /// membership change.
    pub async fn add_voter(&self, id: RaftId, node: CoordinatorNode) -> Result<u64, MetaError> {
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(write_err)?;
        let resp = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(write_err)?;
        Ok(resp.log_id.index)
    }

    /// Adds `id` as a learner and waits until it has caught up. Leader only.
    /// Returns the log index of the membership change.
    pub async fn add_learner(&self, id: RaftId, node: CoordinatorNode) -> Result<u64, MetaError> {
        let resp = self
            .raft
            .add_learner(id, node, true)
            .await
            .map_err(write_err)?;
        Ok(resp.log_id.index)
    }

    /// Removes the voter (or learner) `id` from the group. Leader only.
    /// Returns the log index of the membership change.
    pub async fn remove_member(&self, id: RaftId) -> Result<u64, MetaError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let is_voter = membership.membership().voter_ids().any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        let resp = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_err)?;
        Ok(resp.log_id.index)
    }

    /// Confirms with a quorum that this member is still the leader and waits
    /// until it has applied everything committed before now, so a read of
    /// [`Self::snapshot`] that follows is linearizable.
    pub async fn ensure_leader(&self) -> Result<(), MetaError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(read_err)
    }

    /// Stops the Raft member; its stores are closed when this returns.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft.shutdown().await.map_err(raft_err)
    }
}

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod moves_tests;
#[cfg(test)]
mod tests;
