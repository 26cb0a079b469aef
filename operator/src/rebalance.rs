//! Rebalancing: what the operator reads of the coordinators' rebalance, and
//! when it starts one itself.
//!
//! Step in the flow: "drive the cluster", after [`crate::apply`] and the
//! read of the cluster state, and an input of [`crate::status`]:
//!
//! - [`observed`] turns the coordinators' `RebalanceProgress` into
//!   `status.rebalance`, with the time the operator first saw that
//!   rebalance in that state (kept while nothing changes);
//! - [`gate`] says whether a rebalance may start now: none runs, and the
//!   last one did not fail or get cancelled less than
//!   `Settings::rebalance_retry` ago (so a failing rebalance is not
//!   restarted in a loop). The drains of [`crate::retire`] obey it too;
//! - scale-out: [`decide`] (pure) and [`auto_rebalance`] start a rebalance
//!   (`Rebalance{START}`) when `spec.rebalance.auto` is on, every worker of
//!   the spec is registered, no scale-in is under way, the gate is open, and
//!   a worker holds no shards while others do, or the coordinators' plan
//!   (`Rebalance{PLAN}`) has moves. Its progress is put into the view the
//!   status is computed from, so the status shows it at once;
//! - [`notices`]: the Events of a rebalance's transitions between the
//!   previous status and the new one (started, completed, failed,
//!   cancelled), whoever started it (this operator, a drain, a user).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;
use kube::runtime::events::EventType;
use quiver_proto::meta::v1::{
    ClusterState, NodeRole, RebalanceAction, RebalanceProgress, RebalanceState,
};
use tonic::Code;

use crate::build::worker_group_name;
use crate::crd::{RebalancePhase, RebalanceStatus};
use crate::meta_client::{MetaClient, MetaError};
use crate::status::{pod_name_of, to_i64, Notice};
use crate::validate::ValidDatabase;

/// Event reason: a rebalance started.
pub const STARTED: &str = "RebalanceStarted";
/// Event reason: a rebalance made every planned move.
pub const COMPLETED: &str = "RebalanceCompleted";
/// Event reason: a rebalance failed.
pub const FAILED: &str = "RebalanceFailed";
/// Event reason: a rebalance was cancelled.
pub const CANCELLED: &str = "RebalanceCancelled";

/// The status phase of a protobuf `RebalanceState`; `None` when unspecified.
pub fn phase_of(state: i32) -> Option<RebalancePhase> {
    match RebalanceState::try_from(state).ok()? {
        RebalanceState::Unspecified => None,
        RebalanceState::Idle => Some(RebalancePhase::Idle),
        RebalanceState::Running => Some(RebalancePhase::Running),
        RebalanceState::Cancelling => Some(RebalancePhase::Cancelling),
        RebalanceState::Completed => Some(RebalancePhase::Completed),
        RebalanceState::Cancelled => Some(RebalancePhase::Cancelled),
        RebalanceState::Failed => Some(RebalancePhase::Failed),
    }
}

/// `status.rebalance` from the coordinators' progress; the transition time
/// is kept from `previous` while the rebalance and its state are the same.
pub fn observed(
    progress: Option<&RebalanceProgress>,
    previous: Option<&RebalanceStatus>,
    now: &Time,
) -> RebalanceStatus {
    let p = progress.cloned().unwrap_or_default();
    let id = (!p.rebalance_id.is_empty()).then_some(p.rebalance_id);
    let state = phase_of(p.state);
    let last_transition_time = previous
        .filter(|prev| prev.id == id && prev.state == state)
        .and_then(|prev| prev.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let (moves_done, moves_total) = (to_i64(p.moves_done), to_i64(p.moves_total));
    RebalanceStatus {
        progress: id.as_ref().map(|_| format!("{moves_done}/{moves_total}")),
        id,
        state,
        moves_done,
        moves_total,
        bytes_left: to_i64(p.bytes_left),
        error: (!p.error.is_empty()).then_some(p.error),
        last_transition_time: Some(last_transition_time),
    }
}

/// Whether a rebalance may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A rebalance runs or is being cancelled.
    Running,
    /// The last one failed or was cancelled less than the retry delay ago.
    CoolingDown,
    /// Nothing runs; `quiet`: no rebalance ended within the retry delay.
    Open {
        /// Nothing ended within the retry delay.
        quiet: bool,
    },
}

/// The gate, from the rebalance as [`observed`] this pass.
pub fn gate(current: &RebalanceStatus, now: &Time, retry: Duration) -> Gate {
    let retry = SignedDuration::try_from(retry).unwrap_or(SignedDuration::MAX);
    let recent = current
        .last_transition_time
        .as_ref()
        .is_some_and(|since| now.0.duration_since(since.0) < retry);
    match current.state {
        Some(RebalancePhase::Running | RebalancePhase::Cancelling) => Gate::Running,
        Some(RebalancePhase::Failed | RebalancePhase::Cancelled) if recent => Gate::CoolingDown,
        Some(RebalancePhase::Completed) => Gate::Open { quiet: !recent },
        _ => Gate::Open { quiet: true },
    }
}

/// What the scale-out step does this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auto {
    /// Start a rebalance, for this reason.
    Start(String),
    /// Ask the coordinators for a plan; start when it has moves.
    Plan,
    /// Nothing, for this reason.
    Skip(String),
}

/// The scale-out decision (pure). `scale_in`: workers are being drained,
/// removed or held this pass.
pub fn decide(db: &ValidDatabase, state: &ClusterState, gate: Gate, scale_in: bool) -> Auto {
    if !db.spec.rebalance.auto {
        return Auto::Skip("spec.rebalance.auto is false".to_owned());
    }
    if scale_in {
        return Auto::Skip("workers are being removed".to_owned());
    }
    match gate {
        Gate::Running => return Auto::Skip("a rebalance is running".to_owned()),
        Gate::CoolingDown => {
            return Auto::Skip("the last rebalance failed or was cancelled recently".to_owned())
        }
        Gate::Open { .. } => {}
    }
    let mut missing = Vec::new();
    let mut empty = Vec::new();
    let mut holding = false;
    for group in &db.spec.worker_groups {
        let sts = worker_group_name(db, &group.name);
        for ordinal in 0..db.spec.group_replicas(group) {
            let pod = format!("{sts}-{ordinal}");
            let node = state.nodes.iter().find(|n| {
                n.role == NodeRole::Worker as i32 && pod_name_of(&n.host).as_ref() == Some(&pod)
            });
            match node {
                Some(n) if n.active => {
                    if n.draining {
                        continue;
                    }
                    if n.placements == 0 {
                        empty.push(pod);
                    } else {
                        holding = true;
                    }
                }
                _ => missing.push(pod),
            }
        }
    }
    if !missing.is_empty() {
        return Auto::Skip(format!("waiting for {} to register", missing.join(", ")));
    }
    if holding && !empty.is_empty() {
        return Auto::Start(format!("{} hold no shards", empty.join(", ")));
    }
    Auto::Plan
}

/// Carries out the decision; the progress of the rebalance it started, if
/// it started one. Failures are logged: the next pass decides again.
pub async fn auto_rebalance(meta: &MetaClient, decision: Auto) -> Option<RebalanceProgress> {
    match decision {
        Auto::Skip(why) => {
            tracing::debug!(%why, "no automatic rebalance");
            None
        }
        Auto::Plan => match meta.rebalance(RebalanceAction::Plan).await {
            Ok(plan) if !plan.moves.is_empty() => {
                let why = format!("the coordinators plan {} move(s)", plan.moves.len());
                start(meta, &why).await
            }
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(error = %err, "asking the coordinators for a rebalance plan failed");
                None
            }
        },
        Auto::Start(why) => start(meta, &why).await,
    }
}

async fn start(meta: &MetaClient, why: &str) -> Option<RebalanceProgress> {
    match meta.rebalance(RebalanceAction::Start).await {
        Ok(r) if !r.rebalance_id.is_empty() => {
            let (id, moves) = (&r.rebalance_id, r.moves.len());
            tracing::info!(%id, moves, %why, "started a rebalance");
            let total = u64::try_from(r.moves.len()).unwrap_or(u64::MAX);
            Some(
                r.progress
                    .filter(|p| p.rebalance_id == r.rebalance_id)
                    .unwrap_or(RebalanceProgress {
                        state: RebalanceState::Running.into(),
                        rebalance_id: r.rebalance_id,
                        moves_total: total,
                        ..RebalanceProgress::default()
                    }),
            )
        }
        Ok(_) => None,
        Err(MetaError::Rpc(status)) if status.code() == Code::FailedPrecondition => {
            tracing::info!(reason = %status.message(), "a rebalance cannot start now");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, %why, "starting a rebalance failed");
            None
        }
    }
}

/// The Events of the rebalance's transition from `previous` to `current`.
/// A rebalance first seen already ended, with no rebalance in the previous
/// status, gets none: it may be an old one.
pub fn notices(previous: Option<&RebalanceStatus>, current: &RebalanceStatus) -> Vec<Notice> {
    let Some(id) = current.id.as_deref() else {
        return Vec::new();
    };
    let prev_id = previous.and_then(|p| p.id.as_deref());
    let prev_state = previous.and_then(|p| p.state);
    if prev_id == Some(id) && prev_state == current.state {
        return Vec::new();
    }
    let fresh = prev_id != Some(id);
    let ended = matches!(
        current.state,
        Some(RebalancePhase::Completed | RebalancePhase::Failed | RebalancePhase::Cancelled)
    );
    if fresh && prev_id.is_none() && ended {
        return Vec::new();
    }
    let (done, total) = (current.moves_done, current.moves_total);
    let mut out = Vec::new();
    if fresh {
        out.push(Notice {
            type_: EventType::Normal,
            reason: STARTED,
            note: format!("rebalance {id} started: {total} shard group move(s) planned"),
            action: format!("Rebalance/{id}"),
            pod: None,
        });
    }
    let end = match current.state {
        Some(RebalancePhase::Completed) => Some((
            EventType::Normal,
            COMPLETED,
            format!("rebalance {id} completed: {done}/{total} moves done"),
        )),
        Some(RebalancePhase::Cancelled) => Some((
            EventType::Normal,
            CANCELLED,
            format!("rebalance {id} cancelled after {done}/{total} moves"),
        )),
        Some(RebalancePhase::Failed) => Some((
            EventType::Warning,
            FAILED,
            format!(
                "rebalance {id} failed after {done}/{total} moves: {}",
                current.error.as_deref().unwrap_or("no reason given")
            ),
        )),
        _ => None,
    };
    out.extend(end.map(|(type_, reason, note)| Notice {
        type_,
        reason,
        note,
        action: format!("Rebalance/{id}"),
        pod: None,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + second).unwrap())
    }

    fn progress(id: &str, state: RebalanceState, done: u64, total: u64) -> RebalanceProgress {
        RebalanceProgress {
            state: state.into(),
            rebalance_id: id.into(),
            moves_done: done,
            moves_total: total,
            ..RebalanceProgress::default()
        }
    }

    #[test]
    fn observed_keeps_the_transition_time_while_nothing_changes() {
        let running = progress("r1", RebalanceState::Running, 1, 4);
        let first = observed(Some(&running), None, &at(0));
        assert_eq!(first.id.as_deref(), Some("r1"));
        assert_eq!(first.state, Some(RebalancePhase::Running));
        assert_eq!(first.progress.as_deref(), Some("1/4"));
        let later = observed(
            Some(&progress("r1", RebalanceState::Running, 3, 4)),
            Some(&first),
            &at(30),
        );
        assert_eq!(later.last_transition_time, Some(at(0)));
        assert_eq!(later.progress.as_deref(), Some("3/4"));
        let done = observed(
            Some(&progress("r1", RebalanceState::Completed, 4, 4)),
            Some(&later),
            &at(60),
        );
        assert_eq!(done.last_transition_time, Some(at(60)));
        // No rebalance ever ran: no id, no progress text.
        let idle = observed(None, None, &at(0));
        assert_eq!((idle.id, idle.state, idle.progress), (None, None, None));
    }

    #[test]
    fn the_gate_cools_down_after_a_failure_or_cancel_only() {
        let retry = Duration::from_secs(300);
        let failed = observed(
            Some(&progress("r1", RebalanceState::Failed, 1, 4)),
            None,
            &at(0),
        );
        assert_eq!(gate(&failed, &at(10), retry), Gate::CoolingDown);
        assert_eq!(gate(&failed, &at(301), retry), Gate::Open { quiet: true });
        let cancelled = observed(
            Some(&progress("r1", RebalanceState::Cancelled, 1, 4)),
            None,
            &at(0),
        );
        assert_eq!(gate(&cancelled, &at(10), retry), Gate::CoolingDown);
        let completed = observed(
            Some(&progress("r1", RebalanceState::Completed, 4, 4)),
            None,
            &at(0),
        );
        assert_eq!(
            gate(&completed, &at(10), retry),
            Gate::Open { quiet: false }
        );
        assert_eq!(
            gate(&completed, &at(400), retry),
            Gate::Open { quiet: true }
        );
        let running = observed(
            Some(&progress("r1", RebalanceState::Cancelling, 1, 4)),
            None,
            &at(0),
        );
        assert_eq!(gate(&running, &at(1000), retry), Gate::Running);
        let idle = observed(None, None, &at(0));
        assert_eq!(gate(&idle, &at(0), retry), Gate::Open { quiet: true });
    }

    fn db(replicas: i32) -> ValidDatabase {
        let yaml = include_str!("../tests/fixtures/minimal.yaml");
        let value: crate::crd::DistributedDatabase = serde_saphyr::from_str(yaml).unwrap();
        let mut db = crate::validate::validate(&value).unwrap();
        db.spec.worker_groups[0].replicas = Some(replicas);
        db
    }

    fn state(placements: &[u64]) -> ClusterState {
        let nodes = placements
            .iter()
            .enumerate()
            .map(|(i, p)| quiver_proto::meta::v1::Node {
                host: format!("demo-worker-a-{i}.demo-worker-a"),
                role: NodeRole::Worker.into(),
                active: true,
                placements: *p,
                ..Default::default()
            })
            .collect();
        ClusterState {
            nodes,
            ..ClusterState::default()
        }
    }

    #[test]
    fn scale_out_starts_for_an_empty_worker_and_asks_the_plan_otherwise() {
        let open = Gate::Open { quiet: true };
        assert_eq!(
            decide(&db(3), &state(&[4, 4, 0]), open, false),
            Auto::Start("demo-worker-a-2 hold no shards".into())
        );
        assert_eq!(decide(&db(3), &state(&[4, 4, 1]), open, false), Auto::Plan);
        // A new cluster without data: every worker empty, ask the plan.
        assert_eq!(decide(&db(3), &state(&[0, 0, 0]), open, false), Auto::Plan);
        // A draining worker does not count as empty.
        let mut draining = state(&[4, 4, 0]);
        draining.nodes[2].draining = true;
        assert_eq!(decide(&db(3), &draining, open, false), Auto::Plan);
    }

    #[test]
    fn scale_out_waits_for_registration_scale_in_and_the_gate() {
        let open = Gate::Open { quiet: true };
        let skip = |a: Auto| matches!(a, Auto::Skip(_));
        assert_eq!(
            decide(&db(3), &state(&[4, 4]), open, false),
            Auto::Skip("waiting for demo-worker-a-2 to register".into())
        );
        let mut inactive = state(&[4, 4, 0]);
        inactive.nodes[2].active = false;
        assert!(skip(decide(&db(3), &inactive, open, false)));
        assert!(skip(decide(&db(3), &state(&[4, 4, 0]), open, true)));
        assert!(skip(decide(
            &db(3),
            &state(&[4, 4, 0]),
            Gate::Running,
            false
        )));
        assert!(skip(decide(
            &db(3),
            &state(&[4, 4, 0]),
            Gate::CoolingDown,
            false
        )));
        let mut off = db(3);
        off.spec.rebalance.auto = false;
        assert!(skip(decide(&off, &state(&[4, 4, 0]), open, false)));
    }

    #[test]
    fn notices_follow_the_transitions() {
        let reasons = |n: Vec<Notice>| n.into_iter().map(|n| n.reason).collect::<Vec<_>>();
        let running = observed(
            Some(&progress("r1", RebalanceState::Running, 0, 4)),
            None,
            &at(0),
        );
        assert_eq!(reasons(notices(None, &running)), [STARTED]);
        assert_eq!(
            reasons(notices(Some(&running), &running)),
            Vec::<&str>::new()
        );
        let completed = observed(
            Some(&progress("r1", RebalanceState::Completed, 4, 4)),
            Some(&running),
            &at(9),
        );
        let n = notices(Some(&running), &completed);
        assert_eq!(n[0].reason, COMPLETED);
        assert_eq!(n[0].note, "rebalance r1 completed: 4/4 moves done");
        // Started and ended between two passes: both.
        let mut failed = observed(
            Some(&progress("r2", RebalanceState::Failed, 1, 3)),
            Some(&completed),
            &at(20),
        );
        failed.error = Some("worker 12 unreachable".into());
        let n = notices(Some(&completed), &failed);
        assert_eq!(reasons(n.clone()), [STARTED, FAILED]);
        assert_eq!(n[1].type_, EventType::Warning);
        assert!(n[1].note.contains("worker 12 unreachable"), "{}", n[1].note);
        // An ended rebalance with none before it may be an old one: silent.
        assert!(notices(None, &completed).is_empty());
        let cancelled = observed(
            Some(&progress("r2", RebalanceState::Cancelled, 1, 3)),
            None,
            &at(20),
        );
        let running2 = observed(
            Some(&progress("r2", RebalanceState::Running, 1, 3)),
            None,
            &at(10),
        );
        assert_eq!(reasons(notices(Some(&running2), &cancelled)), [CANCELLED]);
    }
}
