//! The `DistributedDatabase` custom resource (`quiver.dev/v1alpha1`, short
//! name `qdb`): the user's side of the contract.
//!
//! Step in the reconcile flow: the input. The Rust types here are the single
//! source of the CRD YAML in `crds/` (printed by `quiver-operator crd`, checked
//! for drift by a test). Single-field limits live in the schema (ranges,
//! patterns, enums); cross-field rules are CEL `x-kubernetes-validations`
//! that the API server evaluates, mirrored in Rust by [`crate::validate`]
//! for the cases the schema cannot reach (and for clusters where CEL is off).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "quiver.dev";
/// Default number of workers per group when a group sets none.
pub const DEFAULT_WORKER_REPLICAS: i32 = 2;
/// Default number of shards of a distributed table.
pub const DEFAULT_SHARD_COUNT: i32 = 32;
/// Default number of placements of each shard.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 2;
/// Default seconds without heartbeats before a worker is declared failed.
pub const DEFAULT_WORKER_FAILURE_TIMEOUT_SECONDS: i32 = 30;
/// Longest `metadata.name`: child names such as
/// `NAME-coordinator-<revision hash>` must stay under the 63-character label
/// limit.
pub const MAX_NAME_LENGTH: usize = 30;
/// Longest worker group name, for the same reason.
pub const MAX_GROUP_NAME_LENGTH: usize = 12;
/// Most worker groups in one cluster (bounds the cost of CEL rules).
pub const MAX_WORKER_GROUPS: usize = 16;

/// A Quiver cluster: one coordinator Raft group and one StatefulSet of
/// workers per worker group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "quiver.dev",
    version = "v1alpha1",
    kind = "DistributedDatabase",
    namespaced,
    shortname = "qdb",
    category = "quiver",
    status = "DistributedDatabaseStatus",
    derive = "PartialEq",
    doc = "A Quiver distributed SQL database: coordinators (Raft) and groups of workers.",
    scale(
        spec_replicas_path = ".spec.workerReplicas",
        status_replicas_path = ".status.workers.replicasPerGroup",
        label_selector_path = ".status.workers.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready Workers",
        type_ = "integer",
        json_path = ".status.workers.readyReplicas"
    ),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.coordinator.leader"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".status.shards.total"),
    printcolumn(name = "Rebalance", type_ = "string", json_path = ".status.rebalance.state"),
    printcolumn(name = "Moves", type_ = "string", json_path = ".status.rebalance.progress"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 30")
        .message("metadata.name must be at most 30 characters (names of the pods and services are derived from it)")
)]
#[x_kube(
    validation = Rule::new("self.workerGroups.all(g, self.workerGroups.exists_one(h, h.name == g.name))")
        .message("workerGroups names must be unique"),
    validation = Rule::new("self.sharding.replicationFactor <= self.workerGroups.map(g, has(g.replicas) ? g.replicas : self.workerReplicas).sum()")
        .message("sharding.replicationFactor must not exceed the total number of workers (sum of workerGroups replicas)")
)]
#[serde(rename_all = "camelCase")]
pub struct DistributedDatabaseSpec {
    /// Container image holding the `quiver` binary, e.g. `quiver:0.1.0`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pull policy of the image; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The coordinator Raft group (pgwire endpoint, planner, metadata).
    pub coordinator: CoordinatorSpec,
    /// Workers per group for groups that set no `replicas`; the target of
    /// the scale subresource (`kubectl scale qdb NAME --replicas N`).
    #[serde(default = "default_worker_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub worker_replicas: i32,
    /// One StatefulSet per group; a group is a failure domain, and replicas
    /// of a shard are placed in different groups when there are several.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub worker_groups: Vec<WorkerGroupSpec>,
    /// How distributed tables are split and replicated by default.
    #[serde(default)]
    pub sharding: ShardingSpec,
    /// Superuser credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// TLS for client connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Worker failure detection.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// Moving shards onto new workers (removing workers always drains them
    /// first, whatever this says).
    #[serde(default)]
    pub rebalance: RebalanceSpec,
}

fn default_worker_replicas() -> i32 {
    DEFAULT_WORKER_REPLICAS
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The value Kubernetes expects in a container spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The coordinator Raft group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.replicas in [1, 3, 5]")
    .message("coordinator.replicas must be 1, 3 or 5 (a Raft group needs an odd number of members)"))]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorSpec {
    /// Raft members: 1, 3 or 5.
    #[serde(default = "default_coordinator_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Persistent volume of each coordinator.
    pub storage: StorageSpec,
    /// CPU and memory of each coordinator pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the coordinator pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

fn default_coordinator_replicas() -> i32 {
    1
}

/// One worker group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupSpec {
    /// Short DNS label naming the group (`a`, `zone-b`); part of pod names.
    #[schemars(
        length(min = 1, max = 12),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Workers in this group; `spec.workerReplicas` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,
    /// Persistent volume of each worker.
    pub storage: StorageSpec,
    /// CPU and memory of each worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the group's pods must match (e.g. a zone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// A persistent volume claim template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `10Gi`.
    pub size: Quantity,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Default sharding of distributed tables (`quiver.shard_count`,
/// `quiver.shard_replication_factor`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardingSpec {
    /// Shards per distributed table.
    #[serde(default = "default_shard_count")]
    #[schemars(range(min = 1, max = 4096))]
    pub shard_count: i32,
    /// Placements per shard.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 5))]
    pub replication_factor: i32,
}

impl Default for ShardingSpec {
    fn default() -> Self {
        Self {
            shard_count: DEFAULT_SHARD_COUNT,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
        }
    }
}

fn default_shard_count() -> i32 {
    DEFAULT_SHARD_COUNT
}

fn default_replication_factor() -> i32 {
    DEFAULT_REPLICATION_FACTOR
}

/// Superuser credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret holding the password of the superuser `quiver`; the operator
    /// generates `NAME-superuser` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// TLS for client connections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!self.enabled || has(self.secretRef)")
    .message("tls.secretRef is required when tls.enabled is true"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve pgwire (client connections) with TLS.
    #[serde(default)]
    pub enabled: bool,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
}

/// A named object in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct LocalObjectRef {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Worker failure detection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Seconds without heartbeats before a worker is marked failed and its
    /// shards are served from other placements.
    #[serde(default = "default_worker_failure_timeout")]
    #[schemars(range(min = 5, max = 3600))]
    pub worker_failure_timeout_seconds: i32,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            worker_failure_timeout_seconds: DEFAULT_WORKER_FAILURE_TIMEOUT_SECONDS,
        }
    }
}

fn default_worker_failure_timeout() -> i32 {
    DEFAULT_WORKER_FAILURE_TIMEOUT_SECONDS
}

/// Moving shards onto new workers. Removing workers always moves their
/// shards off first, whatever this says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Start a rebalance when every worker of the spec is registered and
    /// the shards are unevenly spread (e.g. after adding workers).
    #[serde(default = "default_auto_rebalance")]
    pub auto: bool,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self { auto: true }
    }
}

fn default_auto_rebalance() -> bool {
    true
}

impl DistributedDatabaseSpec {
    /// Replicas of a group, with the spec-wide default applied.
    pub fn group_replicas(&self, group: &WorkerGroupSpec) -> i32 {
        group.replicas.unwrap_or(self.worker_replicas)
    }

    /// Total workers over all groups.
    pub fn total_worker_replicas(&self) -> i64 {
        self.worker_groups
            .iter()
            .map(|g| i64::from(self.group_replicas(g)))
            .sum()
    }
}

/// Coarse lifecycle of the cluster, for `kubectl get qdb`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects are being created; no coordinator is ready yet.
    Pending,
    /// Some pods are not ready yet or a change is rolling out.
    Progressing,
    /// Every pod is ready and the coordinators have a leader.
    Ready,
    /// Running with missing workers, under-replicated shards or no leader.
    Degraded,
    /// The spec breaks a rule; nothing is changed until it is fixed.
    Invalid,
    /// The resource is being deleted.
    Terminating,
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributedDatabaseStatus {
    /// Coarse lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `Rebalancing`, `ReadOnly`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The coordinator group.
    #[serde(default)]
    pub coordinator: CoordinatorStatus,
    /// All worker groups together.
    #[serde(default)]
    pub workers: WorkersStatus,
    /// Shard totals from the metadata API.
    #[serde(default)]
    pub shards: ShardsStatus,
    /// The current or last rebalance.
    #[serde(default)]
    pub rebalance: RebalanceStatus,
}

/// Coordinator status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorStatus {
    /// Coordinator pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pod name of the Raft leader; absent while there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// Worker status over all groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// Worker pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Smallest current replica count of a group (scale subresource).
    #[serde(default)]
    pub replicas_per_group: i32,
    /// Label selector of all worker pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Workers known to the metadata API.
    #[serde(default)]
    pub registered: i32,
    /// Workers being drained.
    #[serde(default)]
    pub draining: i32,
}

/// Shard totals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardsStatus {
    /// All shards.
    #[serde(default)]
    pub total: i64,
    /// Shards with fewer healthy placements than the replication factor.
    #[serde(default)]
    pub under_replicated: i64,
    /// Shards a rebalance would move.
    #[serde(default)]
    pub misplaced: i64,
}

/// State of the current or last rebalance, as the coordinators report it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RebalancePhase {
    /// None has run since the coordinator leader started.
    Idle,
    /// Shards are moving.
    Running,
    /// Stopping after the move in flight.
    Cancelling,
    /// Every planned move was made.
    Completed,
    /// Stopped before the end.
    Cancelled,
    /// A move failed; `error` says why.
    Failed,
}

/// Rebalance progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// Id of the current or last rebalance; absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its state; absent while the coordinators cannot say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RebalancePhase>,
    /// Shard moves finished.
    #[serde(default)]
    pub moves_done: i64,
    /// Shard moves planned.
    #[serde(default)]
    pub moves_total: i64,
    /// `movesDone/movesTotal`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Bytes still to copy.
    #[serde(default)]
    pub bytes_left: i64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the operator first saw this rebalance in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The CRD as the YAML committed in `crds/distributeddatabase.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let crd = DistributedDatabase::crd();
    let body = serde_saphyr::to_string(&crd)?;
    Ok(format!(
        "# Generated by `quiver-operator crd`; do not edit.\n{body}"
    ))
}
