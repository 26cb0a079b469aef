//! The generated CRD: drift against `crds/distributeddatabase.yaml`, its
//! shape (short name, subresources, printer columns), and its CEL rules
//! evaluated offline with kube's CEL validator on sample resources.

use kube::core::cel::Validator;
use kube::CustomResourceExt;
use quiver_operator::crd::{crd_yaml, DistributedDatabase};
use serde_json::{json, Value};

/// The generated CRD is committed here, and copied into the chart.
const CRD_PATHS: [&str; 2] = [
    "../crds/distributeddatabase.yaml",
    "../charts/quiver-operator/crds/distributeddatabase.yaml",
];

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = crd_yaml().expect("renders");
    for relative in CRD_PATHS {
        let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{relative} drifted from the Rust types; regenerate it with\n  \
             cargo run -p quiver-operator -- crd > crds/distributeddatabase.yaml && \
             cp crds/distributeddatabase.yaml charts/quiver-operator/crds/"
        );
    }
}

#[test]
fn crd_has_names_subresources_and_columns() {
    let crd = DistributedDatabase::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("distributeddatabases.quiver.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["qdb".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale");
    assert_eq!(scale.spec_replicas_path, ".spec.workerReplicas");
    assert_eq!(
        scale.status_replicas_path,
        ".status.workers.replicasPerGroup"
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Ready Workers",
            "Leader",
            "Shards",
            "Rebalance",
            "Moves",
            "Age"
        ]
    );
}

#[test]
fn auto_rebalance_defaults_to_on() {
    let spec = &schema()["properties"]["spec"]["properties"]["rebalance"];
    assert_eq!(
        spec["properties"]["auto"]["default"],
        json!(true),
        "{spec:#}"
    );
    let db: DistributedDatabase = serde_json::from_value(sample()).expect("sample");
    assert!(db.spec.rebalance.auto);
    let mut off = sample();
    off["spec"]["rebalance"] = json!({"auto": false});
    let db: DistributedDatabase = serde_json::from_value(off).expect("sample");
    assert!(!db.spec.rebalance.auto);
}

fn schema() -> Value {
    let crd = DistributedDatabase::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("json")
}

fn sample() -> Value {
    json!({
        "apiVersion": "quiver.dev/v1alpha1",
        "kind": "DistributedDatabase",
        "metadata": {"name": "analytics", "namespace": "data"},
        "spec": {
            "image": "quiver:0.1.0",
            "coordinator": {"replicas": 3, "storage": {"size": "1Gi"}},
            "workerReplicas": 2,
            "workerGroups": [
                {"name": "a", "replicas": 2, "storage": {"size": "10Gi"}},
                {"name": "b", "storage": {"size": "10Gi"}}
            ],
            "sharding": {"shardCount": 32, "replicationFactor": 2},
            "failover": {"workerFailureTimeoutSeconds": 30}
        }
    })
}

/// The messages of the CEL rules that fail on `object`.
fn cel_failures(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => vec![errors.to_string()],
    }
}

fn assert_rejected(object: &Value, fragment: &str) {
    let failures = cel_failures(object);
    assert!(
        failures.iter().any(|f| f.contains(fragment)),
        "expected a failure mentioning {fragment:?}, got {failures:?}"
    );
}

#[test]
fn valid_sample_passes_every_cel_rule() {
    assert_eq!(cel_failures(&sample()), Vec::<String>::new());
}

#[test]
fn even_coordinator_count_is_rejected() {
    let mut object = sample();
    object["spec"]["coordinator"]["replicas"] = json!(2);
    assert_rejected(&object, "coordinator.replicas must be 1, 3 or 5");
}

#[test]
fn duplicate_group_names_are_rejected() {
    let mut object = sample();
    object["spec"]["workerGroups"][1]["name"] = json!("a");
    assert_rejected(&object, "workerGroups names must be unique");
}

#[test]
fn replication_factor_above_worker_count_is_rejected() {
    let mut object = sample();
    object["spec"]["sharding"]["replicationFactor"] = json!(5);
    assert_rejected(&object, "must not exceed the total number of workers");
    // 2 explicit + 2 by default = 4 workers: a factor of 4 fits.
    object["spec"]["sharding"]["replicationFactor"] = json!(4);
    assert_eq!(cel_failures(&object), Vec::<String>::new());
}

#[test]
fn tls_without_secret_is_rejected() {
    let mut object = sample();
    object["spec"]["tls"] = json!({"enabled": true});
    assert_rejected(&object, "tls.secretRef is required");
}

#[test]
fn long_name_is_rejected() {
    let mut object = sample();
    object["metadata"]["name"] = json!("x".repeat(31));
    assert_rejected(&object, "metadata.name must be at most 30 characters");
}
