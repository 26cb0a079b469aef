//! The leader's rebalancer, and the SQL functions that start, drain and
//! cancel rebalances.
//!
//! Step in the flow: `rebalance_table_shards()`, `quiver_drain_node()` and
//! the metadata API's `Rebalance START` / `DrainNode` record a rebalance
//! (its planned moves, [`crate::meta::rebalance`]) in Raft. The leader's
//! pass ([`Cluster::move_pass`]) finds it running and runs its moves here,
//! one after another, each a shard move ([`super::mover`]) whose id is the
//! rebalance's id and the move's position, so a new leader finds the move
//! it was at. `moves_done` goes up after each; `quiver_cancel_rebalance()`
//! stops it after the move in flight; a failed move fails the rebalance.

use std::sync::Arc;
use std::time::Duration;

use super::coord::Cluster;
use super::ddl::UtilityCall;
use crate::meta::command::{MetaCommand, RebalanceOutcome};
use crate::meta::moves::MoveState;
use crate::meta::state::RebalanceState;
use crate::meta::ApiError;
use crate::sql::SqlError;

/// The rebalance functions that run as utility calls.
pub const FUNCTIONS: &[&str] = &["rebalance_table_shards", "quiver_cancel_rebalance"];

fn api_err(e: ApiError) -> SqlError {
    SqlError::new(e.sqlstate(), e.to_string())
}

/// The id of move `i` of rebalance `rebalance`.
fn move_id(rebalance: &str, i: usize) -> String {
    format!("{rebalance}-{i}")
}

impl Cluster {
    /// Starts the runner of the running rebalance unless one runs here.
    pub(super) fn rebalance_pass(self: &Arc<Self>, state: &crate::meta::state::MetaState) {
        let Some(r) = state
            .rebalance
            .as_ref()
            .filter(|r| r.state == RebalanceState::Running)
        else {
            return;
        };
        {
            let mut running = self.moves.rebalancing.lock();
            if running.as_deref() == Some(r.id.as_str()) {
                return;
            }
            *running = Some(r.id.clone());
        }
        let (c, id) = (self.clone(), r.id.clone());
        tokio::spawn(async move {
            if let Err(e) = run_rebalance(&c, &id).await {
                tracing::warn!(rebalance = %id, error = %e.message, "rebalance failed");
                let _ = c
                    .propose(
                        MetaCommand::FinishRebalance {
                            id: id.clone(),
                            outcome: RebalanceOutcome::Failed(e.message.clone()),
                        },
                        "XX000",
                    )
                    .await;
            }
            *c.moves.rebalancing.lock() = None;
        });
    }
}

async fn run_rebalance(cluster: &Arc<Cluster>, id: &str) -> Result<(), SqlError> {
    loop {
        if !cluster.api().node().is_leader() {
            return Ok(());
        }
        let state = cluster.snapshot();
        let Some(r) = state
            .rebalance
            .as_ref()
            .filter(|r| r.id == id && r.state == RebalanceState::Running)
        else {
            // Cancelled (or replaced): stop here.
            return Ok(());
        };
        let i = r.moves_done as usize;
        let Some(m) = r.moves.get(i) else {
            cluster
                .propose(
                    MetaCommand::FinishRebalance {
                        id: id.to_owned(),
                        outcome: RebalanceOutcome::Completed,
                    },
                    "XX000",
                )
                .await?;
            tracing::info!(rebalance = id, moves = r.moves.len(), "rebalance completed");
            return Ok(());
        };
        let job = move_id(id, i);
        match state.moves.get(&job).map(|j| &j.state) {
            Some(MoveState::Switched | MoveState::Cancelled) => {}
            Some(MoveState::Failed(why)) => {
                return Err(SqlError::new("55000", format!("move {job}: {why}")))
            }
            Some(_) => {
                // An earlier leader's move: the move pass resumes it.
                if !cluster.move_running(&job) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => {
                // Skipped when the placement went elsewhere meanwhile.
                let shard = state
                    .placements
                    .get(&m.placement_id)
                    .filter(|p| p.node_id == m.from)
                    .map(|p| p.shard_id);
                if let Some(shard) = shard {
                    // A copy of the group that left the target a moment
                    // ago is dropped first (the cleaner's grace period).
                    if leftover_on(&state, shard, m.to) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    super::mover::start_move(cluster, &job, shard, (m.from, m.to), false).await?;
                }
            }
        }
        cluster
            .propose(
                MetaCommand::RebalanceProgress {
                    id: id.to_owned(),
                    moves_done: i as u64 + 1,
                },
                "XX000",
            )
            .await?;
    }
}

/// A cleanup record still names a shard of `shard`'s group on `node`.
fn leftover_on(state: &crate::meta::state::MetaState, shard: u64, node: u64) -> bool {
    let group = crate::meta::moves::shard_group(state, shard).unwrap_or_default();
    state
        .cleanups
        .values()
        .any(|r| r.node == node && r.shards.iter().any(|s| group.contains(s)))
}

/// Runs `rebalance_table_shards([relation], dry_run => bool)` or
/// `quiver_cancel_rebalance()`; the text of the result.
pub async fn run_call(call: &UtilityCall, cluster: &Arc<Cluster>) -> Result<String, SqlError> {
    let api = cluster.api();
    if call.name == "quiver_cancel_rebalance" {
        let (info, _) = api.cancel_rebalance().await.map_err(api_err)?;
        return Ok(format!(
            "rebalance {} cancelled after {} of {} moves",
            info.id,
            info.moves_done,
            info.moves.len()
        ));
    }
    let mut table = call.args.first().cloned();
    let mut dry_run = false;
    for (name, value) in &call.named {
        match name.as_str() {
            "relation" | "table_name" => table = Some(value.clone()),
            "dry_run" => {
                dry_run = matches!(value.to_ascii_lowercase().as_str(), "true" | "t" | "on" | "1")
            }
            "rebalance_strategy" if value == "by_shard_count" => {}
            other => {
                return Err(SqlError::new(
                    "42883",
                    format!("{}() has no parameter {other} => {value:?} (only relation, dry_run, rebalance_strategy => 'by_shard_count')", call.name),
                ))
            }
        }
    }
    let table = table.map(|t| crate::sql::idents::name_text(&t));
    if dry_run {
        let snap = cluster.snapshot();
        let moves = api.plan_rebalance(table.as_deref()).map_err(api_err)?;
        let lines: Vec<String> = moves
            .iter()
            .map(|m| {
                let shard = snap
                    .placements
                    .get(&m.placement_id)
                    .map_or(0, |p| p.shard_id);
                format!("move shard {shard} from node {} to node {}", m.from, m.to)
            })
            .collect();
        return Ok(if lines.is_empty() {
            "balanced: no move planned".into()
        } else {
            lines.join("\n")
        });
    }
    let (info, _) = api
        .start_rebalance(table.as_deref())
        .await
        .map_err(api_err)?;
    Ok(match info {
        Some(r) => format!("rebalance {} started: {} moves", r.id, r.moves.len()),
        None => "balanced: no move planned".into(),
    })
}
