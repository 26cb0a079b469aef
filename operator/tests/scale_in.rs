//! Removing workers fails closed, against a scripted mock of the API server
//! and fake coordinators: a scale-in is held while the workers it would
//! remove are registered or while the cluster state is unknown (however the
//! shrink was seen: last status or existing StatefulSet), and a worker group
//! removed from the spec is kept in the same cases and deleted only once
//! the state says its workers are gone. The drain -> remove -> shrink
//! sequence over several passes is in `drain.rs`.

mod support;

use http::Method;
use quiver_operator::controller::Error;
use serde_json::{json, Value};
use support::meta::{leader_with, leaderless, worker};
use support::scenario::{
    applied_worker_replicas, apply_steps, asking_for, condition, deletes, event, event_reasons,
    fixture, fresh_sts, owned, owned_sts, ready_sts, run, status_and_events, with_finalizer, APPS,
    EVENTS, EXISTING_STS, NS, ORPHAN_PDBS, ORPHAN_SERVICES, ORPHAN_STS, POLICY,
};
use support::{echo, echo_with, list, status_failure, step, Seen, Step};

/// Asserts the reconcile reported a hold whose message has every `part`,
/// with an event of `type_`.
fn assert_held(seen: &[Seen], type_: &str, parts: &[&str]) {
    let condition = condition(seen, "Progressing");
    assert_eq!(condition["status"], "True", "{condition:#}");
    assert_eq!(condition["reason"], "ScaleInHeld", "{condition:#}");
    let message = condition["message"].as_str().unwrap_or_default();
    for part in parts {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(event(seen, "ScaleInHeld")["type"], type_);
}

#[tokio::test]
async fn scale_in_is_held_and_the_worker_drained_while_it_holds_shards() {
    let (address, coordinator) = leader_with(vec![worker("a", 0, 4), worker("a", 1, 3)]).await;

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
    steps.extend(status_and_events(&db, 5));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");

    assert_eq!(applied_worker_replicas(&seen), 2, "held at two replicas");
    assert_held(
        &seen,
        "Normal",
        &["demo-worker-a-1 holds 3 shard placement(s), draining"],
    );
    assert_eq!(
        coordinator.drained(),
        [11],
        "the worker that goes is drained"
    );
    assert_eq!(coordinator.removed(), Vec::<u64>::new(), "not removed yet");
    assert!(
        coordinator.actions().is_empty(),
        "no rebalance during a scale-in"
    );
    assert_eq!(
        event_reasons(&seen),
        [
            "ScaleInHeld",
            "NodeDraining",
            "Progressing",
            "LeaderElected",
            "RebalanceStarted"
        ]
    );
    let note = event(&seen, "NodeDraining")["note"].clone();
    assert!(
        note.as_str()
            .unwrap_or_default()
            .contains("demo-worker-a-1 (node 11)"),
        "{note}"
    );
    assert_eq!(condition(&seen, "Rebalancing")["status"], "True");
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
    let (address, coordinator) = leaderless().await;

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
        "Warning",
        &[
            "worker group a kept at 2 replicas, not 1",
            "the cluster state is unknown",
        ],
    );
    assert_eq!(
        coordinator.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the state was asked for: no drain, no removal"
    );
}

#[tokio::test]
async fn scale_in_seen_only_in_the_stateful_set_is_held() {
    let (address, coordinator) = leader_with(vec![worker("a", 2, 6)]).await;

    // No status yet (a new operator, or the status was lost), three workers run.
    let db = asking_for(1);
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps[EXISTING_STS] = step(
        Method::GET,
        format!("{APPS}/statefulsets"),
        list("apps/v1", "StatefulSetList", vec![owned_sts(&db, "a", 3)]),
    );
    steps.extend(status_and_events(&db, 3));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("reconciled");

    assert_eq!(applied_worker_replicas(&seen), 3, "not shrunk to one");
    assert_held(
        &seen,
        "Normal",
        &["demo-worker-a-2 holds 6 shard placement(s)"],
    );
    assert_eq!(coordinator.drained(), [12]);
    assert_eq!(
        event_reasons(&seen),
        ["ScaleInHeld", "NodeDraining", "Pending"]
    );
}

/// The steps of a pass where group `b` was removed from the spec but its
/// StatefulSet, Service and PDB exist; none of them may be deleted.
fn removed_group_kept_steps(db: &Value, events: usize) -> Vec<Step> {
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
    steps.extend(status_and_events(db, events));
    steps
}

#[tokio::test]
async fn removed_group_is_kept_while_the_coordinators_cannot_be_reached() {
    let db = with_finalizer(fixture());
    // No coordinator address at all: the cluster state cannot be read.
    let (result, seen, _) = run(&db, removed_group_kept_steps(&db, 2), Vec::new()).await;
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
        "Warning",
        &[
            "worker group b removed from the spec but kept",
            "the cluster state is unknown",
        ],
    );
}

#[tokio::test]
async fn removed_group_is_kept_while_its_workers_hold_placements() {
    let (address, coordinator) = leader_with(vec![worker("b", 0, 0), worker("b", 1, 5)]).await;
    let db = with_finalizer(fixture());
    let (result, seen, _) = run(&db, removed_group_kept_steps(&db, 4), vec![address]).await;
    result.expect("reconciled");

    assert_eq!(deletes(&seen), Vec::<&str>::new());
    assert_held(
        &seen,
        "Normal",
        &[
            "worker group b removed from the spec but kept",
            "demo-worker-b-1 holds 5 shard placement(s), draining",
        ],
    );
    // The empty worker leaves the metadata at once; the other is drained.
    assert_eq!(coordinator.removed(), [20]);
    assert_eq!(coordinator.drained(), [21]);
    assert_eq!(
        event_reasons(&seen),
        ["ScaleInHeld", "NodeDraining", "NodeRemoved", "Pending"]
    );
}

#[tokio::test]
async fn removed_group_is_deleted_once_its_workers_are_removed() {
    let (address, coordinator) = leader_with(vec![worker("b", 0, 0)]).await;
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
    // The worker left the metadata before its StatefulSet is deleted.
    let removes = coordinator.removes.clone();
    steps.insert(
        ORPHAN_STS + 1,
        step(
            Method::DELETE,
            format!("{APPS}/statefulsets/demo-worker-b"),
            Box::new(move |_| {
                assert_eq!(removes.lock().expect("lock").len(), 1, "RemoveNode first");
                (200, orphan.clone())
            }),
        ),
    );
    steps.push(step(Method::POST, EVENTS, echo()));
    steps.extend(status_and_events(&db, 2));
    let (result, seen, _) = run(&db, steps, vec![address]).await;
    result.expect("ok");

    // The foreign StatefulSet (no owner reference) is never touched.
    assert_eq!(
        deletes(&seen),
        [format!("{APPS}/statefulsets/demo-worker-b").as_str()]
    );
    assert_eq!(coordinator.removed(), [20]);
    let deleted = event(&seen, "OrphanDeleted");
    assert!(deleted["note"]
        .as_str()
        .unwrap_or_default()
        .contains("StatefulSet/demo-worker-b"));
    assert_eq!(
        event_reasons(&seen),
        ["OrphanDeleted", "NodeRemoved", "Pending"]
    );
    assert_ne!(condition(&seen, "Progressing")["reason"], "ScaleInHeld");
}
