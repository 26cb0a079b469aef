//! The scale-out sequence against a scripted mock of the API server and a
//! fake coordinator that keeps its state between passes: once every worker
//! of the spec is registered and one holds no shards (or the plan has
//! moves), one rebalance is started, none while one runs, none when
//! `spec.rebalance.auto` is false or a worker is missing, none right after
//! a failure; and the Events and status follow the rebalance.

mod support;

use quiver_proto::meta::v1::{RebalanceAction, RebalanceProgress, RebalanceState};
use serde_json::{json, Value};
use support::meta::{leader_with, worker, FakeCoordinator};
use support::scenario::{
    asking_for, condition, event, event_reasons, last_status, ready_pass, run, with_status_of,
};
use tonic::Status;

/// A ready cluster of three workers in group `a` holding `placements`;
/// the plan has `moves` moves.
async fn three_workers(placements: [u64; 3], moves: usize) -> (Vec<String>, FakeCoordinator) {
    let nodes = placements
        .iter()
        .zip(0..)
        .map(|(p, ordinal)| worker("a", ordinal, *p))
        .collect();
    let (address, coordinator) = leader_with(nodes).await;
    *coordinator.plan_moves.lock().expect("lock") = moves;
    (vec![address], coordinator)
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

fn rebalance(seen: &[support::Seen]) -> Value {
    last_status(seen)["rebalance"].clone()
}

#[tokio::test]
async fn a_new_empty_worker_gets_one_rebalance_then_its_end_is_reported() {
    let (meta, coordinator) = three_workers([4, 4, 0], 2).await;

    // Pass 1: worker a-2 joined empty: a rebalance starts.
    let db = asking_for(3);
    let (result, seen, _) = run(&db, ready_pass(&db, 3), meta.clone()).await;
    result.expect("pass 1");
    assert_eq!(coordinator.actions(), [RebalanceAction::Start]);
    assert_eq!(
        event_reasons(&seen),
        ["Ready", "LeaderElected", "RebalanceStarted"]
    );
    assert_eq!(
        event(&seen, "RebalanceStarted")["note"],
        "rebalance r1 started: 2 shard group move(s) planned"
    );
    let figures = rebalance(&seen);
    assert_eq!(figures["id"], "r1");
    assert_eq!(figures["state"], "Running");
    assert_eq!(figures["progress"], "0/2");
    assert_eq!(condition(&seen, "Rebalancing")["status"], "True");

    // Pass 2: it runs: no second start, no event.
    let db = with_status_of(&db, &seen);
    let (result, seen, _) = run(&db, ready_pass(&db, 0), meta.clone()).await;
    result.expect("pass 2");
    assert_eq!(coordinator.actions(), [RebalanceAction::Start]);
    assert_eq!(condition(&seen, "Rebalancing")["status"], "True");

    // The coordinators finish it.
    coordinator.edit(|state| {
        state.rebalance = Some(progress("r1", RebalanceState::Completed, 2, 2));
        for node in &mut state.nodes {
            node.placements = 3;
        }
    });
    *coordinator.plan_moves.lock().expect("lock") = 0;

    // Pass 3: completed, reported once; the plan is empty: nothing starts.
    let db = with_status_of(&db, &seen);
    let (result, seen, _) = run(&db, ready_pass(&db, 1), meta.clone()).await;
    result.expect("pass 3");
    assert_eq!(event_reasons(&seen), ["RebalanceCompleted"]);
    assert_eq!(
        coordinator.actions(),
        [RebalanceAction::Start, RebalanceAction::Plan]
    );
    let figures = rebalance(&seen);
    assert_eq!(figures["movesDone"], figures["movesTotal"]);
    assert_eq!(figures["progress"], "2/2");
    let rebalancing = condition(&seen, "Rebalancing");
    assert_eq!(
        (&rebalancing["status"], &rebalancing["reason"]),
        (&json!("False"), &json!("Completed"))
    );

    // Pass 4: nothing new.
    let db = with_status_of(&db, &seen);
    let (result, _, _) = run(&db, ready_pass(&db, 0), meta).await;
    result.expect("pass 4");
    assert_eq!(
        coordinator.actions(),
        [
            RebalanceAction::Start,
            RebalanceAction::Plan,
            RebalanceAction::Plan
        ]
    );
}

#[tokio::test]
async fn nothing_starts_when_auto_rebalance_is_off() {
    let (meta, coordinator) = three_workers([4, 4, 0], 2).await;
    let mut db = asking_for(3);
    db["spec"]["rebalance"] = json!({"auto": false});
    let (result, seen, _) = run(&db, ready_pass(&db, 2), meta).await;
    result.expect("reconciled");
    assert_eq!(coordinator.actions(), Vec::<RebalanceAction>::new());
    assert_eq!(event_reasons(&seen), ["Ready", "LeaderElected"]);
    assert_eq!(condition(&seen, "Rebalancing")["reason"], "Idle");
}

#[tokio::test]
async fn a_plan_with_moves_starts_a_rebalance() {
    // Every worker holds shards, unevenly: only the plan says so.
    let (meta, coordinator) = three_workers([6, 5, 1], 3).await;
    let db = asking_for(3);
    let (result, seen, _) = run(&db, ready_pass(&db, 3), meta).await;
    result.expect("reconciled");
    assert_eq!(
        coordinator.actions(),
        [RebalanceAction::Plan, RebalanceAction::Start]
    );
    assert_eq!(rebalance(&seen)["progress"], "0/3");
}

#[tokio::test]
async fn nothing_starts_until_every_worker_is_registered() {
    // Worker a-2 runs but the coordinators do not list it (yet).
    let (address, coordinator) = leader_with(vec![worker("a", 0, 4), worker("a", 1, 4)]).await;
    *coordinator.plan_moves.lock().expect("lock") = 2;
    let db = asking_for(3);
    let (result, seen, _) = run(&db, ready_pass(&db, 2), vec![address]).await;
    result.expect("reconciled");
    let registered: Vec<String> = coordinator
        .registered
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(registered, ["demo-worker-a-2.demo-worker-a"]);
    assert_eq!(coordinator.actions(), Vec::<RebalanceAction>::new());
    assert_eq!(event_reasons(&seen), ["Progressing", "LeaderElected"]);
}

#[tokio::test]
async fn a_failed_rebalance_is_reported_and_retried_only_after_the_delay() {
    let (meta, coordinator) = three_workers([4, 4, 0], 2).await;
    // A user started a rebalance: reported, and none is started beside it.
    coordinator.edit(|state| {
        state.rebalance = Some(progress("u1", RebalanceState::Running, 0, 4));
    });
    let db = asking_for(3);
    let (result, seen, _) = run(&db, ready_pass(&db, 3), meta.clone()).await;
    result.expect("pass 1");
    assert_eq!(
        event_reasons(&seen),
        ["Ready", "LeaderElected", "RebalanceStarted"]
    );
    assert_eq!(coordinator.actions(), Vec::<RebalanceAction>::new());

    // It fails: a Warning, and no restart at once.
    coordinator.edit(|state| {
        let mut failed = progress("u1", RebalanceState::Failed, 1, 4);
        failed.error = "worker 12 unreachable".into();
        state.rebalance = Some(failed);
    });
    let db = with_status_of(&db, &seen);
    let (result, seen, _) = run(&db, ready_pass(&db, 1), meta.clone()).await;
    result.expect("pass 2");
    let failed = event(&seen, "RebalanceFailed");
    assert_eq!(failed["type"], "Warning");
    assert!(
        failed["note"]
            .as_str()
            .unwrap_or_default()
            .contains("worker 12 unreachable"),
        "{failed}"
    );
    let rebalancing = condition(&seen, "Rebalancing");
    assert_eq!(rebalancing["reason"], "Failed");
    assert_eq!(rebalancing["message"], "worker 12 unreachable");
    assert_eq!(coordinator.actions(), Vec::<RebalanceAction>::new());

    // Pass 3, still within the delay: nothing.
    let db = with_status_of(&db, &seen);
    let (result, seen, _) = run(&db, ready_pass(&db, 0), meta.clone()).await;
    result.expect("pass 3");
    assert_eq!(coordinator.actions(), Vec::<RebalanceAction>::new());

    // Pass 4, the failure long ago: a new rebalance starts.
    let mut db = with_status_of(&db, &seen);
    db["status"]["rebalance"]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
    let (result, seen, _) = run(&db, ready_pass(&db, 1), meta).await;
    result.expect("pass 4");
    assert_eq!(coordinator.actions(), [RebalanceAction::Start]);
    assert_eq!(event_reasons(&seen), ["RebalanceStarted"]);
    assert_eq!(rebalance(&seen)["id"], "r1");
}

#[tokio::test]
async fn a_refused_start_is_not_a_failed_reconcile() {
    let (meta, coordinator) = three_workers([4, 4, 0], 2).await;
    coordinator.failures.lock().expect("lock").rebalance = Some(Status::failed_precondition(
        "rebalance x is already running",
    ));
    let db = asking_for(3);
    let (result, seen, _) = run(&db, ready_pass(&db, 2), meta).await;
    result.expect("reconciled");
    assert_eq!(coordinator.actions(), [RebalanceAction::Start]);
    assert_eq!(event_reasons(&seen), ["Ready", "LeaderElected"]);
    assert_eq!(condition(&seen, "Rebalancing")["status"], "False");
}
