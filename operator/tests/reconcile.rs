//! The reconcile pipeline against a scripted mock of the API server: the
//! exact server-side apply requests and their order, the status patch,
//! idempotence of a second pass, the finalizer path, driving a ready
//! cluster through a fake metadata API, and the error policy. Holds and
//! orphan removal are in `scale_in.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use quiver_operator::controller::{error_policy, reconcile, Error, Settings, FINALIZER};
use quiver_operator::crd::DistributedDatabase;
use quiver_proto::meta::v1::{ClusterState, Node, NodeRole, ShardTotals};
use serde_json::json;
use support::meta::{bind, fake, serve as serve_meta, Behaviour};
use support::scenario::{
    apply_steps, context, fixture, fresh_sts, ready_sts, run, status_reply, with_finalizer, APPS,
    EVENTS, NS, QDB, SELECTOR,
};
use support::{
    echo, echo_with, empty_list, list, mock_client, serve, status_failure, step, SCENARIO_TIMEOUT,
};

#[tokio::test]
async fn first_pass_adds_the_finalizer_only() {
    let db = fixture();
    let mut with = with_finalizer(db.clone());
    with["metadata"]["resourceVersion"] = json!("2");
    let steps = vec![step(Method::PATCH, QDB, support::json_reply(200, with))];
    let (result, seen, _) = run(&db, steps, Vec::new()).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    let ops = seen[0].body.as_array().expect("a JSON patch");
    assert!(
        ops.iter()
            .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
        "{ops:?}"
    );
}

#[tokio::test]
async fn applies_everything_then_status_and_is_idempotent() {
    let db = with_finalizer(fixture());
    let mut steps = apply_steps(status_failure(404, "NotFound"), fresh_sts);
    steps.push(step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(&db),
    ));
    steps.push(step(Method::POST, EVENTS, echo()));
    let (result, first, _) = run(&db, steps, Vec::new()).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(10))
    );

    // Every apply is server-side apply, forced, by one field manager.
    for seen in first.iter().filter(|s| s.method == Method::PATCH) {
        assert!(
            seen.query.contains("fieldManager=quiver-operator"),
            "{}: {}",
            seen.path,
            seen.query
        );
        assert!(
            seen.query.contains("force=true"),
            "{}: {}",
            seen.path,
            seen.query
        );
    }
    // Orphans are looked up by the operator's labels.
    for seen in first
        .iter()
        .filter(|s| s.method == Method::GET && s.path.ends_with('s'))
    {
        assert!(
            seen.query.contains(SELECTOR),
            "{}: {}",
            seen.path,
            seen.query
        );
    }
    let password = first[3].body["data"]["password"]
        .as_str()
        .expect("password")
        .to_owned();
    assert!(!password.is_empty());
    let sts = &first[10].body;
    assert_eq!(sts["kind"], "StatefulSet");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "quiver:0.1.0"
    );
    let status = &first[15].body["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["observedGeneration"], 1);
    let ready = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready")
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(first[16].body["reason"], "Pending");

    // Second pass: the generated Secret exists, the status is stored.
    let mut stored = db.clone();
    stored["status"] = status.clone();
    let mut secret = first[3].body.clone();
    secret["metadata"]["resourceVersion"] = json!("5");
    let mut steps = apply_steps(support::json_reply(200, secret), fresh_sts);
    steps.push(step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(&stored),
    ));
    let (result, second, _) = run(&stored, steps, Vec::new()).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        second.len(),
        first.len() - 1,
        "no event without a transition"
    );
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            (&a.method, &a.path, &a.query),
            (&b.method, &b.path, &b.query)
        );
        assert_eq!(a.body, b.body, "{} changed between passes", a.path);
    }
}

#[tokio::test]
async fn ready_cluster_labels_the_leader_registers_workers_and_reports_ready() {
    let (listener, address) = bind().await;
    let leader = "demo-coordinator-0.demo-coordinator:9090";
    let worker = |host: &str| Node {
        host: host.into(),
        port: 9090,
        role: NodeRole::Worker.into(),
        group: "a".into(),
        active: true,
        ..Node::default()
    };
    let state = ClusterState {
        leader_id: 0,
        leader_address: leader.into(),
        nodes: vec![
            worker("demo-worker-a-0.demo-worker-a"),
            worker("demo-worker-a-1.demo-worker-a"),
        ],
        shards: Some(ShardTotals {
            total: 32,
            ..ShardTotals::default()
        }),
        ..ClusterState::default()
    };
    let coordinator = fake(Behaviour::Leader(Box::new(state)));
    let registered = coordinator.registered.clone();
    serve_meta(listener, coordinator);

    let db = with_finalizer(fixture());
    let mut steps = apply_steps(status_failure(404, "NotFound"), ready_sts);
    steps.push(step(
        Method::PATCH,
        format!("{NS}/pods/demo-coordinator-0"),
        echo_with(|b| b["spec"] = json!({"containers": []})),
    ));
    steps.push(step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(&db),
    ));
    steps.push(step(Method::POST, EVENTS, echo()));
    steps.push(step(Method::POST, EVENTS, echo()));
    let (result, seen, _) = run(&db, steps, vec![address.to_string()]).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(60))
    );

    assert_eq!(
        seen[15].body["metadata"]["labels"]["quiver.dev/raft-role"],
        "leader"
    );
    assert!(
        registered.lock().expect("lock").is_empty(),
        "both workers were already registered"
    );
    let status = &seen[16].body["status"];
    assert_eq!(status["phase"], "Ready", "{status:#}");
    assert_eq!(status["coordinator"]["leader"], "demo-coordinator-0");
    assert_eq!(status["workers"]["readyReplicas"], 2);
    assert_eq!(status["workers"]["registered"], 2);
    assert_eq!(status["shards"]["total"], 32);
    assert_eq!(seen[17].body["reason"], "Ready");
    assert_eq!(seen[18].body["reason"], "LeaderElected");
}

#[tokio::test]
async fn unregistered_ready_workers_are_registered() {
    let (listener, address) = bind().await;
    let state = ClusterState {
        leader_address: "demo-coordinator-0.demo-coordinator:9090".into(),
        ..ClusterState::default()
    };
    let coordinator = fake(Behaviour::Leader(Box::new(state)));
    let registered = coordinator.registered.clone();
    serve_meta(listener, coordinator);

    let db = with_finalizer(fixture());
    let mut steps = apply_steps(status_failure(404, "NotFound"), ready_sts);
    steps.push(step(
        Method::PATCH,
        format!("{NS}/pods/demo-coordinator-0"),
        echo_with(|b| b["spec"] = json!({"containers": []})),
    ));
    steps.push(step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(&db),
    ));
    steps.push(step(Method::POST, EVENTS, echo()));
    steps.push(step(Method::POST, EVENTS, echo()));
    let (result, seen, _) = run(&db, steps, vec![address.to_string()]).await;
    result.expect("ok");
    let hosts: Vec<_> = registered
        .lock()
        .expect("lock")
        .iter()
        .map(|r| (r.host.clone(), r.port, r.group.clone()))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "demo-worker-a-0.demo-worker-a".to_owned(),
                9090,
                "a".to_owned()
            ),
            (
                "demo-worker-a-1.demo-worker-a".to_owned(),
                9090,
                "a".to_owned()
            ),
        ]
    );
    // The fake does not add them to its state: still waiting for registration.
    assert_eq!(seen[16].body["status"]["phase"], "Progressing");
}

#[tokio::test]
async fn deletion_scales_workers_down_first_then_releases_the_finalizer() {
    let mut db = with_finalizer(fixture());
    db["metadata"]["deletionTimestamp"] = json!("2026-11-21T10:00:00Z");
    let uid = db["metadata"]["uid"].clone();
    let set = |name: &str, component: &str, replicas: i32| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default",
                "labels": {"app.kubernetes.io/component": component},
                "ownerReferences": [{"apiVersion": "quiver.dev/v1alpha1", "kind": "DistributedDatabase",
                    "name": "demo", "uid": uid, "controller": true}]},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"replicas": replicas}
        })
    };
    // Pass 1: workers running -> scaled to zero, coordinators untouched.
    let steps = vec![
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            list(
                "apps/v1",
                "StatefulSetList",
                vec![
                    set("demo-coordinator", "coordinator", 1),
                    set("demo-worker-a", "worker", 2),
                ],
            ),
        ),
        step(
            Method::PATCH,
            format!("{APPS}/statefulsets/demo-worker-a"),
            support::json_reply(200, set("demo-worker-a", "worker", 0)),
        ),
    ];
    let (result, seen, ctx) = run(&db, steps, Vec::new()).await;
    let err = result.expect_err("waits for pods");
    assert!(matches!(err.root(), Error::ShuttingDown(_)), "{err}");
    assert_eq!(seen[1].body, json!({"spec": {"replicas": 0}}));
    let object: DistributedDatabase = serde_json::from_value(db.clone()).expect("object");
    assert_eq!(
        error_policy(Arc::new(object), &err, ctx),
        Action::requeue(Duration::from_secs(5))
    );

    // Pass 2: workers gone, coordinator running -> scaled to zero.
    let steps = vec![
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            list(
                "apps/v1",
                "StatefulSetList",
                vec![
                    set("demo-coordinator", "coordinator", 1),
                    set("demo-worker-a", "worker", 0),
                ],
            ),
        ),
        step(
            Method::PATCH,
            format!("{APPS}/statefulsets/demo-coordinator"),
            support::json_reply(200, set("demo-coordinator", "coordinator", 0)),
        ),
    ];
    let (result, _, _) = run(&db, steps, Vec::new()).await;
    assert!(matches!(
        result.expect_err("waits").root(),
        Error::ShuttingDown(_)
    ));

    // Pass 3: nothing runs -> event, finalizer removed.
    let mut released = db.clone();
    released["metadata"]["finalizers"] = json!([]);
    let steps = vec![
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            list(
                "apps/v1",
                "StatefulSetList",
                vec![
                    set("demo-coordinator", "coordinator", 0),
                    set("demo-worker-a", "worker", 0),
                ],
            ),
        ),
        step(Method::POST, EVENTS, echo()),
        step(Method::PATCH, QDB, support::json_reply(200, released)),
    ];
    let (result, seen, _) = run(&db, steps, Vec::new()).await;
    assert_eq!(result.expect("released"), Action::await_change());
    let ops = seen[2].body.as_array().expect("JSON patch");
    assert!(
        ops.iter()
            .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
        "{ops:?}"
    );
}

#[tokio::test]
async fn invalid_spec_sets_the_condition_and_awaits_a_change() {
    let mut db = with_finalizer(fixture());
    db["spec"]["coordinator"]["replicas"] = json!(2);
    let steps = vec![
        step(Method::PATCH, format!("{QDB}/status"), status_reply(&db)),
        step(Method::POST, EVENTS, echo()),
    ];
    let (result, seen, ctx) = run(&db, steps, Vec::new()).await;
    let err = result.expect_err("invalid");
    assert!(matches!(err.root(), Error::InvalidSpec(_)), "{err}");
    let status = &seen[0].body["status"];
    assert_eq!(status["phase"], "Invalid");
    let ready = &status["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"]
        .as_str()
        .unwrap_or_default()
        .contains("coordinator.replicas must be 1, 3 or 5"));
    assert_eq!(seen[1].body["type"], "Warning");
    let object: DistributedDatabase = serde_json::from_value(db).expect("object");
    assert_eq!(
        error_policy(Arc::new(object), &err, ctx.clone()),
        Action::await_change()
    );
    assert_eq!(ctx.failures("default/demo"), 0);
}

#[tokio::test]
async fn api_errors_back_off_exponentially_per_object_and_reset_on_success() {
    let db = with_finalizer(fixture());
    let object: Arc<DistributedDatabase> =
        Arc::new(serde_json::from_value(db.clone()).expect("object"));
    let failing = || {
        vec![
            step(
                Method::GET,
                format!("{NS}/secrets/demo-superuser"),
                status_failure(404, "NotFound"),
            ),
            step(
                Method::GET,
                format!("{APPS}/statefulsets"),
                empty_list("apps/v1", "StatefulSetList"),
            ),
            step(
                Method::PATCH,
                format!("{NS}/serviceaccounts/demo"),
                status_failure(500, "InternalError"),
            ),
        ]
    };
    let (client, handle) = mock_client();
    let ctx = context(client, Vec::new());
    let mut script = failing();
    script.extend(failing());
    script.extend(apply_steps(status_failure(404, "NotFound"), fresh_sts));
    script.push(step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(&db),
    ));
    script.push(step(Method::POST, EVENTS, echo()));
    let server = tokio::spawn(serve(handle, script));
    let mut delays = Vec::new();
    for _ in 0..2 {
        let err = reconcile(object.clone(), ctx.clone())
            .await
            .expect_err("apply fails");
        assert!(matches!(err.root(), Error::Apply(_)), "{err}");
        delays.push(error_policy(object.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        [
            Action::requeue(Duration::from_secs(5)),
            Action::requeue(Duration::from_secs(10))
        ]
    );
    assert_eq!(ctx.failures("default/demo"), 2);
    // Another object has its own count.
    assert_eq!(ctx.failures("default/other"), 0);
    // A successful pass resets the count.
    reconcile(object.clone(), ctx.clone())
        .await
        .expect("succeeds");
    assert_eq!(ctx.failures("default/demo"), 0);
    tokio::time::timeout(SCENARIO_TIMEOUT, server)
        .await
        .expect("served")
        .expect("no panic");
}

#[test]
fn backoff_doubles_and_is_capped() {
    let settings = Settings::default();
    let delays: Vec<u64> = (1..=8)
        .map(|n| quiver_operator::controller::backoff(&settings, n).as_secs())
        .collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
}
