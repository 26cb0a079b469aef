//! Commands that change the catalogue, and the pure function applying them.
//!
//! Step in the flow: a [`MetaCommand`] is the payload of a Raft log entry;
//! [`apply`] turns it into a change of [`MetaState`] and a [`MetaResponse`]
//! for the proposer.
//!
//! `apply` is deterministic: it reads no clock, randomness or network, so
//! every replica that applies the same log reaches the same state. The leader
//! does the planning (which nodes get which shards, see
//! [`super::placement`]) *before* it proposes; `apply` re-validates and
//! answers [`MetaResponse::Rejected`] without changing anything when a
//! command no longer fits the state (a node vanished, a name was taken by an
//! earlier entry, ...). Every handler checks first and writes after its last
//! check, so a rejection never leaves half a change behind.

use serde::{Deserialize, Serialize};

use super::ddl::{
    add_range_shards, alter_table, create_distributed, create_reference, drop_shards, drop_table,
};
use super::moves::{self, MoveState};
use super::state::{
    ColocationId, ColumnDef, Decision, Gid, MetaState, NodeId, NodeInfo, NodeRole, PlacementId,
    PlacementState, RebalanceInfo, RebalanceState, ShardId, ShardMove, TableId, TableInfo,
    TxnDecision,
};

/// A table as proposed, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTable {
    pub name: String,
    pub columns: Vec<ColumnDef>,
}

/// How a proposed distributed table is spread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distribution {
    /// Hash-distributed; joins the group `colocate_with`, or a new group
    /// with `replication_factor` copies of each shard when `None`.
    Hash {
        column: String,
        colocate_with: Option<ColocationId>,
        replication_factor: u32,
    },
    /// Range-distributed; shards may be added later (`AddRangeShards`),
    /// each with `replication_factor` copies.
    Range {
        column: String,
        interval: Option<i64>,
        #[serde(default = "one")]
        replication_factor: u32,
    },
}

fn one() -> u32 {
    1
}

/// A shard as proposed, before it has an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: u32,
    pub min: i64,
    pub max: i64,
}

/// A placement as proposed: a copy of the shard with `shard_index` (within
/// the command) on `node_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSpec {
    pub shard_index: u32,
    pub node_id: NodeId,
}

/// How a rebalance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebalanceOutcome {
    Completed,
    Cancelled,
    Failed(String),
}

/// One change to the catalogue: the `D` of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A worker announces itself; a known `host:port` changes nothing.
    RegisterWorker {
        host: String,
        port: u16,
        group: String,
    },
    /// An admin adds a node; a known `host:port` changes nothing.
    AddNode {
        host: String,
        port: u16,
        group: String,
        role: NodeRole,
    },
    /// Start (or stop) draining a node.
    SetDraining { node_id: NodeId, draining: bool },
    /// Remove a node that holds no placements.
    RemoveNode { node_id: NodeId },
    /// Declare a node failed: it becomes inactive, its placements inactive,
    /// and the listed surviving placements (on other nodes) active.
    MarkNodeFailed {
        node_id: NodeId,
        reason: String,
        promotions: Vec<PlacementId>,
    },
    /// Create a hash- or range-distributed table with its shards and placements.
    CreateDistributedTable {
        table: NewTable,
        distribution: Distribution,
        shards: Vec<ShardSpec>,
        placements: Vec<PlacementSpec>,
    },
    /// Create a reference table: one shard with a copy on each of `nodes`.
    CreateReferenceTable { table: NewTable, nodes: Vec<NodeId> },
    /// Add shards to a range table.
    AddRangeShards {
        table_id: TableId,
        shards: Vec<ShardSpec>,
        placements: Vec<PlacementSpec>,
    },
    /// Drop shards (and their placements) of a range table.
    DropShards {
        table_id: TableId,
        shard_ids: Vec<ShardId>,
    },
    /// Replace a table's columns; refused unless the schema is still at
    /// `expected_version`.
    AlterTable {
        table_id: TableId,
        columns: Vec<ColumnDef>,
        expected_version: u64,
    },
    /// Drop a table with its shards and placements.
    DropTable { table_id: TableId },
    /// Change a placement's state (and optionally its recorded size).
    SetPlacementState {
        placement_id: PlacementId,
        state: PlacementState,
        length: Option<u64>,
    },
    /// Point a placement at another node (the data was copied there).
    SwitchPlacement {
        placement_id: PlacementId,
        to: NodeId,
    },
    /// Record a rebalance plan computed by the leader.
    StartRebalance { id: String, moves: Vec<ShardMove> },
    /// Record progress of the running rebalance.
    RebalanceProgress { id: String, moves_done: u64 },
    /// Record the end of the running rebalance.
    FinishRebalance {
        id: String,
        outcome: RebalanceOutcome,
    },
    /// Record a 2PC decision unless one is recorded already (first wins).
    DecideTxn {
        gid: Gid,
        decision: Decision,
        participants: Vec<NodeId>,
    },
    /// Forget decisions every participant has acted on.
    ForgetTxns { gids: Vec<Gid> },
    /// Record move `id` of `shard_id`'s shard group from `from` to `to`,
    /// with the cleanup record of the target (ADR 0013).
    StartMove {
        id: String,
        shard_id: ShardId,
        from: NodeId,
        to: NodeId,
        started_ms: u64,
        /// A copy: the source keeps its placement, and the switch adds one
        /// on the target (a reference table's copy for a new worker).
        #[serde(default)]
        copy: bool,
    },
    /// A move copies (or catches up): its bytes so far.
    MoveProgress {
        id: String,
        state: MoveState,
        bytes_copied: u64,
        bytes_total: u64,
    },
    /// Writes to a move's shards queue until `deadline_ms`.
    FenceMove { id: String, deadline_ms: u64 },
    /// A move's placements point at its target; epochs go up.
    SwitchMove { id: String, finished_ms: u64 },
    /// A move ends before its switch: failed (`reason`) or cancelled.
    FailMove {
        id: String,
        reason: Option<String>,
        finished_ms: u64,
    },
    /// The copies of cleanup record `record` are gone.
    FinishCleanup { record: u64 },
    /// Forget ended moves (kept a while for `get_rebalance_progress()`).
    ForgetMoves { ids: Vec<String> },
}

/// The answer of [`apply`]: the `R` of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Done; nothing to report (also the answer to blank and membership entries).
    Ok,
    /// `RegisterWorker` / `AddNode`.
    NodeRegistered {
        node_id: NodeId,
        already_registered: bool,
    },
    /// `MarkNodeFailed`.
    NodeFailed { deactivated: u64, promoted: u64 },
    /// `CreateDistributedTable` / `CreateReferenceTable`.
    TableCreated {
        table_id: TableId,
        shard_ids: Vec<ShardId>,
        placement_ids: Vec<PlacementId>,
    },
    /// `AddRangeShards`.
    ShardsAdded {
        shard_ids: Vec<ShardId>,
        placement_ids: Vec<PlacementId>,
    },
    /// `AlterTable`: the new schema version.
    TableAltered { schema_version: u64 },
    /// `DecideTxn`: the decision that is stored (maybe an earlier one).
    TxnDecided { decision: Decision, first: bool },
    /// `StartMove`: the shards that move together.
    MoveStarted { shards: Vec<ShardId> },
    /// The command does not fit the state; nothing changed.
    Rejected(String),
}

/// Applies one command. On [`MetaResponse::Rejected`] the state is unchanged.
pub fn apply(state: &mut MetaState, cmd: &MetaCommand) -> MetaResponse {
    // Validate everything before the first write, so a rejection never leaves
    // half a change behind.
    match apply_checked(state, cmd) {
        Ok(resp) => resp,
        Err(reason) => MetaResponse::Rejected(reason),
    }
}

pub(super) type Applied = Result<MetaResponse, String>;

fn apply_checked(s: &mut MetaState, cmd: &MetaCommand) -> Applied {
    use MetaCommand as C;
    match cmd {
        C::RegisterWorker { host, port, group } => {
            register(s, host, *port, group, NodeRole::Worker)
        }
        C::AddNode {
            host,
            port,
            group,
            role,
        } => register(s, host, *port, group, *role),
        C::SetDraining { node_id, draining } => {
            let node = node_mut(s, *node_id)?;
            if node.draining != *draining {
                node.draining = *draining;
                node.version += 1;
            }
            Ok(MetaResponse::Ok)
        }
        C::RemoveNode { node_id } => {
            node(s, *node_id)?;
            let held = s.data_placements_on(*node_id);
            if held > 0 {
                return Err(format!(
                    "node {node_id} holds {held} placement(s); drain it first"
                ));
            }
            // Its reference-table copies go with it, unless one is the last.
            let copies: Vec<PlacementId> = s
                .placements
                .iter()
                .filter(|(_, p)| p.node_id == *node_id)
                .map(|(id, _)| *id)
                .collect();
            for id in &copies {
                let shard = s.placements[id].shard_id;
                if s.placements_of(shard).len() < 2 {
                    return Err(format!(
                        "node {node_id} holds the only copy of shard {shard}"
                    ));
                }
            }
            if let Some(id) = s.moves.iter().find_map(|(id, j)| {
                (!j.state.is_terminal() && (j.from == *node_id || j.to == *node_id)).then_some(id)
            }) {
                return Err(format!("node {node_id} takes part in move {id}"));
            }
            for id in copies {
                s.placements.remove(&id);
            }
            s.nodes.remove(node_id);
            Ok(MetaResponse::Ok)
        }
        C::MarkNodeFailed {
            node_id,
            reason,
            promotions,
        } => mark_failed(s, *node_id, reason, promotions),
        C::CreateDistributedTable {
            table,
            distribution,
            shards,
            placements,
        } => create_distributed(s, table, distribution, shards, placements),
        C::CreateReferenceTable { table, nodes } => create_reference(s, table, nodes),
        C::AddRangeShards {
            table_id,
            shards,
            placements,
        } => add_range_shards(s, *table_id, shards, placements),
        C::DropShards {
            table_id,
            shard_ids,
        } => drop_shards(s, *table_id, shard_ids),
        C::AlterTable {
            table_id,
            columns,
            expected_version,
        } => alter_table(s, *table_id, columns, *expected_version),
        C::DropTable { table_id } => drop_table(s, *table_id),
        C::SetPlacementState {
            placement_id,
            state,
            length,
        } => {
            let p = s
                .placements
                .get_mut(placement_id)
                .ok_or_else(|| format!("no placement {placement_id}"))?;
            p.state = *state;
            if let Some(len) = length {
                p.length = *len;
            }
            Ok(MetaResponse::Ok)
        }
        C::SwitchPlacement { placement_id, to } => switch_placement(s, *placement_id, *to),
        C::StartRebalance { id, moves } => {
            if let Some(r) = &s.rebalance {
                if r.state == RebalanceState::Running {
                    return Err(format!("rebalance {} is still running", r.id));
                }
            }
            for m in moves {
                let p = s
                    .placements
                    .get(&m.placement_id)
                    .ok_or_else(|| format!("no placement {}", m.placement_id))?;
                if p.node_id != m.from {
                    return Err(format!(
                        "placement {} is on node {}, not {}",
                        m.placement_id, p.node_id, m.from
                    ));
                }
                node_placeable(s, m.to)?;
            }
            s.rebalance = Some(RebalanceInfo {
                id: id.clone(),
                moves: moves.clone(),
                moves_done: 0,
                state: RebalanceState::Running,
            });
            Ok(MetaResponse::Ok)
        }
        C::RebalanceProgress { id, moves_done } => {
            let r = running_rebalance(s, id)?;
            r.moves_done = (*moves_done).min(r.moves.len() as u64);
            Ok(MetaResponse::Ok)
        }
        C::FinishRebalance { id, outcome } => {
            let r = running_rebalance(s, id)?;
            r.state = match outcome {
                RebalanceOutcome::Completed => RebalanceState::Completed,
                RebalanceOutcome::Cancelled => RebalanceState::Cancelled,
                RebalanceOutcome::Failed(e) => RebalanceState::Failed(e.clone()),
            };
            Ok(MetaResponse::Ok)
        }
        C::DecideTxn {
            gid,
            decision,
            participants,
        } => {
            if let Some(existing) = s.txns.get(gid) {
                return Ok(MetaResponse::TxnDecided {
                    decision: existing.decision,
                    first: false,
                });
            }
            s.txns.insert(
                gid.clone(),
                TxnDecision {
                    decision: *decision,
                    participants: participants.clone(),
                },
            );
            Ok(MetaResponse::TxnDecided {
                decision: *decision,
                first: true,
            })
        }
        C::ForgetTxns { gids } => {
            for gid in gids {
                s.txns.remove(gid);
            }
            Ok(MetaResponse::Ok)
        }
        C::StartMove {
            id,
            shard_id,
            from,
            to,
            started_ms,
            copy,
        } => moves::start_move(s, id, *shard_id, (*from, *to), *started_ms, *copy),
        C::MoveProgress {
            id,
            state,
            bytes_copied,
            bytes_total,
        } => moves::progress(s, id, state, *bytes_copied, *bytes_total),
        C::FenceMove { id, deadline_ms } => moves::fence(s, id, *deadline_ms),
        C::SwitchMove { id, finished_ms } => moves::switch(s, id, *finished_ms),
        C::FailMove {
            id,
            reason,
            finished_ms,
        } => moves::fail(s, id, reason.as_deref(), *finished_ms),
        C::FinishCleanup { record } => moves::finish_cleanup(s, *record),
        C::ForgetMoves { ids } => moves::forget(s, ids),
    }
}

pub(super) fn node(s: &MetaState, id: NodeId) -> Result<&NodeInfo, String> {
    s.nodes.get(&id).ok_or_else(|| format!("no node {id}"))
}

fn node_mut(s: &mut MetaState, id: NodeId) -> Result<&mut NodeInfo, String> {
    s.nodes.get_mut(&id).ok_or_else(|| format!("no node {id}"))
}

pub(super) fn node_placeable(s: &MetaState, id: NodeId) -> Result<(), String> {
    let n = node(s, id)?;
    let why = if n.is_placeable() {
        return Ok(());
    } else if n.role != NodeRole::Worker {
        "it is not a worker"
    } else if n.draining {
        "it is draining"
    } else if n.failed.is_some() {
        "it has failed"
    } else {
        "it is not active"
    };
    Err(format!("node {id} cannot take placements: {why}"))
}

pub(super) fn table(s: &MetaState, id: TableId) -> Result<&TableInfo, String> {
    s.tables.get(&id).ok_or_else(|| format!("no table {id}"))
}

fn running_rebalance<'a>(s: &'a mut MetaState, id: &str) -> Result<&'a mut RebalanceInfo, String> {
    match &mut s.rebalance {
        Some(r) if r.id == id && r.state == RebalanceState::Running => Ok(r),
        _ => Err(format!("rebalance {id} is not running")),
    }
}

fn register(s: &mut MetaState, host: &str, port: u16, group: &str, role: NodeRole) -> Applied {
    if host.is_empty() || port == 0 {
        return Err("a node needs a host and a non-zero port".into());
    }
    if let Some(node_id) = s.node_by_addr(host, port) {
        return Ok(MetaResponse::NodeRegistered {
            node_id,
            already_registered: true,
        });
    }
    let node_id = s.next_node_id;
    s.next_node_id += 1;
    s.nodes.insert(
        node_id,
        NodeInfo {
            host: host.to_owned(),
            port,
            role,
            group: group.to_owned(),
            active: true,
            draining: false,
            failed: None,
            version: 1,
        },
    );
    Ok(MetaResponse::NodeRegistered {
        node_id,
        already_registered: false,
    })
}

fn mark_failed(
    s: &mut MetaState,
    node_id: NodeId,
    reason: &str,
    promotions: &[PlacementId],
) -> Applied {
    node(s, node_id)?;
    for pid in promotions {
        let p = s
            .placements
            .get(pid)
            .ok_or_else(|| format!("no placement {pid} to promote"))?;
        if p.node_id == node_id {
            return Err(format!("placement {pid} is on the failed node itself"));
        }
        let target = node(s, p.node_id)?;
        if target.failed.is_some() {
            return Err(format!("placement {pid} is on failed node {}", p.node_id));
        }
    }
    let mut deactivated = 0;
    for p in s.placements.values_mut() {
        if p.node_id == node_id && p.state == PlacementState::Active {
            p.state = PlacementState::Inactive;
            deactivated += 1;
        }
    }
    let mut promoted = 0;
    for pid in promotions {
        if let Some(p) = s.placements.get_mut(pid) {
            if p.state != PlacementState::Active {
                p.state = PlacementState::Active;
                promoted += 1;
            }
        }
    }
    let n = node_mut(s, node_id)?;
    n.active = false;
    n.failed = Some(reason.to_owned());
    n.version += 1;
    Ok(MetaResponse::NodeFailed {
        deactivated,
        promoted,
    })
}

fn switch_placement(s: &mut MetaState, placement_id: PlacementId, to: NodeId) -> Applied {
    let p = s
        .placements
        .get(&placement_id)
        .ok_or_else(|| format!("no placement {placement_id}"))?;
    node_placeable(s, to)?;
    let shard_id = p.shard_id;
    let clash = s
        .placements
        .iter()
        .any(|(id, q)| *id != placement_id && q.shard_id == shard_id && q.node_id == to);
    if clash {
        return Err(format!("node {to} already holds shard {shard_id}"));
    }
    if let Some(p) = s.placements.get_mut(&placement_id) {
        p.node_id = to;
    }
    Ok(MetaResponse::Ok)
}
