//! The cluster metadata: what the Raft log *means*.
//!
//! Step in the flow: [`MetaState`] is the whole catalogue a coordinator owns
//! (the rows of `pg_dist_node`, `pg_dist_partition`, `pg_dist_shard`,
//! `pg_dist_placement`, co-location groups, 2PC decisions and the current
//! rebalance). Every change to it is a [`super::MetaCommand`] in a committed
//! log entry, applied by the pure [`super::apply`] (in `command.rs`).
//! Readers never lock it: they hold an `Arc<MetaState>`
//! ([`super::MetaSnapshot`]) that the state machine swaps after each batch.
//!
//! All maps are `BTreeMap`s so that serializing the state (snapshots) is
//! deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{LogId, StoredMembership};

/// Id of a row of `pg_dist_node` (a worker or coordinator as a data node).
pub type NodeId = u64;
/// Id of a table in the catalogue.
pub type TableId = u64;
/// Id of a shard.
pub type ShardId = u64;
/// Id of a shard placement (one copy of a shard on one node).
pub type PlacementId = u64;
/// Id of a co-location group.
pub type ColocationId = u64;
/// Global id of a distributed (2PC) transaction.
pub type Gid = String;

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Coordinator,
    Worker,
}

/// One row of `pg_dist_node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub host: String,
    /// gRPC port of the node.
    pub port: u16,
    pub role: NodeRole,
    /// Worker group (failure domain); replicas of a shard go to different groups.
    pub group: String,
    /// `pg_dist_node.isactive`: placements may be put on the node.
    pub active: bool,
    /// A drain is in progress: no new placements go here.
    pub draining: bool,
    /// Set once the node is declared failed: why.
    pub failed: Option<String>,
    /// Bumped on every change of this row, so caches can tell it changed.
    pub version: u64,
}

impl NodeInfo {
    /// The node can take new placements.
    pub fn is_placeable(&self) -> bool {
        self.role == NodeRole::Worker && self.active && !self.draining && self.failed.is_none()
    }
}

/// One column of a table's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// The Arrow data type, as Arrow displays it (`Int64`, `Utf8`, ...).
    pub data_type: String,
    pub nullable: bool,
    /// Default value as a SQL expression.
    pub default: Option<String>,
}

/// How a table's rows are spread over shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableKind {
    /// Rows go to the shard whose hash range holds the hash of `column`.
    Hash {
        column: String,
        colocation_id: ColocationId,
    },
    /// Rows go to the shard whose `[min, max)` range holds `column`'s value.
    /// `interval` is the width of ranges created automatically, if any.
    Range {
        column: String,
        interval: Option<i64>,
        /// Copies of each shard created later.
        #[serde(default = "one")]
        replication_factor: u32,
    },
    /// One shard, a copy on every worker.
    Reference,
}

fn one() -> u32 {
    1
}

fn first_id() -> u64 {
    1
}

/// One table of the catalogue (`pg_dist_partition` plus the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub kind: TableKind,
    /// Starts at 1, bumped by every `AlterTable`.
    pub schema_version: u64,
}

/// One row of `pg_dist_shard`. For a hash table `[min, max]` is an inclusive
/// range of the hash space (see [`super::placement`]); for a range table it
/// is the half-open value range `[min, max)`; a reference table's one shard
/// spans `[i64::MIN, i64::MAX]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub table_id: TableId,
    /// Position of the shard in its table (0-based, in range order).
    pub index: u32,
    pub min: i64,
    pub max: i64,
    /// Bumped by every move of the shard (ADR 0013): a write naming an
    /// older epoch went to a copy that no longer serves.
    #[serde(default)]
    pub epoch: u64,
}

/// State of a placement (`pg_dist_placement.shardstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementState {
    /// Serves reads and takes writes.
    Active,
    /// Exists but is not used (failed node, copy in progress).
    Inactive,
    /// Scheduled for deletion (after a move).
    ToDelete,
}

/// One row of `pg_dist_placement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementInfo {
    pub shard_id: ShardId,
    pub node_id: NodeId,
    pub state: PlacementState,
    /// Size in bytes, as last reported.
    pub length: u64,
}

/// A co-location group: hash tables in it have the same shard count and
/// ranges, and shard `i` of every table lives on the same nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColocationGroup {
    pub shard_count: u32,
    pub replication_factor: u32,
    /// Arrow type of the distribution column.
    pub column_type: String,
}

/// Outcome of a distributed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit,
    Abort,
}

/// A recorded 2PC decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnDecision {
    pub decision: Decision,
    pub participants: Vec<NodeId>,
}

/// One planned shard move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    pub placement_id: PlacementId,
    pub from: NodeId,
    pub to: NodeId,
}

/// State of a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebalanceState {
    Running,
    Completed,
    Cancelled,
    Failed(String),
}

/// The current or last rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceInfo {
    pub id: String,
    pub moves: Vec<ShardMove>,
    pub moves_done: u64,
    pub state: RebalanceState,
}

/// The whole cluster catalogue, as of `last_applied`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub tables: BTreeMap<TableId, TableInfo>,
    pub shards: BTreeMap<ShardId, ShardInfo>,
    pub placements: BTreeMap<PlacementId, PlacementInfo>,
    pub colocations: BTreeMap<ColocationId, ColocationGroup>,
    pub txns: BTreeMap<Gid, TxnDecision>,
    pub rebalance: Option<RebalanceInfo>,
    /// Shard moves, running and ended, by id (ADR 0013).
    #[serde(default)]
    pub moves: BTreeMap<String, super::moves::MoveJob>,
    /// Copies that must be dropped when their move ends, by record id.
    #[serde(default)]
    pub cleanups: BTreeMap<u64, super::moves::CleanupRecord>,
    #[serde(default = "first_id")]
    pub next_cleanup_id: u64,
    /// Moves switched so far: a read planned under an older count may name
    /// a placement that no longer serves (see `dist::read_point`).
    #[serde(default)]
    pub switches: u64,
    pub next_node_id: NodeId,
    pub next_table_id: TableId,
    pub next_shard_id: ShardId,
    pub next_placement_id: PlacementId,
    pub next_colocation_id: ColocationId,
    /// Last log entry applied (set by the state machine, not by [`apply`]).
    pub last_applied: Option<LogId>,
    /// Raft membership as of `last_applied` (set by the state machine).
    pub last_membership: StoredMembership,
}

impl Default for MetaState {
    fn default() -> Self {
        Self {
            nodes: BTreeMap::new(),
            tables: BTreeMap::new(),
            shards: BTreeMap::new(),
            placements: BTreeMap::new(),
            colocations: BTreeMap::new(),
            txns: BTreeMap::new(),
            rebalance: None,
            moves: BTreeMap::new(),
            cleanups: BTreeMap::new(),
            next_cleanup_id: 1,
            switches: 0,
            next_node_id: 1,
            next_table_id: 1,
            next_shard_id: 1,
            next_placement_id: 1,
            next_colocation_id: 1,
            last_applied: None,
            last_membership: StoredMembership::default(),
        }
    }
}

impl MetaState {
    /// The node registered at `host:port`, if any.
    pub fn node_by_addr(&self, host: &str, port: u16) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.host == host && n.port == port)
            .map(|(id, _)| *id)
    }

    /// The table called `name`, if any.
    pub fn table_by_name(&self, name: &str) -> Option<TableId> {
        self.tables
            .iter()
            .find(|(_, t)| t.name == name)
            .map(|(id, _)| *id)
    }

    /// Shards of a table, in index order.
    pub fn shards_of(&self, table_id: TableId) -> Vec<(ShardId, &ShardInfo)> {
        let mut shards: Vec<_> = self
            .shards
            .iter()
            .filter(|(_, s)| s.table_id == table_id)
            .map(|(id, s)| (*id, s))
            .collect();
        shards.sort_by_key(|(_, s)| s.index);
        shards
    }

    /// Placements of a shard.
    /// Adds an active placement of `shard_id` on `node_id`; its id.
    pub fn add_placement(&mut self, shard_id: ShardId, node_id: NodeId) -> PlacementId {
        let id = self.next_placement_id;
        self.next_placement_id += 1;
        self.placements.insert(
            id,
            PlacementInfo {
                shard_id,
                node_id,
                state: PlacementState::Active,
                length: 0,
            },
        );
        id
    }

    /// Placements on `node` of tables other than reference tables (the
    /// copies a node must be drained of before it leaves).
    pub fn data_placements_on(&self, node: NodeId) -> usize {
        self.placements
            .values()
            .filter(|p| p.node_id == node)
            .filter(|p| {
                self.shards
                    .get(&p.shard_id)
                    .and_then(|sh| self.tables.get(&sh.table_id))
                    .is_none_or(|t| !matches!(t.kind, TableKind::Reference))
            })
            .count()
    }

    pub fn placements_of(&self, shard_id: ShardId) -> Vec<(PlacementId, &PlacementInfo)> {
        self.placements
            .iter()
            .filter(|(_, p)| p.shard_id == shard_id)
            .map(|(id, p)| (*id, p))
            .collect()
    }

    /// Number of placements on each node (nodes without any are absent).
    pub fn placement_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts = BTreeMap::new();
        for p in self.placements.values() {
            *counts.entry(p.node_id).or_insert(0) += 1;
        }
        counts
    }

    /// Some table of a co-location group, the one with the lowest id.
    pub fn first_table_in_colocation(&self, colocation_id: ColocationId) -> Option<TableId> {
        self.tables.iter().find_map(|(id, t)| match t.kind {
            TableKind::Hash {
                colocation_id: c, ..
            } if c == colocation_id => Some(*id),
            _ => None,
        })
    }
}
