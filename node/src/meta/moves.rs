//! Shard moves and cleanup records in the Raft state (ADR 0013).
//!
//! Step in the flow: the coordinator leader runs a move as a job whose
//! every step is a command applied here, so a restart (or a new leader)
//! finds the job where it was: `StartMove` records the job *and* the
//! cleanup record of the target's copies before anything exists there;
//! `MoveProgress` and `FenceMove` follow the copy; `SwitchMove` points the
//! placements at the target, bumps each shard's epoch and swaps the target's
//! cleanup record for one of the source's, in one entry; `FailMove` ends a
//! job that has not switched (its target cleanup then runs);
//! `FinishCleanup` removes a record once the cleaner has dropped its copies.
//! Like the rest of [`super::command::apply`], these check everything
//! before the first write and read no clock (deadlines come in the command).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::command::{node, node_placeable, Applied, MetaResponse};
use super::state::{MetaState, NodeId, PlacementState, ShardId, TableKind};

/// Where a move is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveState {
    /// Recorded; nothing copied yet.
    Planned,
    /// The snapshot copy is running.
    Copying,
    /// Changes since the snapshot are being shipped.
    CatchingUp,
    /// Writes to the shards are queued until `deadline_ms` (Unix ms).
    Fenced { deadline_ms: u64 },
    /// The placements point at the target (terminal for routing).
    Switched,
    /// Ended before the switch; the target's copies are cleaned up.
    Failed(String),
    /// Cancelled before the switch; the target's copies are cleaned up.
    Cancelled,
}

impl MoveState {
    /// The job will not change the placements any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            MoveState::Switched | MoveState::Failed(_) | MoveState::Cancelled
        )
    }
}

/// One move of a shard group between two workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveJob {
    /// The shard the user named, then the shards co-located with it.
    pub shards: Vec<ShardId>,
    pub from: NodeId,
    pub to: NodeId,
    pub state: MoveState,
    pub bytes_copied: u64,
    pub bytes_total: u64,
    /// Unix ms, as the proposer saw them.
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// A copy: the source keeps its placement ([`MetaCommand::StartMove`]).
    ///
    /// [`MetaCommand::StartMove`]: super::command::MetaCommand::StartMove
    #[serde(default)]
    pub copy: bool,
}

/// When a cleanup record's copies are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupPolicy {
    /// The target's copies, if the move does not switch.
    OnFailure,
    /// The source's copies, once the move has switched.
    DeferredOnSuccess,
}

/// Copies of a job's shards on one node that must go at some point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRecord {
    pub job: String,
    pub node: NodeId,
    pub shards: Vec<ShardId>,
    pub policy: CleanupPolicy,
}

impl CleanupRecord {
    /// The cleaner may act on it now: its job reached the outcome the
    /// policy waits for, or the job is gone.
    pub fn is_due(&self, s: &MetaState) -> bool {
        matches!(
            (s.moves.get(&self.job).map(|j| &j.state), self.policy),
            (None, _)
                | (Some(MoveState::Switched), CleanupPolicy::DeferredOnSuccess)
                | (
                    Some(MoveState::Failed(_) | MoveState::Cancelled),
                    CleanupPolicy::OnFailure
                )
        )
    }
}

/// The shard group of `shard_id`: itself, then the shards at the same index
/// of the other tables of its co-location group.
pub fn shard_group(s: &MetaState, shard_id: ShardId) -> Result<Vec<ShardId>, String> {
    let shard = s
        .shards
        .get(&shard_id)
        .ok_or_else(|| format!("shard {shard_id} does not exist"))?;
    let table = super::command::table(s, shard.table_id)?;
    let colocation = match &table.kind {
        TableKind::Reference => {
            return Err(format!(
            "shard {shard_id} belongs to reference table \"{}\", which has a copy on every worker",
            table.name
        ))
        }
        TableKind::Range { .. } => return Ok(vec![shard_id]),
        TableKind::Hash { colocation_id, .. } => *colocation_id,
    };
    let mut group = vec![shard_id];
    for (id, other) in &s.shards {
        if *id == shard_id || other.index != shard.index {
            continue;
        }
        let same_group = s.tables.get(&other.table_id).is_some_and(|t| {
            matches!(t.kind, TableKind::Hash { colocation_id, .. } if colocation_id == colocation)
        });
        if same_group {
            group.push(*id);
        }
    }
    Ok(group)
}

/// The shard a copy job copies: a reference table's (its placements are
/// all alike, so a new worker gets one by a copy).
fn copied_shard(s: &MetaState, shard_id: ShardId) -> Result<Vec<ShardId>, String> {
    let shard = s
        .shards
        .get(&shard_id)
        .ok_or_else(|| format!("shard {shard_id} does not exist"))?;
    let table = super::command::table(s, shard.table_id)?;
    if !matches!(table.kind, TableKind::Reference) {
        return Err(format!(
            "shard {shard_id} of \"{}\" is not a reference table's; it can only be moved",
            table.name
        ));
    }
    Ok(vec![shard_id])
}

/// `StartMove`.
pub(super) fn start_move(
    s: &mut MetaState,
    id: &str,
    shard_id: ShardId,
    (from, to): (NodeId, NodeId),
    started_ms: u64,
    copy: bool,
) -> Applied {
    if s.moves.contains_key(id) {
        return Err(format!("move {id} exists already"));
    }
    if from == to {
        return Err(format!("shard {shard_id} is on node {from} already"));
    }
    let shards = if copy {
        copied_shard(s, shard_id)?
    } else {
        shard_group(s, shard_id)?
    };
    node(s, from)?;
    node_placeable(s, to)?;
    let moving: BTreeSet<ShardId> = s
        .moves
        .values()
        .filter(|j| !j.state.is_terminal())
        .flat_map(|j| j.shards.iter().copied())
        .collect();
    for shard in &shards {
        if moving.contains(shard) {
            return Err(format!("shard {shard} is already being moved"));
        }
        let placements = s.placements_of(*shard);
        if !placements
            .iter()
            .any(|(_, p)| p.node_id == from && p.state == PlacementState::Active)
        {
            return Err(format!(
                "node {from} holds no active placement of shard {shard}"
            ));
        }
        if placements.iter().any(|(_, p)| p.node_id == to) {
            return Err(format!("node {to} already holds shard {shard}"));
        }
        if s.cleanups
            .values()
            .any(|r| r.node == to && r.shards.contains(shard))
        {
            return Err(format!(
                "an earlier copy of shard {shard} on node {to} is still being cleaned up; try again shortly"
            ));
        }
    }
    s.cleanups.insert(
        s.next_cleanup_id,
        CleanupRecord {
            job: id.to_owned(),
            node: to,
            shards: shards.clone(),
            policy: CleanupPolicy::OnFailure,
        },
    );
    s.next_cleanup_id += 1;
    s.moves.insert(
        id.to_owned(),
        MoveJob {
            shards: shards.clone(),
            from,
            to,
            state: MoveState::Planned,
            bytes_copied: 0,
            bytes_total: 0,
            started_ms,
            finished_ms: None,
            copy,
        },
    );
    Ok(MetaResponse::MoveStarted { shards })
}

fn open_job<'a>(s: &'a mut MetaState, id: &str) -> Result<&'a mut MoveJob, String> {
    match s.moves.get_mut(id) {
        Some(j) if !j.state.is_terminal() => Ok(j),
        Some(j) => Err(format!("move {id} has ended ({:?})", j.state)),
        None => Err(format!("no move {id}")),
    }
}

/// `MoveProgress`: copying or catching up, with the bytes so far.
pub(super) fn progress(
    s: &mut MetaState,
    id: &str,
    state: &MoveState,
    bytes_copied: u64,
    bytes_total: u64,
) -> Applied {
    if !matches!(state, MoveState::Copying | MoveState::CatchingUp) {
        return Err(format!("progress cannot set state {state:?}"));
    }
    let job = open_job(s, id)?;
    job.state = state.clone();
    job.bytes_copied = bytes_copied;
    job.bytes_total = bytes_total;
    Ok(MetaResponse::Ok)
}

/// `FenceMove`: writes to the job's shards queue until `deadline_ms`.
pub(super) fn fence(s: &mut MetaState, id: &str, deadline_ms: u64) -> Applied {
    let job = open_job(s, id)?;
    if !matches!(job.state, MoveState::CatchingUp | MoveState::Fenced { .. }) {
        return Err(format!(
            "move {id} is {:?}; it is fenced only once it catches up",
            job.state
        ));
    }
    job.state = MoveState::Fenced { deadline_ms };
    Ok(MetaResponse::Ok)
}

/// `SwitchMove`: the placements point at the target, epochs go up, and the
/// cleanup of the target becomes the cleanup of the source.
pub(super) fn switch(s: &mut MetaState, id: &str, finished_ms: u64) -> Applied {
    let job = open_job(s, id)?.clone();
    if !matches!(job.state, MoveState::Fenced { .. }) {
        return Err(format!("move {id} is {:?}, not fenced", job.state));
    }
    node_placeable(s, job.to)?;
    if job.copy {
        return switch_copy(s, id, &job, finished_ms);
    }
    let mut switched = Vec::new();
    for shard in &job.shards {
        // A shard dropped during the move has nothing left to switch.
        let Some((pid, _)) = s
            .placements_of(*shard)
            .into_iter()
            .find(|(_, p)| p.node_id == job.from)
        else {
            continue;
        };
        switched.push((*shard, pid));
    }
    for (shard, pid) in &switched {
        if let Some(p) = s.placements.get_mut(pid) {
            p.node_id = job.to;
            p.state = PlacementState::Active;
        }
        if let Some(info) = s.shards.get_mut(shard) {
            info.epoch += 1;
        }
    }
    s.cleanups
        .retain(|_, r| !(r.job == id && r.policy == CleanupPolicy::OnFailure));
    s.cleanups.insert(
        s.next_cleanup_id,
        CleanupRecord {
            job: id.to_owned(),
            node: job.from,
            shards: job.shards.clone(),
            policy: CleanupPolicy::DeferredOnSuccess,
        },
    );
    s.next_cleanup_id += 1;
    if let Some(j) = s.moves.get_mut(id) {
        j.state = MoveState::Switched;
        j.finished_ms = Some(finished_ms);
    }
    s.switches += 1;
    Ok(MetaResponse::Ok)
}

/// `SwitchMove` of a copy: a new active placement on the target; the
/// source keeps its own, so nothing is left to clean up.
fn switch_copy(s: &mut MetaState, id: &str, job: &MoveJob, finished_ms: u64) -> Applied {
    for shard in &job.shards {
        if !s.shards.contains_key(shard) {
            continue;
        }
        s.add_placement(*shard, job.to);
    }
    s.cleanups.retain(|_, r| r.job != id);
    if let Some(j) = s.moves.get_mut(id) {
        j.state = MoveState::Switched;
        j.finished_ms = Some(finished_ms);
    }
    Ok(MetaResponse::Ok)
}

/// `FailMove`: ends a job that has not switched.
pub(super) fn fail(s: &mut MetaState, id: &str, reason: Option<&str>, finished_ms: u64) -> Applied {
    let job = open_job(s, id)?;
    job.state = match reason {
        Some(r) => MoveState::Failed(r.to_owned()),
        None => MoveState::Cancelled,
    };
    job.finished_ms = Some(finished_ms);
    Ok(MetaResponse::Ok)
}

/// `FinishCleanup`: the record's copies are gone (or its node is).
pub(super) fn finish_cleanup(s: &mut MetaState, record: u64) -> Applied {
    let r = s
        .cleanups
        .get(&record)
        .ok_or_else(|| format!("no cleanup record {record}"))?;
    if !r.is_due(s) && s.nodes.contains_key(&r.node) {
        return Err(format!(
            "cleanup record {record} waits for move {} to end",
            r.job
        ));
    }
    s.cleanups.remove(&record);
    Ok(MetaResponse::Ok)
}

/// `ForgetMoves`: drops the ended jobs among `ids` that no cleanup record
/// and no running rebalance still names.
pub(super) fn forget(s: &mut MetaState, ids: &[String]) -> Applied {
    for id in ids {
        if forgettable(s, id) {
            s.moves.remove(id);
        }
    }
    Ok(MetaResponse::Ok)
}

/// Job `id` has ended, and no cleanup record and no running rebalance
/// names it.
pub fn forgettable(s: &MetaState, id: &str) -> bool {
    let ended = s.moves.get(id).is_some_and(|j| j.state.is_terminal());
    let in_rebalance = s.rebalance.as_ref().is_some_and(|r| {
        r.state == super::state::RebalanceState::Running && id.starts_with(&format!("{}-", r.id))
    });
    ended && !in_rebalance && !s.cleanups.values().any(|r| r.job == id)
}

/// Unix ms now: the clock the proposer of a move's commands reads (never
/// `apply`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
