//! Removing workers fails closed, against a scripted mock of the API server
//! and fake coordinators: a scale-in is held while the workers it would
//! remove hold shards or while the cluster state is unknown (however the
//! shrink was seen: last status or existing StatefulSet), and a worker group
//! removed from the spec is kept in the same cases and deleted only once
//! the state says its workers hold nothing.

mod support;

use http::Method;
use quiver_operator::controller::Error;
use quiver_proto::meta::v1::{ClusterState, Node, NodeRole};
use serde_json::{json, Value};
use support::meta::{bind, fake, serve as serve_meta, Behaviour};
use support::scenario::{
    apply_steps, fixture, fresh_sts, owned, owned_sts, ready_sts, run, status_reply,
    with_finalizer, APPS, EVENTS, EXISTING_STS, NS, ORPHAN_PDBS, ORPHAN_SERVICES, ORPHAN_STS,
    POLICY, QDB,
};
use support::{echo, echo_with, list, status_failure, step, Seen, Step};

const LEADER: &str = "demo-coordinator-0.demo-coordinator:9090";

fn worker(host: &str, group: &str, placements: u64) -> Node {
    Node {
        host: host.into(),
        port: 9090,
        role: NodeRole::Worker.into(),
        group: group.into(),
        active: true,
        placements,
        ..Node::default()
    }
}

/// A fake coordinator that leads with `nodes`; its address.
async fn leader_with(nodes: Vec<Node>) -> String {
    let (listener, address) = bind().await;
    let state = ClusterState {
        leader_address: LEADER.into(),
        nodes,
        ..ClusterState::default()
    };
    serve_meta(listener, fake(Behaviour::Leader(Box::new(state))));
    address.to_string()
}

/// A fake coordinator in an election: every call answers "no leader".
async fn leaderless() -> String {
    let (listener, address) = bind().await;
    serve_meta(listener, fake(Behaviour::Follower(String::new())));
    address.to_string()
}

/// The fixture asking for `replicas` workers in group `a`.
fn asking_for(replicas: i32) -> Value {
    let mut db = with_finalizer(fixture());
    db["spec"]["workerGroups"][0]["replicas"] = json!(replicas);
    db["spec"]["sharding"] = json!({"replicationFactor": 1});
    db
}

/// The status patch, then the events in the order they are published.
fn status_and_events(db: &Value, events: usize) -> Vec<Step> {
    let mut steps = vec![step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(db),
    )];
    steps.extend((0..events).map(|_| step(Method::POST, EVENTS, echo())));
    steps
}

/// The replicas the worker StatefulSet of group `a` was applied with.
fn applied_worker_replicas(seen: &[Seen]) -> Value {
    seen.iter()
        .find(|s| s.method == Method::PATCH && s.path.ends_with("/statefulsets/demo-worker-a"))
        .expect("worker StatefulSet applied")
        .body["spec"]["replicas"]
        .clone()
}

/// The `Progressing` condition of the status patched last.
fn progressing(seen: &[Seen]) -> Value {
    let status = &seen
        .iter()
        .rev()
        .find(|s| s.path.ends_with("/status"))
        .expect("status patched")
        .body["status"];
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Progressing")
        .expect("Progressing")
        .clone()
}

/// Asserts the reconcile reported a hold whose message has every `part`.
fn assert_held(seen: &[Seen], parts: &[&str]) {
    let condition = progressing(seen);
    assert_eq!(condition["status"], "True", "{condition:#}");
    assert_eq!(condition["reason"], "ScaleInHeld", "{condition:#}");
    let message = condition["message"].as_str().unwrap_or_default();
    for part in parts {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let event = seen
        .iter()
        .find(|s| s.path == EVENTS && s.body["reason"] == "ScaleInHeld")
        .expect("a ScaleInHeld event");
    assert_eq!(event.body["type"], "Warning");
}

fn deletes(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .filter(|s| s.method == Method::DELETE)
        .map(|s| s.path.as_str())
        .collect()
}

#[tokio::test]
async fn scale_in_is_held_while_the_removed_worker_holds_shards() {
    let address = leader_with(vec![
        worker("demo-worker-a-0.demo-worker-a", "a", 4),
        worker("demo-worker-a-1.demo-worker-a", "a", 3),
    ])
    .await;

    // The user asks for one worker; two are registered and the second holds shards.
    let mut db = asking_for(1);
    db["status"] = json!({"workers": {"registered": 2, "readyReplicas": 2}});
    let mut steps = apply_steps(status_failure(404, "NotFound"), ready_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![owned_sts(&db, "a", 2)]),
    );
    steps.push(step(
        Method::PATCH,
        format!("{NS}/pods/demo-coordinator-0"),
        echo_with(|b| b["spec"] = json!({"containers": []})),
    ));
    steps.extend(status_and_events(&db, 1));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");

    assert_eq!(applied_worker_replicas(&seen), 2, "held at two replicas");
    assert_held(&seen, &["demo-worker-a-1 holds 3 shard placement(s)"]);
}

#[tokio::test]
async fn nothing_is_applied_when_the_stateful_sets_cannot_be_read() {
    let db = asking_for(1);
    let steps = vec![
        step(
            Method::GET,
            format!("{NS}/secrets/demo-superuser"),
            status_failure(404, "NotFound"),
        ),
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            status_failure(500, "InternalError"),
        ),
    ];
    let (result, seen, _) = run(&db, steps, Vec::new()).await;
    let err = result.expect_err("the reconcile stops");
    assert!(matches!(err.root(), Error::Apply(_)), "{err}");
    assert!(
        seen.iter().all(|s| s.method == Method::GET),
        "nothing was applied or deleted"
    );
}

#[tokio::test]
async fn scale_in_is_held_at_the_current_replicas_while_the_state_is_unknown() {
    let address = leaderless().await;

    // The last status counted two workers; the coordinators have no leader.
    let mut db = asking_for(1);
    db["status"] = json!({"workers": {"registered": 2, "readyReplicas": 2}});
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![owned_sts(&db, "a", 2)]),
    );
    steps.extend(status_and_events(&db, 2));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");

    assert_eq!(applied_worker_replicas(&seen), 2, "not shrunk to one");
    assert_held(
        &seen,
        &[
            "worker group a kept at 2 replicas, not 1",
            "the cluster state is unknown",
        ],
    );
}

#[tokio::test]
async fn scale_in_seen_only_in_the_stateful_set_is_held() {
    let address = leader_with(vec![worker("demo-worker-a-2.demo-worker-a", "a", 6)]).await;

    // No status yet (a new operator, or the status was lost), three workers run.
    let db = asking_for(1);
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![owned_sts(&db, "a", 3)]),
    );
    steps.extend(status_and_events(&db, 2));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");

    assert_eq!(applied_worker_replicas(&seen), 3, "not shrunk to one");
    assert_held(&seen, &["demo-worker-a-2 holds 6 shard placement(s)"]);
}

/// The steps of a pass where group `b` was removed from the spec but its
/// StatefulSet, Service and PDB exist; none of them may be deleted.
fn removed_group_kept_steps(db: &Value) -> Vec<Step> {
    let removed = owned_sts(db, "b", 2);
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![removed.clone()]),
    );
    steps[ORPHAN_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![removed]),
    );
    steps[ORPHAN_SERVICES] = step(
        Method::GET,
        format!("{NS}/services"),
        list(
            "v1",
            "ServiceList",
            vec![owned(db, "v1", "Service", "demo-worker-b", "b")],
        ),
    );
    steps[ORPHAN_PDBS] = step(
        Method::GET,
        format!("{POLICY}/poddisruptionbudgets"),
        list(
            "policy/v1",
            "PodDisruptionBudgetList",
            vec![owned(
                db,
                "policy/v1",
                "PodDisruptionBudget",
                "demo-worker-b",
                "b",
            )],
        ),
    );
    steps.extend(status_and_events(db, 2));
    steps
}

#[tokio::test]
async fn removed_group_is_kept_while_the_coordinators_cannot_be_reached() {
    let db = with_finalizer(fixture());
    // No coordinator address at all: the cluster state cannot be read.
    let (result, seen, _) = run(&db, removed_group_kept_steps(&db), Vec::new()).await;
    result.expect("reconciled");

    assert_eq!(deletes(&seen), Vec::<&str>::new());
    assert!(
        !seen
            .iter()
            .any(|s| s.path.ends_with("/demo-worker-b") && s.method == Method::PATCH),
        "the kept group is left as it is, not re-applied"
    );
    assert_held(
        &seen,
        &[
            "worker group b removed from the spec but kept",
            "the cluster state is unknown",
        ],
    );
}

#[tokio::test]
async fn removed_group_is_kept_while_its_workers_hold_placements() {
    let address = leader_with(vec![
        worker("demo-worker-b-0.demo-worker-b", "b", 0),
        worker("demo-worker-b-1.demo-worker-b", "b", 5),
    ])
    .await;
    let db = with_finalizer(fixture());
    let (result, seen, _) = run(&db, removed_group_kept_steps(&db), vec![address]).await;
    result.expect("reconciled");

    assert_eq!(deletes(&seen), Vec::<&str>::new());
    assert_held(
        &seen,
        &[
            "worker group b removed from the spec but kept",
            "demo-worker-b-1 holds 5 shard placement(s)",
        ],
    );
}

#[tokio::test]
async fn removed_group_is_deleted_once_its_workers_hold_nothing() {
    let address = leader_with(vec![worker("demo-worker-b-0.demo-worker-b", "b", 0)]).await;
    let db = with_finalizer(fixture());
    let orphan = owned_sts(&db, "b", 1);
    let foreign = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "demo-worker-c", "namespace": "default"},
        "spec": {"selector": {}, "template": {}}
    });
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list(
            "apps/v1",
            "StatefulSetList",
            vec![orphan.clone(), foreign.clone()],
        ),
    );
    steps[ORPHAN_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![orphan.clone(), foreign]),
    );
    steps.insert(
        ORPHAN_STS + 1,
        step(
            Method::DELETE,
            format!("{APPS}/statefulsets/demo-worker-b"),
            support::json_reply(200, orphan),
        ),
    );
    steps.push(step(Method::POST, EVENTS, echo()));
    steps.extend(status_and_events(&db, 1));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("ok");

    // The foreign StatefulSet (no owner reference) is never touched.
    assert_eq!(
        deletes(&seen),
        [format!("{APPS}/statefulsets/demo-worker-b").as_str()]
    );
    let deleted = seen
        .iter()
        .find(|s| s.path == EVENTS && s.body["reason"] == "OrphanDeleted")
        .expect("an OrphanDeleted event");
    assert!(deleted.body["note"]
        .as_str()
        .unwrap_or_default()
        .contains("StatefulSet/demo-worker-b"));
    assert_ne!(progressing(&seen)["reason"], "ScaleInHeld");
}
