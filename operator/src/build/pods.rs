//! Step 3 of reconcile (builders): the StatefulSets and their pod templates.
//!
//! One coordinator StatefulSet and one per worker group. Every pod runs
//! `quiver --role ROLE --config /etc/quiver/quiver.toml` as a non-root user
//! with a read-only root filesystem and no capabilities, probes `/readyz`
//! and `/healthz` on the HTTP port, gets time to drain on SIGTERM, and is
//! spread over nodes. Pods of one StatefulSet start in parallel: Raft
//! members must all be up to elect a leader, so ordered start-up (which
//! waits for readiness) would never finish.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{
    worker_key, CONFIG_FILE, CONFIG_MOUNT, COORDINATOR_KEY, DATA_MOUNT, TLS_MOUNT,
};
use super::{
    coordinator_name, generated_secret_name, object_meta, selector_labels, worker_group_name, Role,
    GENERATED_SECRET_KEY, HTTP_PORT, PGWIRE_PORT, RPC_PORT,
};
use crate::crd::{StorageSpec, WorkerGroupSpec};
use crate::validate::ValidDatabase;

/// UID and GID the node runs as (no root).
pub const RUN_AS_USER: i64 = 65532;
/// Seconds a pod gets between SIGTERM and SIGKILL to drain queries, flush
/// and fsync.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// Annotation with a hash of the pod's config file, so a config change
/// rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "quiver.dev/config-hash";
/// Label Kubernetes (1.28+) sets on StatefulSet pods to their ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Name of the container in every pod.
pub const CONTAINER_NAME: &str = "quiver";

/// The coordinator StatefulSet `NAME-coordinator`.
pub fn build_coordinator_statefulset(db: &ValidDatabase, config: &ConfigMap) -> StatefulSet {
    let spec = &db.spec.coordinator;
    let name = coordinator_name(db);
    let pod = PodParts {
        role: Role::Coordinator,
        group: None,
        service: name.clone(),
        config_key: COORDINATOR_KEY.to_owned(),
        resources: spec.resources.clone(),
        node_selector: spec.node_selector.clone(),
    };
    build_statefulset(db, name, spec.replicas, &spec.storage, pod, config)
}

/// The StatefulSet `NAME-worker-GROUP` of one worker group.
pub fn build_worker_statefulset(
    db: &ValidDatabase,
    group: &WorkerGroupSpec,
    config: &ConfigMap,
) -> StatefulSet {
    let name = worker_group_name(db, &group.name);
    let pod = PodParts {
        role: Role::Worker,
        group: Some(group.name.clone()),
        service: name.clone(),
        config_key: worker_key(&group.name),
        resources: group.resources.clone(),
        node_selector: group.node_selector.clone(),
    };
    let replicas = db.spec.group_replicas(group);
    build_statefulset(db, name, replicas, &group.storage, pod, config)
}

/// What differs between the pod templates.
struct PodParts {
    role: Role,
    group: Option<String>,
    service: String,
    config_key: String,
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    node_selector: BTreeMap<String, String>,
}

fn build_statefulset(
    db: &ValidDatabase,
    name: String,
    replicas: i32,
    storage: &StorageSpec,
    pod: PodParts,
    config: &ConfigMap,
) -> StatefulSet {
    let selector = selector_labels(db, pod.role, pod.group.as_deref());
    let config_text = config
        .data
        .as_ref()
        .and_then(|d| d.get(&pod.config_key))
        .map(String::as_str)
        .unwrap_or_default();
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(selector.clone()),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                format!("{:016x}", fnv1a(config_text.as_bytes())),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(build_pod_spec(db, &pod, &selector)),
    };
    StatefulSet {
        metadata: object_meta(db, name, selector.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(pod.service.clone()),
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Data outlives a scale-in or a delete: dropping shards is a
            // decision for the metadata API (drain first), not for Kubernetes.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template,
            volume_claim_templates: Some(vec![build_data_claim(storage)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn build_data_claim(storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.0.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn build_pod_spec(
    db: &ValidDatabase,
    pod: &PodParts,
    selector: &BTreeMap<String, String>,
) -> PodSpec {
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: super::config_map_name(db),
                items: Some(vec![KeyToPath {
                    key: pod.config_key.clone(),
                    path: "quiver.toml".to_owned(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("data", DATA_MOUNT, false),
        mount("config", CONFIG_MOUNT, true),
        mount("tmp", "/tmp", false),
    ];
    if let Some(secret) = db
        .spec
        .tls
        .as_ref()
        .filter(|t| t.enabled)
        .and_then(|t| t.secret_ref.as_ref())
    {
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", TLS_MOUNT, true));
    }
    PodSpec {
        service_account_name: Some(db.name.clone()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        containers: vec![build_container(db, pod, mounts)],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn build_container(db: &ValidDatabase, pod: &PodParts, mounts: Vec<VolumeMount>) -> Container {
    let mut ports = vec![
        container_port("http", HTTP_PORT),
        container_port("grpc", RPC_PORT),
    ];
    if pod.role == Role::Coordinator {
        ports.insert(0, container_port("postgres", PGWIRE_PORT));
    }
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(db.spec.image.clone()),
        image_pull_policy: db.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["quiver".to_owned()]),
        args: Some(vec![
            "--role".to_owned(),
            pod.role.as_str().to_owned(),
            "--config".to_owned(),
            CONFIG_FILE.to_owned(),
        ]),
        env: Some(build_env(db, pod)),
        ports: Some(ports),
        resources: pod.resources.clone(),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // Replaying a long WAL may take minutes; liveness waits for this.
        startup_probe: Some(http_probe("/healthz", 5, 120)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Environment of the node: per-pod identity and the password.
fn build_env(db: &ValidDatabase, pod: &PodParts) -> Vec<EnvVar> {
    let (secret_name, secret_key) = match db
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.superuser_secret_ref.as_ref())
    {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => (
            generated_secret_name(&db.name),
            GENERATED_SECRET_KEY.to_owned(),
        ),
    };
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        // `$(POD_NAME)` is expanded by the kubelet: NAME-worker-a-0.NAME-worker-a.
        // A host name only: the node adds its rpc_port, and the controller
        // looks workers up by this host (see `unregistered_workers`).
        value_env(
            "QUIVER_ADVERTISE_ADDRESS",
            format!("$(POD_NAME).{}", pod.service),
        ),
    ];
    if pod.role == Role::Coordinator {
        // Raft ids are the pod ordinals, stable across restarts.
        env.push(field_env(
            "QUIVER_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ));
    }
    env.push(EnvVar {
        name: "QUIVER_PASSWORD".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name,
                key: secret_key,
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    env
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// 64-bit FNV-1a: a stable, dependency-free content hash (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
