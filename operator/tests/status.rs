//! The pure status computation: phase and conditions from applied
//! StatefulSets and the metadata API's answer.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use quiver_operator::apply::Applied;
use quiver_operator::build::build_all;
use quiver_operator::crd::{DistributedDatabase, DistributedDatabaseStatus, Phase};
use quiver_operator::status::{compute_status, invalid_status, pod_name_of, ClusterView};
use quiver_operator::validate::{validate, ValidDatabase};
use quiver_proto::meta::v1::{
    ClusterState, Node, NodeRole, RebalanceProgress, RebalanceState, ShardTotals,
};

fn db() -> ValidDatabase {
    let text = include_str!("fixtures/ha.yaml");
    let db: DistributedDatabase = serde_saphyr::from_str(text).expect("fixture");
    validate(&db).expect("valid")
}

/// The desired StatefulSets with `ready` of `replicas` ready (all when None).
fn applied(db: &ValidDatabase, ready: Option<i32>) -> Applied {
    let desired = build_all(db, None).expect("builds");
    let stateful_sets = desired
        .stateful_sets
        .into_iter()
        .map(|mut s: StatefulSet| {
            let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            s.metadata.generation = Some(2);
            s.status = Some(StatefulSetStatus {
                observed_generation: Some(2),
                replicas,
                ready_replicas: Some(ready.unwrap_or(replicas)),
                updated_replicas: Some(replicas),
                ..StatefulSetStatus::default()
            });
            s
        })
        .collect();
    Applied {
        stateful_sets,
        deleted: Vec::new(),
    }
}

fn healthy_state() -> ClusterState {
    let worker = |group: &str, i: usize| Node {
        host: format!("analytics-worker-{group}-{i}.analytics-worker-{group}"),
        port: 9090,
        role: NodeRole::Worker.into(),
        group: group.into(),
        active: true,
        ..Node::default()
    };
    let mut nodes: Vec<Node> = (0..3).map(|i| worker("a", i)).collect();
    nodes.extend((0..2).map(|i| worker("b", i)));
    ClusterState {
        leader_id: 1,
        leader_address: "analytics-coordinator-1.analytics-coordinator:9090".into(),
        nodes,
        shards: Some(ShardTotals {
            total: 64,
            under_replicated: 0,
            misplaced: 0,
        }),
        ..ClusterState::default()
    }
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).expect("timestamp"))
}

fn condition<'a>(status: &'a DistributedDatabaseStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn healthy_cluster_is_ready() {
    let db = db();
    let status = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(healthy_state())),
        None,
        &now(),
    );
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(condition(&status, "Ready"), ("True", "ClusterReady"));
    assert_eq!(condition(&status, "Progressing").0, "False");
    assert_eq!(condition(&status, "Degraded").0, "False");
    assert_eq!(condition(&status, "Rebalancing").0, "False");
    assert_eq!(condition(&status, "ReadOnly").0, "False");
    assert_eq!(
        status.coordinator.leader.as_deref(),
        Some("analytics-coordinator-1")
    );
    assert_eq!(status.coordinator.ready_replicas, 3);
    assert_eq!(status.workers.ready_replicas, 5);
    assert_eq!(status.workers.registered, 5);
    assert_eq!(status.workers.replicas_per_group, 2);
    assert_eq!(
        status.workers.selector.as_deref(),
        Some("app.kubernetes.io/instance=analytics,app.kubernetes.io/component=worker")
    );
    assert_eq!(status.shards.total, 64);
}

#[test]
fn pods_not_ready_is_progressing() {
    let db = db();
    let status = compute_status(
        &db,
        &applied(&db, Some(1)),
        &ClusterView::State(Box::new(healthy_state())),
        None,
        &now(),
    );
    assert_eq!(status.phase, Some(Phase::Progressing));
    assert_eq!(
        condition(&status, "Progressing"),
        ("True", "CoordinatorsRollingOut")
    );
    assert_eq!(condition(&status, "Ready").0, "False");
}

#[test]
fn nothing_ready_is_pending() {
    let db = db();
    let view = ClusterView::Unavailable("no coordinator is ready yet".into());
    let status = compute_status(&db, &applied(&db, Some(0)), &view, None, &now());
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(
        condition(&status, "Degraded").0,
        "False",
        "not degraded while starting"
    );
}

#[test]
fn unreachable_metadata_api_is_degraded() {
    let db = db();
    let view = ClusterView::Unavailable("connection refused".into());
    let status = compute_status(&db, &applied(&db, None), &view, None, &now());
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(
        condition(&status, "Degraded"),
        ("True", "MetadataUnavailable")
    );
    assert_eq!(status.coordinator.leader, None);
}

#[test]
fn no_leader_and_under_replication_are_degraded() {
    let db = db();
    let mut state = healthy_state();
    state.leader_address.clear();
    let status = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(state)),
        None,
        &now(),
    );
    assert_eq!(condition(&status, "Degraded"), ("True", "NoLeader"));

    let mut state = healthy_state();
    state.shards = Some(ShardTotals {
        total: 64,
        under_replicated: 3,
        misplaced: 1,
    });
    let status = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(state)),
        None,
        &now(),
    );
    assert_eq!(condition(&status, "Degraded"), ("True", "UnderReplicated"));
    assert_eq!(status.shards.under_replicated, 3);
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn missing_registrations_keep_it_progressing() {
    let db = db();
    let mut state = healthy_state();
    state.nodes.pop();
    let status = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(state)),
        None,
        &now(),
    );
    assert_eq!(
        condition(&status, "Progressing"),
        ("True", "WaitingForRegistration")
    );
    assert_eq!(status.workers.registered, 4);
}

#[test]
fn rebalance_and_read_only_have_their_conditions() {
    let db = db();
    let mut state = healthy_state();
    state.rebalance = Some(RebalanceProgress {
        state: RebalanceState::Running.into(),
        moves_done: 3,
        moves_total: 8,
        bytes_left: 1024,
        ..RebalanceProgress::default()
    });
    state.read_only = true;
    state.read_only_reason = "shard 7 has no healthy placement".into();
    let status = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(state)),
        None,
        &now(),
    );
    assert_eq!(condition(&status, "Rebalancing"), ("True", "ShardsMoving"));
    assert_eq!(condition(&status, "ReadOnly"), ("True", "WritesRefused"));
    assert_eq!(status.rebalance.moves_done, 3);
    assert_eq!(status.rebalance.bytes_left, 1024);
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn transition_time_moves_only_when_the_status_flips() {
    let db = db();
    let first = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(healthy_state())),
        None,
        &now(),
    );
    let later = Time(now().0 + SignedDuration::from_secs(60));
    let same = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(healthy_state())),
        Some(&first),
        &later,
    );
    assert_eq!(
        same, first,
        "an unchanged cluster gives an identical status"
    );
    let view = ClusterView::Unavailable("timeout".into());
    let flipped = compute_status(&db, &applied(&db, None), &view, Some(&first), &later);
    let ready = flipped
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.last_transition_time, later);
    let rebalancing = flipped
        .conditions
        .iter()
        .find(|c| c.type_ == "Rebalancing")
        .expect("Rebalancing");
    assert_eq!(rebalancing.last_transition_time, now());
}

#[test]
fn invalid_status_keeps_the_rest_and_names_the_rule() {
    let db = db();
    let previous = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(healthy_state())),
        None,
        &now(),
    );
    let status = invalid_status(
        4,
        "coordinator.replicas must be 1, 3 or 5",
        Some(&previous),
        &now(),
    );
    assert_eq!(status.phase, Some(Phase::Invalid));
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(status.conditions.len(), previous.conditions.len());
    assert_eq!(status.workers, previous.workers);
}

#[test]
fn pod_names_come_from_addresses() {
    assert_eq!(
        pod_name_of("a-coordinator-2.a-coordinator:9090").as_deref(),
        Some("a-coordinator-2")
    );
    assert_eq!(
        pod_name_of("a-coordinator-2").as_deref(),
        Some("a-coordinator-2")
    );
    assert_eq!(pod_name_of(":9090"), None);
}

#[test]
fn rebalance_figures_name_the_rebalance_and_survive_an_unreadable_state() {
    let db = db();
    let mut state = healthy_state();
    state.rebalance = Some(RebalanceProgress {
        state: RebalanceState::Failed.into(),
        rebalance_id: "r7".into(),
        moves_done: 2,
        moves_total: 5,
        error: "worker 12 unreachable".into(),
        ..RebalanceProgress::default()
    });
    let failed = compute_status(
        &db,
        &applied(&db, None),
        &ClusterView::State(Box::new(state)),
        None,
        &now(),
    );
    assert_eq!(condition(&failed, "Rebalancing"), ("False", "Failed"));
    let figures = &failed.rebalance;
    assert_eq!(figures.id.as_deref(), Some("r7"));
    assert_eq!(figures.progress.as_deref(), Some("2/5"));
    assert_eq!(figures.error.as_deref(), Some("worker 12 unreachable"));
    assert_eq!(figures.last_transition_time, Some(now()));

    // The coordinators do not answer: the last figures stay.
    let later = Time(now().0 + SignedDuration::from_secs(60));
    let view = ClusterView::Unavailable("timeout".into());
    let unknown = compute_status(&db, &applied(&db, None), &view, Some(&failed), &later);
    assert_eq!(unknown.rebalance, failed.rebalance);
}
