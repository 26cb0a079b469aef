//! The reconcile pipeline and its error policy.
//!
//! [`reconcile`] runs, per `DistributedDatabase`: finalizer bookkeeping ->
//! read what the resource references -> [`validate`] -> read the
//! StatefulSets it owns and, when the spec may remove workers, the cluster
//! state; with a known state, drain the workers that would go and remove
//! the empty ones from the metadata ([`retire`]), then hold what would
//! remove workers still registered ([`scale_in`], fail closed: an unknown
//! state holds everything and calls nothing) -> [`build`] (pure) ->
//! [`apply`] (server-side apply, orphans deleted except the removed groups
//! [`scale_in`] keeps) -> drive the cluster through the metadata API
//! (register workers, label the Raft leader, start a rebalance onto new
//! workers: [`rebalance`]) -> [`status`] (server-side applied to the status
//! subresource), plus Events on notable transitions. On delete, the
//! finalizer scales workers and then coordinators to zero, so every node
//! drains and flushes on SIGTERM before the garbage collector removes the
//! objects.
//!
//! [`error_policy`]: an invalid spec was reported in the status and waits
//! for the user to change it; other errors back off exponentially per
//! object, with the failure count kept in the [`Context`]. The `Controller`
//! wiring itself is in [`crate::run`], kept thin so this module is testable
//! against a mocked API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Client, Resource, ResourceExt};
use quiver_proto::meta::v1::ClusterState;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;

use crate::apply::{self, apply_params, owned_selector, Applied};
use crate::build::{
    self, coordinator_name, generated_secret_name, worker_group_name, BuildError, LABEL_COMPONENT,
    LABEL_RAFT_ROLE, RAFT_ROLE_FOLLOWER, RAFT_ROLE_LEADER, RPC_PORT,
};
use crate::crd::{DistributedDatabase, DistributedDatabaseStatus, Phase};
use crate::meta_client::{MetaClient, NamespaceResolver};
use crate::rebalance::{self, Gate};
use crate::retire::{self, Retired};
use crate::scale_in;
use crate::status::{self, ClusterView, Notice};
use crate::validate::{self, ValidDatabase, ValidationError};

/// Finalizer the operator puts on every resource.
pub const FINALIZER: &str = "quiver.dev/graceful-shutdown";
/// Length of a generated superuser password.
pub const PASSWORD_LENGTH: usize = 32;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec breaks a rule; reported in the status, awaits a change.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[source] ValidationError),
    /// The resource lacks a namespace (it is namespaced).
    #[error("the resource has no namespace")]
    NoNamespace,
    /// The referenced superuser Secret is missing or lacks the key.
    #[error("superuser Secret {name} (key {key}) not found")]
    MissingSecret {
        /// Secret name.
        name: String,
        /// Key looked for.
        key: String,
    },
    /// A builder failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Server-side apply failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// Another API call failed.
    #[error("{action} failed: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deletion is waiting for pods to stop; not a failure.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
    /// Finalizer bookkeeping (wraps the errors above).
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The step error inside finalizer wrappers.
    pub fn root(&self) -> &Error {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.root(),
                _ => self,
            },
            _ => self,
        }
    }
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Timings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Requeue of a ready cluster (status refresh).
    pub resync: Duration,
    /// Requeue while a cluster is converging.
    pub converging_resync: Duration,
    /// First backoff after a failure; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Backoff ceiling.
    pub backoff_max: Duration,
    /// Timeout of one metadata API call.
    pub meta_timeout: Duration,
    /// Wait after a rebalance failed or was cancelled before the operator
    /// starts another (scale-out or drain), and before it drains again a
    /// worker whose drain ended without emptying it.
    pub rebalance_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(60),
            converging_resync: Duration::from_secs(10),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            meta_timeout: Duration::from_secs(3),
            rebalance_retry: Duration::from_secs(300),
        }
    }
}

/// Makes the metadata client of one cluster (a seam for tests).
pub trait MetaClientFactory: Send + Sync {
    /// A client for the coordinators of `db`.
    fn client_for(&self, db: &ValidDatabase, timeout: Duration) -> MetaClient;
}

/// Dials coordinators by their in-cluster DNS names.
#[derive(Clone, Copy, Debug, Default)]
pub struct InClusterMeta;

impl MetaClientFactory for InClusterMeta {
    fn client_for(&self, db: &ValidDatabase, timeout: Duration) -> MetaClient {
        let resolver = NamespaceResolver {
            namespace: db.namespace.clone(),
        };
        let endpoints = (0..db.spec.coordinator.replicas)
            .map(|i| {
                use crate::meta_client::AddressResolver;
                resolver.resolve(&build::coordinator_rpc_address(db, i))
            })
            .collect();
        MetaClient::new(endpoints, Arc::new(resolver), timeout)
    }
}

/// Shared state of every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Metadata API clients.
    pub meta: Arc<dyn MetaClientFactory>,
    /// Timings.
    pub settings: Settings,
    /// Consecutive failures per object (`namespace/name`).
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `reporter` names this operator instance in Events.
    pub fn new(
        client: Client,
        reporter: Reporter,
        meta: Arc<dyn MetaClientFactory>,
        settings: Settings,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            meta,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Consecutive failures recorded for an object.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn record_failure(&self, key: &str) -> u32 {
        match self.failures.lock() {
            Ok(mut m) => {
                let n = m.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        }
    }

    fn reset_failures(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }
}

fn object_key(db: &DistributedDatabase) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

/// Reconciles one resource.
pub async fn reconcile(db: Arc<DistributedDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = db.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DistributedDatabase> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = object_key(&db);
    let action = finalizer(&api, FINALIZER, db, |event| async {
        match event {
            FinalizerEvent::Apply(db) => apply_database(&db, &ctx, &api).await,
            FinalizerEvent::Cleanup(db) => shut_down(&db, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.reset_failures(&key);
    Ok(action)
}

/// What to do after a failed reconcile.
pub fn error_policy(db: Arc<DistributedDatabase>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&db);
    match error.root() {
        Error::InvalidSpec(_) => {
            ctx.reset_failures(&key);
            Action::await_change()
        }
        Error::ShuttingDown(_) => Action::requeue(ctx.settings.backoff_base),
        other => {
            let failures = ctx.record_failure(&key);
            let delay = backoff(&ctx.settings, failures);
            tracing::warn!(object = %key, failures, ?delay, error = %other, "reconcile failed");
            Action::requeue(delay)
        }
    }
}

/// Delay after `failures` consecutive failures: base * 2^(failures-1), capped.
pub fn backoff(settings: &Settings, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    settings
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max)
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

async fn apply_database(
    db: &DistributedDatabase,
    ctx: &Context,
    api: &Api<DistributedDatabase>,
) -> Result<Action, Error> {
    let previous = db.status.as_ref();
    let now = now();
    let valid = match validate::validate(db) {
        Ok(valid) => valid,
        Err(err) => {
            let generation = db.metadata.generation.unwrap_or(0);
            let status = status::invalid_status(generation, &err.to_string(), previous, &now);
            patch_status(api, &db.name_any(), &status).await?;
            if previous.and_then(|p| p.phase) != Some(Phase::Invalid) {
                publish(ctx, db, EventType::Warning, "InvalidSpec", err.to_string()).await;
            }
            return Err(Error::InvalidSpec(err));
        }
    };

    let password = superuser_password(ctx, &valid).await?;
    let meta = ctx.meta.client_for(&valid, ctx.settings.meta_timeout);
    // Nothing that would remove workers goes ahead while they may hold shards.
    let existing =
        apply::owned_stateful_sets(&ctx.client, &valid.namespace, &valid.name, &valid.owner.uid)
            .await?;
    let (holds, retired) = hold_workers(ctx, &meta, &valid, previous, &existing, &now).await;
    let desired = build::build_all(&scale_in::held_spec(&valid, &holds), password.as_deref())?;
    let applied = apply::apply_all(
        &ctx.client,
        &valid.namespace,
        &valid.name,
        &valid.owner.uid,
        &desired,
        &holds.retained(),
    )
    .await?;
    for orphan in &applied.deleted {
        publish(
            ctx,
            db,
            EventType::Normal,
            "OrphanDeleted",
            format!("deleted {orphan}, no longer in the spec"),
        )
        .await;
    }

    let mut view = observe_cluster(&meta, &valid, &applied).await;
    if let ClusterView::State(state) = &mut view {
        label_leader(ctx, &valid, state).await?;
        let gate = rebalance_gate(ctx, state, previous, &now);
        let scaling_in = !holds.is_empty() || !retired.is_empty();
        let decision = rebalance::decide(&valid, state, gate, scaling_in);
        if let Some(progress) = rebalance::auto_rebalance(&meta, decision).await {
            state.rebalance = Some(progress);
        }
    }
    let mut status = status::compute_status(&valid, &applied, &view, previous, &now);
    scale_in::mark_status(&mut status, &holds, &now);
    patch_status(api, &valid.name, &status).await?;
    if !holds.is_empty() && !scale_in::was_held(previous) {
        // Draining is the normal way out; an unknown state is not.
        let type_ = if holds.state_unknown.is_some() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, db, type_, scale_in::REASON, scale_in::message(&holds)).await;
    }
    for notice in retire::notices(&retired) {
        publish_notice(ctx, db, notice).await;
    }
    notify_transitions(ctx, db, previous, &status).await;

    Ok(if status.phase == Some(Phase::Ready) {
        Action::requeue(ctx.settings.resync)
    } else {
        Action::requeue(ctx.settings.converging_resync)
    })
}

/// Retires the workers that would go ([`retire`]) and decides what to hold
/// ([`scale_in`]). The cluster state is read only when the spec may remove
/// workers; when it cannot be read, nothing is called and everything that
/// would remove workers is held.
async fn hold_workers(
    ctx: &Context,
    meta: &MetaClient,
    db: &ValidDatabase,
    previous: Option<&DistributedDatabaseStatus>,
    existing: &[StatefulSet],
    now: &Time,
) -> (scale_in::Holds, Retired) {
    if !scale_in::may_shrink(db, existing, previous) {
        return Default::default();
    }
    let state = match meta.cluster_state().await {
        Ok(state) => state,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the cluster state before removing workers");
            let why = err.to_string();
            let holds = scale_in::plan(db, existing, Err(why.as_str()));
            return (holds, Retired::default());
        }
    };
    let gate = rebalance_gate(ctx, &state, previous, now);
    let calls = retire::plan(&scale_in::leaving(db, existing, &state), gate);
    let retired = retire::retire(meta, &calls).await;
    let left = retire::after(&state, &retired);
    (scale_in::plan(db, existing, Ok(&left)), retired)
}

/// Whether a rebalance may start, from the state's rebalance and the time
/// the last status saw it in that state.
fn rebalance_gate(
    ctx: &Context,
    state: &ClusterState,
    previous: Option<&DistributedDatabaseStatus>,
    now: &Time,
) -> Gate {
    let current = rebalance::observed(
        state.rebalance.as_ref(),
        previous.map(|p| &p.rebalance),
        now,
    );
    rebalance::gate(&current, now, ctx.settings.rebalance_retry)
}

/// The generated password (read back, or new), or `None` when the spec
/// references a Secret (which must exist).
async fn superuser_password(ctx: &Context, db: &ValidDatabase) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &db.namespace);
    if let Some(reference) = db
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.superuser_secret_ref.as_ref())
    {
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(kube_err("reading the superuser Secret"))?;
        let has_key = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key(&reference.key));
        return if has_key {
            Ok(None)
        } else {
            Err(Error::MissingSecret {
                name: reference.name.clone(),
                key: reference.key.clone(),
            })
        };
    }
    let existing = secrets
        .get_opt(&generated_secret_name(&db.name))
        .await
        .map_err(kube_err("reading the generated superuser Secret"))?;
    let stored = existing
        .and_then(|s| s.data)
        .and_then(|d| d.get(build::GENERATED_SECRET_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .filter(|p| !p.is_empty());
    Ok(Some(stored.unwrap_or_else(generate_password)))
}

/// A fresh random password of [`PASSWORD_LENGTH`] letters and digits.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LENGTH)
}

/// Reads the cluster state once a coordinator is ready, and registers ready
/// workers the coordinators do not know yet.
async fn observe_cluster(
    client: &MetaClient,
    db: &ValidDatabase,
    applied: &Applied,
) -> ClusterView {
    let ready = applied
        .stateful_set(&coordinator_name(db))
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready == 0 {
        return ClusterView::Unavailable("no coordinator is ready yet".to_owned());
    }
    let state = match client.cluster_state().await {
        Ok(state) => state,
        Err(err) => return ClusterView::Unavailable(err.to_string()),
    };
    let mut registered_any = false;
    for (host, group) in unregistered_workers(db, applied, &state) {
        match client
            .register_worker(&host, port_u32(RPC_PORT), &group)
            .await
        {
            Ok(_) => registered_any = true,
            Err(err) => tracing::warn!(worker = %host, error = %err, "registering a worker failed"),
        }
    }
    if registered_any {
        if let Ok(state) = client.cluster_state().await {
            return ClusterView::State(Box::new(state));
        }
    }
    ClusterView::State(Box::new(state))
}

fn port_u32(port: i32) -> u32 {
    u32::try_from(port).unwrap_or_default()
}

/// Workers of fully ready groups that the metadata does not list, as
/// (host, group).
pub fn unregistered_workers(
    db: &ValidDatabase,
    applied: &Applied,
    state: &ClusterState,
) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    for group in &db.spec.worker_groups {
        let sts_name = worker_group_name(db, &group.name);
        let want = db.spec.group_replicas(group);
        let ready = applied
            .stateful_set(&sts_name)
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready < want {
            continue;
        }
        for ordinal in 0..want {
            let host = format!("{sts_name}-{ordinal}.{sts_name}");
            let known = state
                .nodes
                .iter()
                .any(|n| n.host == host && n.port == port_u32(RPC_PORT));
            if !known {
                missing.push((host, group.name.clone()));
            }
        }
    }
    missing
}

/// Labels each coordinator pod `leader` or `follower`, so the client
/// Service reaches the Raft leader. Pods that do not exist are skipped.
async fn label_leader(
    ctx: &Context,
    db: &ValidDatabase,
    state: &ClusterState,
) -> Result<(), Error> {
    let Some(leader) =
        status::pod_name_of(&state.leader_address).filter(|_| !state.leader_address.is_empty())
    else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &db.namespace);
    let sts = coordinator_name(db);
    for ordinal in 0..db.spec.coordinator.replicas {
        let name = format!("{sts}-{ordinal}");
        let role = if name == leader {
            RAFT_ROLE_LEADER
        } else {
            RAFT_ROLE_FOLLOWER
        };
        // A merge patch, not an apply: applying to a missing pod would try to
        // create it.
        let patch = json!({"metadata": {"labels": {LABEL_RAFT_ROLE: role}}});
        let params = PatchParams {
            field_manager: Some(build::FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match pods.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: "labelling the Raft leader pod",
                    source,
                })
            }
        }
    }
    Ok(())
}

async fn patch_status(
    api: &Api<DistributedDatabase>,
    name: &str,
    status: &DistributedDatabaseStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": DistributedDatabase::api_version(&()),
        "kind": DistributedDatabase::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(kube_err("updating the status"))?;
    Ok(())
}

async fn notify_transitions(
    ctx: &Context,
    db: &DistributedDatabase,
    previous: Option<&DistributedDatabaseStatus>,
    status: &DistributedDatabaseStatus,
) {
    let old_phase = previous.and_then(|p| p.phase);
    if old_phase != status.phase {
        if let Some(phase) = status.phase {
            let message = status
                .conditions
                .iter()
                .find(|c| c.type_ == status::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let type_ = if phase == Phase::Degraded {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(ctx, db, type_, &format!("{phase:?}"), message).await;
        }
    }
    let old_leader = previous.and_then(|p| p.coordinator.leader.clone());
    if let Some(leader) = &status.coordinator.leader {
        if old_leader.as_ref() != Some(leader) {
            publish(
                ctx,
                db,
                EventType::Normal,
                "LeaderElected",
                format!("Raft leader is {leader}"),
            )
            .await;
        }
    }
    for notice in rebalance::notices(previous.map(|p| &p.rebalance), &status.rebalance) {
        publish_notice(ctx, db, notice).await;
    }
}

/// Publishes a [`Notice`] about `db`, related to its pod if it names one.
async fn publish_notice(ctx: &Context, db: &DistributedDatabase, notice: Notice) {
    let secondary = notice.pod.map(|pod| ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod),
        namespace: db.namespace(),
        ..ObjectReference::default()
    });
    let event = KubeEvent {
        type_: notice.type_,
        reason: notice.reason.to_owned(),
        note: Some(notice.note),
        action: notice.action,
        secondary,
    };
    send(ctx, db, &event).await;
}

/// Publishes an Event about `db`; a failure is logged, never fatal.
async fn publish(
    ctx: &Context,
    db: &DistributedDatabase,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    send(ctx, db, &event).await;
}

async fn send(ctx: &Context, db: &DistributedDatabase, event: &KubeEvent) {
    let reference: ObjectReference = db.object_ref(&());
    if let Err(err) = ctx.recorder.publish(event, &reference).await {
        tracing::warn!(reason = %event.reason, error = %err, "publishing an event failed");
    }
}

/// Finalizer step: workers to zero, then coordinators to zero; done when
/// no pod is left.
async fn shut_down(
    db: &DistributedDatabase,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&owned_selector(&db.name_any())))
        .await
        .map_err(kube_err("listing StatefulSets for shutdown"))?;
    let uid = db.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<&StatefulSet> = list
        .items
        .iter()
        .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    for role in ["worker", "coordinator"] {
        let sets: Vec<&&StatefulSet> = owned
            .iter()
            .filter(|s| s.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(role))
            .collect();
        let mut running = 0;
        for set in &sets {
            let name = set.name_any();
            let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if wanted > 0 {
                let scale = json!({"spec": {"replicas": 0}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&scale))
                    .await
                    .map_err(kube_err("scaling a StatefulSet to zero"))?;
            }
            running += set.status.as_ref().map_or(0, |s| s.replicas).max(wanted);
        }
        if running > 0 {
            return Err(Error::ShuttingDown(format!(
                "waiting for {running} {role} pods of {} to stop",
                db.name_any()
            )));
        }
    }
    publish(
        ctx,
        db,
        EventType::Normal,
        "ShutDown",
        "every node stopped; releasing the finalizer".to_owned(),
    )
    .await;
    Ok(Action::await_change())
}
