//! One reconcile against the scripted API server: the fixture, the context
//! with a fixed metadata endpoint, and the request sequence of a pass.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use quiver_operator::controller::{
    reconcile, Context, Error, MetaClientFactory, Settings, FINALIZER,
};
use quiver_operator::crd::DistributedDatabase;
use quiver_operator::meta_client::{IdentityResolver, MetaClient};
use quiver_operator::validate::ValidDatabase;
use serde_json::{json, Value};

use super::{
    echo, echo_with, empty_list, mock_client, serve, step, Reply, Seen, Step, SCENARIO_TIMEOUT,
};

pub const NS: &str = "/api/v1/namespaces/default";
pub const APPS: &str = "/apis/apps/v1/namespaces/default";
pub const POLICY: &str = "/apis/policy/v1/namespaces/default";
pub const QDB: &str = "/apis/quiver.dev/v1alpha1/namespaces/default/distributeddatabases/demo";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
pub const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fmanaged-by%3Dquiver-operator";

/// Index of the list of owned StatefulSets read before the build.
pub const EXISTING_STS: usize = 1;
/// Index of the list of StatefulSets read for orphan removal.
pub const ORPHAN_STS: usize = 12;
/// Index of the list of Services read for orphan removal.
pub const ORPHAN_SERVICES: usize = 13;
/// Index of the list of PodDisruptionBudgets read for orphan removal.
pub const ORPHAN_PDBS: usize = 14;

/// Dials a fixed address (the fake coordinator), or nothing at all.
pub struct FixedMeta(pub Vec<String>);

impl MetaClientFactory for FixedMeta {
    fn client_for(&self, _: &ValidDatabase, timeout: Duration) -> MetaClient {
        MetaClient::new(self.0.clone(), Arc::new(IdentityResolver), timeout)
    }
}

/// The minimal fixture as the API server returns it.
pub fn fixture() -> Value {
    let text = include_str!("../fixtures/minimal.yaml");
    let db: DistributedDatabase = serde_saphyr::from_str(text).expect("fixture");
    serde_json::to_value(db).expect("json")
}

pub fn with_finalizer(mut db: Value) -> Value {
    db["metadata"]["finalizers"] = json!([FINALIZER]);
    db
}

pub fn context(client: kube::Client, meta: Vec<String>) -> Arc<Context> {
    let reporter = Reporter {
        controller: "quiver-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(Context::new(
        client,
        reporter,
        Arc::new(FixedMeta(meta)),
        Settings::default(),
    ))
}

/// Runs one reconcile of `db` against `steps`; returns its result and the
/// requests seen.
pub async fn run(
    db: &Value,
    steps: Vec<Step>,
    meta: Vec<String>,
) -> (Result<Action, Error>, Vec<Seen>, Arc<Context>) {
    let (client, handle) = mock_client();
    let ctx = context(client, meta);
    let server = tokio::spawn(serve(handle, steps));
    let object: DistributedDatabase = serde_json::from_value(db.clone()).expect("object");
    let result = tokio::time::timeout(SCENARIO_TIMEOUT, reconcile(Arc::new(object), ctx.clone()))
        .await
        .expect("reconcile finished (no request beyond the script)");
    let (seen, _handle) = tokio::time::timeout(SCENARIO_TIMEOUT, server)
        .await
        .expect("every expected request came")
        .expect("mock server did not panic");
    (result, seen, ctx)
}

/// Answers the status patch with the object carrying that status.
pub fn status_reply(db: &Value) -> Reply {
    let db = db.clone();
    Box::new(move |seen| {
        let mut object = db.clone();
        object["status"] = seen.body["status"].clone();
        (200, object)
    })
}

/// The requests of one pass over the minimal fixture up to the status, in
/// their required order: read the Secret, list the owned StatefulSets
/// ([`EXISTING_STS`], none), apply, then list each kind for orphans (none).
pub fn apply_steps(secret_reply: Reply, sts_reply: fn() -> Reply) -> Vec<Step> {
    vec![
        step(
            Method::GET,
            format!("{NS}/secrets/demo-superuser"),
            secret_reply,
        ),
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            empty_list("apps/v1", "StatefulSetList"),
        ),
        step(Method::PATCH, format!("{NS}/serviceaccounts/demo"), echo()),
        step(
            Method::PATCH,
            format!("{NS}/secrets/demo-superuser"),
            echo(),
        ),
        step(
            Method::PATCH,
            format!("{NS}/configmaps/demo-config"),
            echo(),
        ),
        step(
            Method::PATCH,
            format!("{NS}/services/demo-coordinator"),
            echo(),
        ),
        step(Method::PATCH, format!("{NS}/services/demo"), echo()),
        step(
            Method::PATCH,
            format!("{NS}/services/demo-worker-a"),
            echo(),
        ),
        step(
            Method::PATCH,
            format!("{POLICY}/poddisruptionbudgets/demo-coordinator"),
            echo(),
        ),
        step(
            Method::PATCH,
            format!("{POLICY}/poddisruptionbudgets/demo-worker-a"),
            echo(),
        ),
        step(
            Method::PATCH,
            format!("{APPS}/statefulsets/demo-coordinator"),
            sts_reply(),
        ),
        step(
            Method::PATCH,
            format!("{APPS}/statefulsets/demo-worker-a"),
            sts_reply(),
        ),
        step(
            Method::GET,
            format!("{APPS}/statefulsets"),
            empty_list("apps/v1", "StatefulSetList"),
        ),
        step(
            Method::GET,
            format!("{NS}/services"),
            empty_list("v1", "ServiceList"),
        ),
        step(
            Method::GET,
            format!("{POLICY}/poddisruptionbudgets"),
            empty_list("policy/v1", "PodDisruptionBudgetList"),
        ),
    ]
}

/// A StatefulSet as applied, without a status (no pod runs yet).
pub fn fresh_sts() -> Reply {
    echo()
}

/// A StatefulSet as applied, every replica ready.
pub fn ready_sts() -> Reply {
    echo_with(|body| {
        let replicas = body["spec"]["replicas"].clone();
        body["metadata"]["generation"] = json!(1);
        body["status"] = json!({
            "observedGeneration": 1, "replicas": replicas,
            "readyReplicas": replicas, "updatedReplicas": replicas
        });
    })
}

/// An object of `kind` named `name` that `db` controls, with the labels
/// of worker group `group`.
pub fn owned(db: &Value, api_version: &str, kind: &str, name: &str, group: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app.kubernetes.io/component": "worker", "quiver.dev/worker-group": group},
            "ownerReferences": [{"apiVersion": "quiver.dev/v1alpha1", "kind": "DistributedDatabase",
                "name": "demo", "uid": db["metadata"]["uid"].clone(), "controller": true}]},
        "spec": {}
    })
}

/// A worker StatefulSet of group `group` that `db` controls, with `replicas`.
pub fn owned_sts(db: &Value, group: &str, replicas: i32) -> Value {
    let mut sts = owned(
        db,
        "apps/v1",
        "StatefulSet",
        &format!("demo-worker-{group}"),
        group,
    );
    sts["spec"] = json!({"replicas": replicas, "selector": {}, "template": {}});
    sts
}

/// The fixture asking for `replicas` workers in group `a`, replication
/// factor 1 (so one worker is a valid cluster).
pub fn asking_for(replicas: i32) -> Value {
    let mut db = with_finalizer(fixture());
    db["spec"]["workerGroups"][0]["replicas"] = json!(replicas);
    db["spec"]["sharding"] = json!({"replicationFactor": 1});
    db
}

/// The status patch, then `events` events in the order they are published.
pub fn status_and_events(db: &Value, events: usize) -> Vec<Step> {
    let mut steps = vec![step(
        Method::PATCH,
        format!("{QDB}/status"),
        status_reply(db),
    )];
    steps.extend((0..events).map(|_| step(Method::POST, EVENTS, echo())));
    steps
}

/// The replicas the worker StatefulSet of group `a` was applied with.
pub fn applied_worker_replicas(seen: &[Seen]) -> Value {
    seen.iter()
        .find(|s| s.method == Method::PATCH && s.path.ends_with("/statefulsets/demo-worker-a"))
        .expect("worker StatefulSet applied")
        .body["spec"]["replicas"]
        .clone()
}

/// The status patched last.
pub fn last_status(seen: &[Seen]) -> Value {
    seen.iter()
        .rev()
        .find(|s| s.path.ends_with("/status"))
        .expect("status patched")
        .body["status"]
        .clone()
}

/// Condition `type_` of the status patched last.
pub fn condition(seen: &[Seen], type_: &str) -> Value {
    last_status(seen)["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
        .clone()
}

/// Reasons of the events published, in order.
pub fn event_reasons(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.path == EVENTS)
        .map(|s| s.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The event with `reason`.
pub fn event<'a>(seen: &'a [Seen], reason: &str) -> &'a Value {
    &seen
        .iter()
        .find(|s| s.path == EVENTS && s.body["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {:?}", event_reasons(seen)))
        .body
}

/// Paths of the DELETE requests.
pub fn deletes(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .filter(|s| s.method == Method::DELETE)
        .map(|s| s.path.as_str())
        .collect()
}

/// `db` as the next pass reads it: with the status patched last.
pub fn with_status_of(db: &Value, seen: &[Seen]) -> Value {
    let mut next = db.clone();
    next["status"] = last_status(seen);
    next
}

/// The steps of a pass over a ready cluster (every StatefulSet ready, a
/// coordinator leading): apply, label the leader pod, patch the status,
/// then `events` events.
pub fn ready_pass(db: &Value, events: usize) -> Vec<Step> {
    let mut steps = apply_steps(super::status_failure(404, "NotFound"), ready_sts);
    steps.push(step(
        Method::PATCH,
        format!("{NS}/pods/demo-coordinator-0"),
        echo_with(|b| b["spec"] = json!({"containers": []})),
    ));
    steps.extend(status_and_events(db, events));
    steps
}
