//! Retiring the workers a scale-in removes: drain them, then remove them
//! from the cluster metadata, so that their pods go only once they hold
//! nothing and the coordinators no longer count on them.
//!
//! Step in the flow: in the controller's hold step, once the cluster state
//! is known (never when it is not: fail closed), after
//! [`crate::scale_in::leaving`] has listed the registered workers whose
//! pods the spec would remove, and before [`crate::scale_in::plan`] decides
//! what to hold from the state these calls leave ([`after`]).
//!
//! [`plan`] (pure) picks the calls, by the [`Gate`] of the rebalance:
//! - `RemoveNode` for a leaving worker that holds no placement, when it is
//!   draining (a draining worker is never a move's target) or no rebalance
//!   runs; and for a draining one that still counts placements once no
//!   rebalance runs (they may be reference-table copies, which go with the
//!   node; the coordinators refuse while it holds shards, which is fine);
//! - `DrainNode` for a leaving worker that holds placements, when no
//!   rebalance runs: one not draining yet unless the last rebalance failed
//!   or was cancelled recently, and one already draining (its drain ended
//!   without emptying it) only when no rebalance ended within the retry
//!   delay. One rebalance runs at a time, so [`retire`] stops after the first
//!   drain that starts; the others follow on later passes.
//!
//! Every call is idempotent across passes: a `FAILED_PRECONDITION` (a
//! rebalance runs, the worker still holds shards) or any other error leaves
//! the worker registered, so the hold stays and the next pass tries again.

use quiver_proto::meta::v1::{ClusterState, NodeRef};
use tonic::Code;

use crate::meta_client::{MetaClient, MetaError};
use crate::rebalance::Gate;
use crate::scale_in::Leaving;
use crate::status::Notice;
use kube::runtime::events::EventType;

/// Event reason: a worker's drain started.
pub const DRAINING: &str = "NodeDraining";
/// Event reason: a worker was removed from the cluster metadata.
pub const REMOVED: &str = "NodeRemoved";

/// The calls of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls {
    /// Workers to remove from the metadata.
    pub remove: Vec<Leaving>,
    /// Workers to drain, in order; at most one drain starts.
    pub drain: Vec<Leaving>,
}

/// A drain that started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// The worker.
    pub worker: Leaving,
    /// The rebalance moving its shards; empty when nothing had to move.
    pub rebalance_id: String,
    /// Moves planned.
    pub moves_total: u64,
}

/// What the calls did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    /// Drains that started.
    pub drained: Vec<Drained>,
    /// Workers removed from the metadata.
    pub removed: Vec<Leaving>,
    /// Calls that failed, as text (logged; the hold stays).
    pub failures: Vec<String>,
}

impl Retired {
    /// Whether no call changed anything.
    pub fn is_empty(&self) -> bool {
        self.drained.is_empty() && self.removed.is_empty()
    }
}

/// The calls to make for the `leaving` workers (pure).
pub fn plan(leaving: &[Leaving], gate: Gate) -> Calls {
    let running = gate == Gate::Running;
    let mut calls = Calls::default();
    for w in leaving {
        let removable = if w.placements == 0 {
            w.draining || !running
        } else {
            w.draining && !running
        };
        if removable {
            calls.remove.push(w.clone());
        }
        let drain = w.placements > 0
            && match gate {
                Gate::Open { quiet } => !w.draining || quiet,
                Gate::Running | Gate::CoolingDown => false,
            };
        if drain {
            calls.drain.push(w.clone());
        }
    }
    // The highest ordinals first: the last pods of a group go first.
    calls.drain.sort_by_key(|w| std::cmp::Reverse(w.ordinal));
    calls
}

fn node_ref(w: &Leaving) -> NodeRef {
    NodeRef {
        node_id: w.node_id,
        host: w.host.clone(),
        port: w.port,
    }
}

fn precondition(err: &MetaError) -> bool {
    matches!(err, MetaError::Rpc(s) if s.code() == Code::FailedPrecondition)
}

/// Makes the calls: removals first, then drains until one starts.
pub async fn retire(meta: &MetaClient, calls: &Calls) -> Retired {
    let mut out = Retired::default();
    for w in &calls.remove {
        match meta.remove_node(node_ref(w)).await {
            Ok(_) => {
                tracing::info!(pod = %w.pod, node = w.node_id, "removed a worker");
                out.removed.push(w.clone());
            }
            Err(err) => {
                if precondition(&err) {
                    tracing::info!(pod = %w.pod, error = %err, "worker not removable yet");
                } else {
                    tracing::warn!(pod = %w.pod, error = %err, "removing a worker failed");
                }
                out.failures.push(format!("RemoveNode {}: {err}", w.pod));
            }
        }
    }
    for w in &calls.drain {
        if out.removed.iter().any(|r| r.node_id == w.node_id) {
            continue;
        }
        match meta.drain_node(node_ref(w)).await {
            Ok(r) => {
                let (id, moves) = (&r.rebalance_id, r.moves_total);
                tracing::info!(pod = %w.pod, rebalance = %id, moves, "draining a worker");
                let started = !r.rebalance_id.is_empty();
                out.drained.push(Drained {
                    worker: w.clone(),
                    rebalance_id: r.rebalance_id,
                    moves_total: r.moves_total,
                });
                if started {
                    break;
                }
            }
            Err(err) => {
                let busy = precondition(&err);
                if busy {
                    tracing::info!(pod = %w.pod, error = %err, "worker not drainable yet");
                } else {
                    tracing::warn!(pod = %w.pod, error = %err, "draining a worker failed");
                }
                out.failures.push(format!("DrainNode {}: {err}", w.pod));
                // A rebalance runs or the coordinators are in trouble: the
                // next pass tries again.
                break;
            }
        }
    }
    out
}

/// The cluster state as the calls left it: removed workers gone, drained
/// ones draining.
pub fn after(state: &ClusterState, retired: &Retired) -> ClusterState {
    let mut state = state.clone();
    state
        .nodes
        .retain(|n| !retired.removed.iter().any(|r| r.node_id == n.node_id));
    for n in &mut state.nodes {
        if retired
            .drained
            .iter()
            .any(|d| d.worker.node_id == n.node_id)
        {
            n.draining = true;
        }
    }
    state
}

/// The Events of the calls that changed something.
pub fn notices(retired: &Retired) -> Vec<Notice> {
    let drained = retired.drained.iter().map(|d| Notice {
        type_: EventType::Normal,
        reason: DRAINING,
        note: if d.rebalance_id.is_empty() {
            format!(
                "draining worker {} (node {}) before removing it: no shard to move",
                d.worker.pod, d.worker.node_id
            )
        } else {
            format!(
                "draining worker {} (node {}) before removing it: rebalance {} moves {} shard \
                 group(s) off it",
                d.worker.pod, d.worker.node_id, d.rebalance_id, d.moves_total
            )
        },
        action: "DrainNode".to_owned(),
        pod: Some(d.worker.pod.clone()),
    });
    let removed = retired.removed.iter().map(|w| Notice {
        type_: EventType::Normal,
        reason: REMOVED,
        note: format!(
            "removed worker {} (node {}) from the cluster metadata; its pod goes next",
            w.pod, w.node_id
        ),
        action: "RemoveNode".to_owned(),
        pod: Some(w.pod.clone()),
    });
    drained.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::meta::v1::Node;

    fn worker(ordinal: i32, placements: u64, draining: bool) -> Leaving {
        Leaving {
            pod: format!("demo-worker-a-{ordinal}"),
            ordinal,
            node_id: 10 + u64::try_from(ordinal).unwrap(),
            host: format!("demo-worker-a-{ordinal}.demo-worker-a"),
            port: 9090,
            placements,
            draining,
        }
    }

    fn pods(list: &[Leaving]) -> Vec<i32> {
        list.iter().map(|w| w.ordinal).collect()
    }

    #[test]
    fn open_gate_drains_holders_and_removes_the_empty() {
        let leaving = [
            worker(1, 0, false),
            worker(2, 3, false),
            worker(3, 5, false),
        ];
        let calls = plan(&leaving, Gate::Open { quiet: true });
        assert_eq!(pods(&calls.remove), [1]);
        assert_eq!(pods(&calls.drain), [3, 2], "highest ordinal first");
    }

    #[test]
    fn a_running_rebalance_allows_only_removing_drained_workers() {
        let leaving = [
            worker(1, 0, false),
            worker(2, 0, true),
            worker(3, 5, true),
            worker(4, 5, false),
        ];
        let calls = plan(&leaving, Gate::Running);
        assert_eq!(pods(&calls.remove), [2]);
        assert!(calls.drain.is_empty());
    }

    #[test]
    fn a_drain_that_ended_unfinished_is_retried_only_after_the_delay() {
        let stuck = [worker(2, 4, true)];
        // Any rebalance ended recently: wait (it may have been this drain).
        let calls = plan(&stuck, Gate::Open { quiet: false });
        assert!(calls.drain.is_empty());
        assert_eq!(pods(&calls.remove), [2], "maybe only reference copies");
        let calls = plan(&stuck, Gate::Open { quiet: true });
        assert_eq!(pods(&calls.drain), [2]);
        // After a failure or cancel, no new drain either.
        let calls = plan(&[worker(3, 4, false)], Gate::CoolingDown);
        assert!(calls.drain.is_empty());
        // A worker not draining yet starts right after another's drain.
        let calls = plan(&[worker(3, 4, false)], Gate::Open { quiet: false });
        assert_eq!(pods(&calls.drain), [3]);
    }

    #[test]
    fn after_drops_removed_workers_and_marks_drained_ones() {
        let node = |id: u64| Node {
            node_id: id,
            ..Node::default()
        };
        let state = ClusterState {
            nodes: vec![node(10), node(11), node(12)],
            ..ClusterState::default()
        };
        let retired = Retired {
            drained: vec![Drained {
                worker: worker(2, 3, false),
                rebalance_id: "r1".into(),
                moves_total: 3,
            }],
            removed: vec![worker(1, 0, false)],
            failures: Vec::new(),
        };
        let left = after(&state, &retired);
        let ids: Vec<(u64, bool)> = left.nodes.iter().map(|n| (n.node_id, n.draining)).collect();
        assert_eq!(ids, [(10, false), (12, true)]);
        let reasons: Vec<&str> = notices(&retired).iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [DRAINING, REMOVED]);
    }
}
