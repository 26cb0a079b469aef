//! Step 5 of reconcile: derive the status.
//!
//! [`compute_status`] is a pure function of what [`crate::apply`] applied
//! (the StatefulSets as the API server returned them, so with their current
//! status) and of the coordinators' `GetClusterState` answer (or why there
//! was none). It fills `observedGeneration`, the phase, ready and registered
//! workers, the leader, shard and rebalance figures, and the conditions
//! `Ready`, `Progressing`, `Degraded`, `Rebalancing` and `ReadOnly`. A
//! condition keeps its `lastTransitionTime` while its status is unchanged, so
//! a second pass over an unchanged cluster writes the same status. The
//! rebalance figures come from [`crate::rebalance::observed`], and are kept
//! from the previous status while the cluster state cannot be read.
//!
//! The Events the controller publishes on notable transitions between the
//! previous status and this one are [`Notice`]s.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;
use quiver_proto::meta::v1::{ClusterState, NodeRole};

use crate::apply::Applied;
use crate::build::{coordinator_name, worker_group_name, LABEL_COMPONENT, LABEL_INSTANCE};
use crate::crd::{
    CoordinatorStatus, DistributedDatabaseStatus, Phase, RebalancePhase, ShardsStatus,
    WorkersStatus,
};
use crate::rebalance;
use crate::validate::ValidDatabase;

/// Condition: the cluster serves queries with every pod ready.
pub const READY: &str = "Ready";
/// Condition: a change is rolling out or pods are starting.
pub const PROGRESSING: &str = "Progressing";
/// Condition: running but impaired (no leader, under-replicated shards...).
pub const DEGRADED: &str = "Degraded";
/// Condition: shards are moving.
pub const REBALANCING: &str = "Rebalancing";
/// Condition: the cluster refuses writes.
pub const READ_ONLY: &str = "ReadOnly";

/// An Event to publish about the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub type_: EventType,
    /// The Event's reason (CamelCase).
    pub reason: &'static str,
    /// What happened, for people.
    pub note: String,
    /// What was done or seen (the Event's `action`). With the reason it
    /// tells Events apart: the recorder folds an Event into an earlier one
    /// with the same reason and action (keeping the earlier note).
    pub action: String,
    /// The pod the Event is also about (its `related` object), if any.
    pub pod: Option<String>,
}

/// What the metadata API said, or why it said nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterView {
    /// The leader's answer.
    State(Box<ClusterState>),
    /// No answer; the text says why (shown in conditions).
    Unavailable(String),
}

/// A condition with its reason and message.
fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &Time,
    previous: Option<&DistributedDatabaseStatus>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time,
    }
}

fn ready_of(sts: Option<&StatefulSet>) -> i32 {
    sts.and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn current_of(sts: Option<&StatefulSet>) -> i32 {
    sts.and_then(|s| s.status.as_ref())
        .map(|s| s.replicas)
        .unwrap_or(0)
}

/// A StatefulSet still rolling out: its controller has not seen the last
/// change, or not every replica runs the current revision and is ready.
fn rolling(sts: Option<&StatefulSet>, want: i32) -> bool {
    let Some(sts) = sts else { return true };
    let Some(status) = sts.status.as_ref() else {
        return true;
    };
    let generation = sts.metadata.generation.unwrap_or(0);
    status.observed_generation.unwrap_or(0) < generation
        || status.ready_replicas.unwrap_or(0) < want
        || status.updated_replicas.unwrap_or(0) < want
        || status.replicas != want
}

/// Pod name of the node at `host:port` (the first DNS label).
pub fn pod_name_of(address: &str) -> Option<String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let pod = host.split('.').next().unwrap_or_default();
    (!pod.is_empty()).then(|| pod.to_owned())
}

/// Label selector of every worker pod, for the scale subresource.
pub fn worker_selector(db: &ValidDatabase) -> String {
    format!("{LABEL_INSTANCE}={},{LABEL_COMPONENT}=worker", db.name)
}

/// The status of a valid resource.
pub fn compute_status(
    db: &ValidDatabase,
    applied: &Applied,
    view: &ClusterView,
    previous: Option<&DistributedDatabaseStatus>,
    now: &Time,
) -> DistributedDatabaseStatus {
    let generation = db.generation;
    let coordinator_sts = applied.stateful_set(&coordinator_name(db));
    let want_coordinators = db.spec.coordinator.replicas;
    let coordinators_ready = ready_of(coordinator_sts);

    let mut workers_ready = 0;
    let mut per_group_min: Option<i32> = None;
    let mut rolling_groups = Vec::new();
    for group in &db.spec.worker_groups {
        let sts = applied.stateful_set(&worker_group_name(db, &group.name));
        workers_ready += ready_of(sts);
        let current = current_of(sts);
        per_group_min = Some(per_group_min.map_or(current, |m| m.min(current)));
        if rolling(sts, db.spec.group_replicas(group)) {
            rolling_groups.push(group.name.clone());
        }
    }
    let want_workers = i32::try_from(db.spec.total_worker_replicas()).unwrap_or(i32::MAX);
    let coordinator_rolling = rolling(coordinator_sts, want_coordinators);

    let state = match view {
        ClusterView::State(s) => Some(s.as_ref()),
        ClusterView::Unavailable(_) => None,
    };
    let leader = state
        .filter(|s| !s.leader_address.is_empty())
        .and_then(|s| pod_name_of(&s.leader_address));
    let workers: Vec<_> = state
        .map(|s| {
            s.nodes
                .iter()
                .filter(|n| n.role == NodeRole::Worker as i32)
                .collect()
        })
        .unwrap_or_default();
    let registered = i32::try_from(workers.iter().filter(|n| n.active).count()).unwrap_or(i32::MAX);
    let draining = i32::try_from(workers.iter().filter(|n| n.draining).count()).unwrap_or(i32::MAX);
    let shards = state.and_then(|s| s.shards).unwrap_or_default();
    let rebalance = match state {
        Some(s) => rebalance::observed(s.rebalance.as_ref(), previous.map(|p| &p.rebalance), now),
        None => previous.map(|p| p.rebalance.clone()).unwrap_or_default(),
    };
    let read_only = state.is_some_and(|s| s.read_only);

    // Progressing: something is still converging.
    let progressing_reason = if coordinator_rolling {
        Some((
            "CoordinatorsRollingOut",
            format!("coordinators: {coordinators_ready}/{want_coordinators} ready"),
        ))
    } else if !rolling_groups.is_empty() {
        Some((
            "WorkersRollingOut",
            format!(
                "worker groups rolling out: {}; {workers_ready}/{want_workers} workers ready",
                rolling_groups.join(", ")
            ),
        ))
    } else if state.is_some() && registered < want_workers {
        Some((
            "WaitingForRegistration",
            format!("{registered}/{want_workers} workers registered with the coordinators"),
        ))
    } else {
        None
    };

    // Degraded: running, but impaired.
    let degraded_reason = if read_only {
        Some((
            "ReadOnly",
            state
                .map(|s| s.read_only_reason.clone())
                .unwrap_or_default(),
        ))
    } else if shards.under_replicated > 0 {
        Some((
            "UnderReplicated",
            format!(
                "{} of {} shards have fewer placements than the replication factor",
                shards.under_replicated, shards.total
            ),
        ))
    } else if coordinators_ready > 0 && !coordinator_rolling {
        match view {
            ClusterView::Unavailable(why) => Some((
                "MetadataUnavailable",
                format!("cannot read the cluster state: {why}"),
            )),
            ClusterView::State(_) if leader.is_none() => Some((
                "NoLeader",
                "the coordinators have no Raft leader".to_owned(),
            )),
            ClusterView::State(_) => None,
        }
    } else {
        None
    };

    let ready = progressing_reason.is_none() && degraded_reason.is_none() && leader.is_some();
    let phase = if ready {
        Phase::Ready
    } else if degraded_reason.is_some() {
        Phase::Degraded
    } else if coordinators_ready == 0 {
        Phase::Pending
    } else {
        Phase::Progressing
    };

    let ready_message = if ready {
        format!(
            "{coordinators_ready} coordinators and {workers_ready} workers ready; leader {}",
            leader.clone().unwrap_or_default()
        )
    } else {
        degraded_reason
            .as_ref()
            .or(progressing_reason.as_ref())
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| "waiting for a Raft leader".to_owned())
    };
    let ready_reason = if ready { "ClusterReady" } else { "NotReady" };
    let rebalancing = matches!(
        rebalance.state,
        Some(RebalancePhase::Running | RebalancePhase::Cancelling)
    );
    let (rebalancing_reason, rebalancing_message) = match rebalance.state {
        _ if rebalancing => (
            "ShardsMoving",
            format!(
                "{}/{} shard moves done",
                rebalance.moves_done, rebalance.moves_total
            ),
        ),
        Some(RebalancePhase::Completed) => ("Completed", String::new()),
        Some(RebalancePhase::Cancelled) => ("Cancelled", String::new()),
        Some(RebalancePhase::Failed) => ("Failed", rebalance.error.clone().unwrap_or_default()),
        _ => ("Idle", String::new()),
    };

    let conditions = vec![
        condition(
            READY,
            ready,
            ready_reason,
            ready_message,
            generation,
            now,
            previous,
        ),
        condition(
            PROGRESSING,
            progressing_reason.is_some(),
            progressing_reason.as_ref().map_or("Stable", |(r, _)| r),
            progressing_reason
                .as_ref()
                .map(|(_, m)| m.clone())
                .unwrap_or_default(),
            generation,
            now,
            previous,
        ),
        condition(
            DEGRADED,
            degraded_reason.is_some(),
            degraded_reason.as_ref().map_or("Healthy", |(r, _)| r),
            degraded_reason
                .as_ref()
                .map(|(_, m)| m.clone())
                .unwrap_or_default(),
            generation,
            now,
            previous,
        ),
        condition(
            REBALANCING,
            rebalancing,
            rebalancing_reason,
            rebalancing_message,
            generation,
            now,
            previous,
        ),
        condition(
            READ_ONLY,
            read_only,
            if read_only {
                "WritesRefused"
            } else {
                "Writable"
            },
            state
                .map(|s| s.read_only_reason.clone())
                .unwrap_or_default(),
            generation,
            now,
            previous,
        ),
    ];

    DistributedDatabaseStatus {
        phase: Some(phase),
        observed_generation: Some(generation),
        conditions,
        coordinator: CoordinatorStatus {
            ready_replicas: coordinators_ready,
            leader,
        },
        workers: WorkersStatus {
            ready_replicas: workers_ready,
            replicas_per_group: per_group_min.unwrap_or(0),
            selector: Some(worker_selector(db)),
            registered,
            draining,
        },
        shards: ShardsStatus {
            total: to_i64(shards.total),
            under_replicated: to_i64(shards.under_replicated),
            misplaced: to_i64(shards.misplaced),
        },
        rebalance,
    }
}

/// The status of a resource that broke a rule: `Ready` false with the
/// rule's message, phase `Invalid`; the rest of the previous status kept.
pub fn invalid_status(
    generation: i64,
    message: &str,
    previous: Option<&DistributedDatabaseStatus>,
    now: &Time,
) -> DistributedDatabaseStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let ready = condition(
        READY,
        false,
        "InvalidSpec",
        message.to_owned(),
        generation,
        now,
        previous,
    );
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.insert(0, ready);
    status.phase = Some(Phase::Invalid);
    status.observed_generation = Some(generation);
    status
}

/// A protobuf count as the status's integer.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
