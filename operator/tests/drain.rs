//! The scale-in sequence over several passes, against a scripted mock of
//! the API server and a fake coordinator that keeps its state between
//! passes: the workers that go are drained, the StatefulSet is held while
//! they hold shards, they are removed from the metadata once empty, and only
//! then does the StatefulSet shrink or the removed group go. Every way the
//! cluster state can be unknown (coordinator down, no leader, an RPC error)
//! and a failing RemoveNode shrink nothing, delete nothing, remove nothing.

mod support;

use std::sync::atomic::Ordering;

use http::Method;
use quiver_proto::meta::v1::{Node, RebalanceProgress, RebalanceState};
use serde_json::{json, Value};
use support::meta::{leader_with, leaderless, unreachable, worker, FakeCoordinator};
use support::scenario::{
    applied_worker_replicas, apply_steps, asking_for, condition, deletes, event, event_reasons,
    fresh_sts, owned, owned_sts, ready_pass, run, status_and_events, with_status_of, APPS, EVENTS,
    EXISTING_STS, NS, ORPHAN_PDBS, ORPHAN_SERVICES, ORPHAN_STS, POLICY,
};
use support::{echo, echo_with, json_reply, list, status_failure, step, Seen, Step};
use tonic::Status;

/// Index of the apply of the worker StatefulSet in a pass.
const WORKER_STS: usize = 11;

/// The existing StatefulSets: group `a` with `replicas`, and `extra`.
fn existing(db: &Value, replicas: i32, extra: Vec<Value>) -> Step {
    let mut items = vec![owned_sts(db, "a", replicas)];
    items.extend(extra);
    step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", items),
    )
}

/// A ready pass over `db` whose worker StatefulSet existed with `replicas`.
fn ready_scale_in_pass(db: &Value, replicas: i32, events: usize) -> Vec<Step> {
    let mut steps = ready_pass(db, events);
    steps[EXISTING_STS] = existing(db, replicas, Vec::new());
    steps
}

#[tokio::test]
async fn scale_in_drains_then_removes_then_shrinks() {
    let (address, coordinator) = leader_with(vec![worker("a", 0, 4), worker("a", 1, 3)]).await;
    let meta = vec![address];

    // Pass 1: two workers run, the user asks for one: drain, hold.
    let mut db = asking_for(1);
    db["status"] = json!({"workers": {"registered": 2, "readyReplicas": 2}});
    let (result, seen, _) = run(&db, ready_scale_in_pass(&db, 2, 5), meta.clone()).await;
    result.expect("pass 1");
    assert_eq!(applied_worker_replicas(&seen), 2);
    assert_eq!(coordinator.drained(), [11]);
    assert_eq!(condition(&seen, "Progressing")["reason"], "ScaleInHeld");

    // Pass 2: the drain runs: nothing is called again, nothing changes.
    let db = with_status_of(&db, &seen);
    let (result, seen, _) = run(&db, ready_scale_in_pass(&db, 2, 0), meta.clone()).await;
    result.expect("pass 2");
    assert_eq!(applied_worker_replicas(&seen), 2, "still held");
    assert_eq!(coordinator.drained(), [11], "no second drain while it runs");
    assert_eq!(coordinator.removed(), Vec::<u64>::new());
    assert_eq!(condition(&seen, "Rebalancing")["status"], "True");

    // The coordinators moved the shards off worker a-1.
    coordinator.edit(|state| {
        state.nodes[0].placements = 7;
        state.nodes[1].placements = 0;
        state.rebalance = Some(RebalanceProgress {
            state: RebalanceState::Completed.into(),
            rebalance_id: "d11".into(),
            moves_done: 3,
            moves_total: 3,
            ..RebalanceProgress::default()
        });
    });

    // Pass 3: removed from the metadata, then the StatefulSet shrinks.
    let db = with_status_of(&db, &seen);
    let mut steps = ready_scale_in_pass(&db, 2, 3);
    let removes = coordinator.removes.clone();
    steps[WORKER_STS] = step(
        Method::PATCH,
        format!("{APPS}/statefulsets/demo-worker-a"),
        echo_with(move |body| {
            assert_eq!(body["spec"]["replicas"], 1);
            assert_eq!(
                removes.lock().expect("lock").len(),
                1,
                "RemoveNode came before the shrink"
            );
            body["metadata"]["generation"] = json!(1);
            body["status"] = json!({"observedGeneration": 1, "replicas": 1,
                "readyReplicas": 1, "updatedReplicas": 1});
        }),
    );
    let (result, seen, _) = run(&db, steps, meta.clone()).await;
    result.expect("pass 3");
    assert_eq!(applied_worker_replicas(&seen), 1, "shrunk");
    assert_eq!(coordinator.removed(), [11]);
    assert_eq!(
        event_reasons(&seen),
        ["NodeRemoved", "Ready", "RebalanceCompleted"]
    );
    assert_eq!(condition(&seen, "Progressing")["reason"], "Stable");
    let status = support::scenario::last_status(&seen);
    assert_eq!(status["workers"]["registered"], 1);
    assert_eq!(status["rebalance"]["movesDone"], 3);
    assert_eq!(status["rebalance"]["state"], "Completed");

    // Pass 4: settled; nothing is drained, removed or started.
    let db = with_status_of(&db, &seen);
    let (result, _, _) = run(&db, ready_scale_in_pass(&db, 1, 0), meta).await;
    result.expect("pass 4");
    assert_eq!(coordinator.drained(), [11]);
    assert_eq!(coordinator.removed(), [11]);
    assert!(
        !coordinator
            .actions()
            .contains(&quiver_proto::meta::v1::RebalanceAction::Start),
        "{:?}",
        coordinator.actions()
    );
}

#[tokio::test]
async fn a_refused_drain_is_retried_on_the_next_pass() {
    let (address, coordinator) = leader_with(vec![worker("a", 0, 4), worker("a", 1, 3)]).await;
    coordinator.failures.lock().expect("lock").drain =
        Some(Status::failed_precondition("rebalance u7 is running"));
    let db = asking_for(1);
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = existing(&db, 2, Vec::new());
    steps.extend(status_and_events(&db, 2));
    let (result, seen, _) = run(&db, steps, vec![address.clone()]).await;
    result.expect("a refused drain is not a failed reconcile");
    assert_eq!(coordinator.drained(), [11]);
    assert_eq!(applied_worker_replicas(&seen), 2);
    assert_eq!(event_reasons(&seen), ["ScaleInHeld", "Pending"]);

    coordinator.failures.lock().expect("lock").drain = None;
    let db = with_status_of(&db, &seen);
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = existing(&db, 2, Vec::new());
    steps.extend(status_and_events(&db, 1));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("pass 2");
    assert_eq!(coordinator.drained(), [11, 11]);
    assert_eq!(event_reasons(&seen), ["NodeDraining"]);
    assert_eq!(applied_worker_replicas(&seen), 2, "held while it drains");
}

/// How the coordinators fail in [`unknown_state_shrinks_deletes_and_removes_nothing`].
enum Failure {
    Unreachable,
    NoLeader,
    StateRpcError,
    RemoveRpcError,
}

/// Every pod that goes is empty: with a healthy leader both would be
/// removed from the metadata, group `a` shrunk to one and group `b` deleted.
fn empty_leaving_workers() -> Vec<Node> {
    vec![worker("a", 0, 4), worker("a", 1, 0), worker("b", 0, 0)]
}

/// A pass where group `a` asks for one worker of two, and group `b`
/// (removed from the spec) still has its StatefulSet, Service and PDB;
/// `deleted`: whether the pass deletes them.
fn shrink_and_removed_group_steps(db: &Value, deleted: bool, events: usize) -> Vec<Step> {
    let removed = owned_sts(db, "b", 1);
    let service = owned(db, "v1", "Service", "demo-worker-b", "b");
    let pdb = owned(db, "policy/v1", "PodDisruptionBudget", "demo-worker-b", "b");
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = existing(db, 2, vec![removed.clone()]);
    steps[ORPHAN_STS] = existing(db, 2, vec![removed.clone()]);
    steps[ORPHAN_SERVICES] = step(
        Method::GET,
        format!("{NS}/services"),
        list("v1", "ServiceList", vec![service.clone()]),
    );
    steps[ORPHAN_PDBS] = step(
        Method::GET,
        format!("{POLICY}/poddisruptionbudgets"),
        list("policy/v1", "PodDisruptionBudgetList", vec![pdb.clone()]),
    );
    if deleted {
        let delete =
            |path: String, object: Value| step(Method::DELETE, path, json_reply(200, object));
        steps.insert(
            ORPHAN_PDBS + 1,
            delete(format!("{POLICY}/poddisruptionbudgets/demo-worker-b"), pdb),
        );
        steps.insert(
            ORPHAN_SERVICES + 1,
            delete(format!("{NS}/services/demo-worker-b"), service),
        );
        steps.insert(
            ORPHAN_STS + 1,
            delete(format!("{APPS}/statefulsets/demo-worker-b"), removed),
        );
        // One event, then the recorder folds the next two (same reason)
        // into it as a series.
        steps.push(step(Method::POST, EVENTS, echo()));
        steps.push(step(Method::PATCH, format!("{EVENTS}/*"), echo()));
        steps.push(step(Method::PATCH, format!("{EVENTS}/*"), echo()));
    }
    steps.extend(status_and_events(db, events));
    steps
}

fn assert_nothing_removed(seen: &[Seen], what: &str) {
    assert_eq!(
        applied_worker_replicas(seen),
        2,
        "{what}: group a not shrunk"
    );
    assert_eq!(
        deletes(seen),
        Vec::<&str>::new(),
        "{what}: group b not deleted"
    );
    let held = condition(seen, "Progressing");
    assert_eq!(held["reason"], "ScaleInHeld", "{what}: {held:#}");
}

#[tokio::test]
async fn with_a_healthy_leader_empty_workers_are_removed_then_their_pods_go() {
    // The control case of the next test: the same pass with a leader that answers.
    let (address, coordinator) = leader_with(empty_leaving_workers()).await;
    let db = asking_for(1);
    let steps = shrink_and_removed_group_steps(&db, true, 3);
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");
    assert_eq!(applied_worker_replicas(&seen), 1);
    assert_eq!(deletes(&seen).len(), 3, "{:?}", deletes(&seen));
    assert_eq!(coordinator.removed(), [11, 20]);
    assert_eq!(coordinator.drained(), Vec::<u64>::new());
    assert_eq!(
        event_reasons(&seen),
        ["OrphanDeleted", "NodeRemoved", "NodeRemoved", "Pending"]
    );
    // One NodeRemoved event per pod, each related to its pod.
    let pods: Vec<&Value> = seen
        .iter()
        .filter(|s| s.path == EVENTS && s.body["reason"] == "NodeRemoved")
        .map(|s| &s.body["related"]["name"])
        .collect();
    assert_eq!(pods, [&json!("demo-worker-a-1"), &json!("demo-worker-b-0")]);
}

#[tokio::test]
async fn unknown_state_shrinks_deletes_and_removes_nothing() {
    for failure in [
        Failure::Unreachable,
        Failure::NoLeader,
        Failure::StateRpcError,
        Failure::RemoveRpcError,
    ] {
        let (address, fake): (String, Option<FakeCoordinator>) = match failure {
            Failure::Unreachable => (unreachable().await, None),
            Failure::NoLeader => {
                let (address, fake) = leaderless().await;
                (address, Some(fake))
            }
            Failure::StateRpcError | Failure::RemoveRpcError => {
                let (address, fake) = leader_with(empty_leaving_workers()).await;
                let mut failures = fake.failures.lock().expect("lock");
                if matches!(failure, Failure::StateRpcError) {
                    failures.state = Some(Status::internal("state machine unavailable"));
                } else {
                    failures.remove = Some(Status::internal("disk full"));
                }
                drop(failures);
                (address, Some(fake))
            }
        };
        let what = match failure {
            Failure::Unreachable => "coordinator unreachable",
            Failure::NoLeader => "no leader",
            Failure::StateRpcError => "GetClusterState error",
            Failure::RemoveRpcError => "RemoveNode error",
        };
        let db = asking_for(1);
        let steps = shrink_and_removed_group_steps(&db, false, 2);
        let (result, seen, _) = run(&db, steps, vec![address]).await;
        result.expect(what);
        assert_nothing_removed(&seen, what);
        let held = event(&seen, "ScaleInHeld");
        match (&failure, &fake) {
            (Failure::RemoveRpcError, Some(fake)) => {
                // The state is known: removal was tried, refused, so held.
                assert_eq!(fake.removed(), [11, 20], "{what}");
                assert_eq!(held["type"], "Normal", "{what}");
                let message = condition(&seen, "Progressing")["message"].clone();
                assert!(
                    message.as_str().unwrap_or_default().contains(
                        "demo-worker-a-1 holds no shard placement but is still registered"
                    ),
                    "{what}: {message}"
                );
            }
            (_, Some(fake)) => {
                assert_eq!(
                    fake.calls.load(Ordering::SeqCst),
                    1,
                    "{what}: only the state read"
                );
                assert_eq!(fake.removed(), Vec::<u64>::new(), "{what}");
                assert_eq!(fake.drained(), Vec::<u64>::new(), "{what}");
                assert_eq!(held["type"], "Warning", "{what}");
            }
            (_, None) => assert_eq!(held["type"], "Warning", "{what}"),
        }
    }
}
