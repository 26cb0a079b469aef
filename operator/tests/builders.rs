//! The pure builders, from the YAML fixtures in `tests/fixtures/`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EnvVar, Service};
use quiver_operator::build::{self, build_all, BuildError, DesiredObjects};
use quiver_operator::crd::DistributedDatabase;
use quiver_operator::validate::{validate, ValidDatabase};

fn load(name: &str) -> ValidDatabase {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    let db: DistributedDatabase = serde_saphyr::from_str(&text).expect("fixture parses");
    validate(&db).expect("fixture valid")
}

fn minimal() -> DesiredObjects {
    build_all(&load("minimal.yaml"), Some("s3cret")).expect("builds")
}

fn ha() -> DesiredObjects {
    build_all(&load("ha.yaml"), None).expect("builds")
}

fn sts<'a>(objects: &'a DesiredObjects, name: &str) -> &'a StatefulSet {
    objects
        .stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no StatefulSet {name}"))
}

fn service<'a>(objects: &'a DesiredObjects, name: &str) -> &'a Service {
    objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn container(set: &StatefulSet) -> &Container {
    &set.spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.as_ref()?.iter().find(|e| e.name == name)
}

#[test]
fn names_follow_the_contract() {
    let objects = minimal();
    let names: Vec<_> = objects
        .stateful_sets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["demo-coordinator", "demo-worker-a"]);
    let services: Vec<_> = objects
        .services
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(services, ["demo-coordinator", "demo", "demo-worker-a"]);
    assert_eq!(
        objects.config_map.metadata.name.as_deref(),
        Some("demo-config")
    );
    assert_eq!(
        objects
            .secret
            .as_ref()
            .and_then(|s| s.metadata.name.as_deref()),
        Some("demo-superuser")
    );
}

#[test]
fn every_object_is_owned_and_labelled() {
    let objects = ha();
    let mut metas = vec![
        &objects.service_account.metadata,
        &objects.config_map.metadata,
    ];
    metas.extend(objects.services.iter().map(|o| &o.metadata));
    metas.extend(objects.pod_disruption_budgets.iter().map(|o| &o.metadata));
    metas.extend(objects.stateful_sets.iter().map(|o| &o.metadata));
    assert_eq!(metas.len(), 2 + 4 + 3 + 3);
    for meta in metas {
        let owners = meta.owner_references.as_ref().expect("owner refs");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "0b7e4a52-2222-4f7d-8c1a-000000000002");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("data"));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(build::LABEL_INSTANCE).map(String::as_str),
            Some("analytics")
        );
        assert_eq!(
            labels.get(build::LABEL_MANAGED_BY).map(String::as_str),
            Some("quiver-operator")
        );
    }
}

#[test]
fn referenced_secret_means_no_generated_one_and_env_points_at_it() {
    let objects = ha();
    assert!(objects.secret.is_none());
    let c = container(sts(&objects, "analytics-worker-b"));
    let key_ref = env(c, "QUIVER_PASSWORD")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secret ref");
    assert_eq!(key_ref.name, "analytics-admin");
    assert_eq!(key_ref.key, "pw");
}

#[test]
fn generated_secret_holds_the_given_password() {
    let objects = minimal();
    let secret = objects.secret.expect("generated");
    let data = secret.data.expect("data");
    assert_eq!(data["password"].0, b"s3cret");
    assert_eq!(data["username"].0, b"quiver");
    assert_eq!(
        build_all(&load("minimal.yaml"), None),
        Err(BuildError::MissingGeneratedPassword)
    );
}

#[test]
fn replicas_come_from_group_or_default() {
    let objects = ha();
    let replicas = |name| sts(&objects, name).spec.as_ref().and_then(|s| s.replicas);
    assert_eq!(replicas("analytics-coordinator"), Some(3));
    assert_eq!(replicas("analytics-worker-a"), Some(3));
    assert_eq!(replicas("analytics-worker-b"), Some(2));
    let minimal = minimal();
    assert_eq!(
        sts(&minimal, "demo-worker-a")
            .spec
            .as_ref()
            .and_then(|s| s.replicas),
        Some(2)
    );
}

#[test]
fn pods_run_quiver_with_role_and_config() {
    let objects = minimal();
    let coordinator = container(sts(&objects, "demo-coordinator"));
    assert_eq!(
        coordinator.command.as_deref(),
        Some(&["quiver".to_owned()][..])
    );
    assert_eq!(
        coordinator.args.as_deref(),
        Some(
            &[
                "--role",
                "coordinator",
                "--config",
                "/etc/quiver/quiver.toml"
            ]
            .map(String::from)[..]
        )
    );
    let worker = container(sts(&objects, "demo-worker-a"));
    assert_eq!(worker.args.as_ref().map(|a| a[1].as_str()), Some("worker"));
    let ports = |c: &Container| -> Vec<i32> {
        c.ports.iter().flatten().map(|p| p.container_port).collect()
    };
    assert_eq!(ports(coordinator), [5432, 6432, 9090]);
    assert_eq!(ports(worker), [6432, 9090], "workers expose no pgwire");
    assert_eq!(
        env(worker, "QUIVER_ADVERTISE_ADDRESS").and_then(|e| e.value.as_deref()),
        Some("$(POD_NAME).demo-worker-a")
    );
    let node_id = env(coordinator, "QUIVER_NODE_ID")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(
        node_id,
        Some("metadata.labels['apps.kubernetes.io/pod-index']")
    );
    assert!(
        env(worker, "QUIVER_NODE_ID").is_none(),
        "worker ids come from registration"
    );
}

#[test]
fn pods_are_hardened_probed_and_spread() {
    let objects = ha();
    for set in &objects.stateful_sets {
        let spec = set.spec.as_ref().expect("spec");
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let pod = spec.template.spec.as_ref().expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let spread = pod.topology_spread_constraints.as_ref().expect("spread");
        assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("container security");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    }
}

#[test]
fn resources_node_selectors_and_storage_come_from_the_spec() {
    let objects = ha();
    let a = sts(&objects, "analytics-worker-a");
    let pod = a
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("topology.kubernetes.io/zone"))
            .map(String::as_str),
        Some("zone-a")
    );
    let requests = pod.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["cpu"].0, "2");
    let coordinator = sts(&objects, "analytics-coordinator");
    let claim = &coordinator
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .expect("claims")[0];
    let claim_spec = claim.spec.as_ref().expect("claim spec");
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone()),
        Some("1Gi".to_owned())
    );
}

#[test]
fn client_service_selects_the_leader_on_5432() {
    let objects = minimal();
    let client = service(&objects, "demo");
    let spec = client.spec.as_ref().expect("spec");
    let selector = spec.selector.as_ref().expect("selector");
    assert_eq!(
        selector.get(build::LABEL_RAFT_ROLE).map(String::as_str),
        Some("leader")
    );
    assert_eq!(
        selector.get(build::LABEL_COMPONENT).map(String::as_str),
        Some("coordinator")
    );
    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [5432]);
    let headless = service(&objects, "demo-worker-a")
        .spec
        .as_ref()
        .expect("spec");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
}

#[test]
fn config_files_carry_the_contract_keys() {
    let objects = ha();
    let data = objects.config_map.data.as_ref().expect("data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["coordinator.toml", "worker-a.toml", "worker-b.toml"]
    );
    let coordinator = &data["coordinator.toml"];
    for line in [
        "bind_address = \"0.0.0.0\"",
        "port = 5432",
        "data_dir = \"/var/lib/quiver/data\"",
        "http_port = 6432",
        "[cluster]",
        "rpc_port = 9090",
        "peers = [\"analytics-coordinator-0.analytics-coordinator:9090\", \"analytics-coordinator-1.analytics-coordinator:9090\", \"analytics-coordinator-2.analytics-coordinator:9090\"]",
        "shard_count = 64",
        "tls_cert = \"/etc/quiver/tls/tls.crt\"",
    ] {
        assert!(coordinator.lines().any(|l| l == line), "missing {line:?} in\n{coordinator}");
    }
    let worker = &data["worker-b.toml"];
    assert!(
        worker.contains("coordinator_address = \"analytics-coordinator:9090\""),
        "{worker}"
    );
    assert!(worker.contains("group = \"b\""), "{worker}");
    assert!(
        !worker.lines().any(|l| l.starts_with("port =")),
        "workers serve no pgwire:\n{worker}"
    );
}

#[test]
fn config_changes_and_only_config_changes_roll_pods() {
    let base = load("ha.yaml");
    let mut changed = base.clone();
    changed.spec.sharding.shard_count = 128;
    let hash = |db: &ValidDatabase, name: &str| {
        let objects = build_all(db, None).expect("builds");
        sts(&objects, name)
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("quiver.dev/config-hash").cloned())
            .expect("hash")
    };
    assert_ne!(
        hash(&base, "analytics-coordinator"),
        hash(&changed, "analytics-coordinator")
    );
    assert_ne!(
        hash(&base, "analytics-worker-a"),
        hash(&changed, "analytics-worker-a")
    );
    // Resources are not in the config file: no config-driven restart.
    let mut other = base.clone();
    other.spec.worker_groups[1].resources = None;
    assert_eq!(
        hash(&base, "analytics-worker-a"),
        hash(&other, "analytics-worker-a")
    );
}

#[test]
fn tls_secret_is_mounted_when_enabled() {
    let objects = ha();
    let pod = sts(&objects, "analytics-coordinator")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    let tls = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    assert_eq!(
        tls.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
        Some("analytics-tls")
    );
    let minimal = minimal();
    let pod = sts(&minimal, "demo-coordinator")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    assert!(pod.volumes.iter().flatten().all(|v| v.name != "tls"));
}

#[test]
fn building_twice_gives_identical_objects() {
    assert_eq!(ha(), ha());
    assert_eq!(minimal(), minimal());
}
