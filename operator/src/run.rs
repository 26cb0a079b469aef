//! The thin `Controller` wiring: wait for the Lease, then watch
//! `DistributedDatabase` objects (and the StatefulSets, Services,
//! ConfigMaps and PDBs they own) and run [`controller::reconcile`] with
//! [`controller::error_policy`]. Exits when the Lease is lost, so a
//! restarted replica never reconciles next to the new leader.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::Client;

use crate::controller::{self, Context, InClusterMeta, Settings};
use crate::crd::DistributedDatabase;
use crate::leader::{self, LeaderError, LeaseConfig};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be configured.
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Leader election failed or the Lease was lost.
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Plain settings of a run (parsed by the binary).
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Watch only this namespace; all namespaces when `None`.
    pub watch_namespace: Option<String>,
    /// The Lease; `None` disables leader election (one replica only).
    pub lease: Option<LeaseConfig>,
    /// Reconcile timings.
    pub settings: Settings,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until the Lease is lost or a shutdown signal arrives.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let identity = config
        .lease
        .as_ref()
        .map(|l| l.identity.clone())
        .unwrap_or_else(|| "quiver-operator".to_owned());
    if let Some(lease) = &config.lease {
        tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for leadership");
        leader::acquire(&client, lease).await?;
        tracing::info!("leading; starting the controller");
    }
    let reporter = Reporter {
        controller: "quiver-operator".to_owned(),
        instance: Some(identity),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        reporter,
        Arc::new(InClusterMeta),
        config.settings.clone(),
    ));
    let ns = config.watch_namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        crate::build::LABEL_MANAGED_BY,
        crate::build::FIELD_MANAGER
    ));
    let controller = Controller::new(
        api::<DistributedDatabase>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(&client, ns), owned.clone())
    .owns(api::<Service>(&client, ns), owned.clone())
    .owns(api::<ConfigMap>(&client, ns), owned.clone())
    .owns(api::<PodDisruptionBudget>(&client, ns), owned)
    .shutdown_on_signal()
    .run(controller::reconcile, controller::error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(object = %object.name, "reconciled"),
            Err(err) => tracing::debug!(error = %err, "reconcile error"),
        }
    });
    match &config.lease {
        Some(lease) => {
            tokio::select! {
                () = controller => Ok(()),
                lost = leader::keep_renewing(&client, lease) => Err(RunError::Leader(lost)),
            }
        }
        None => {
            controller.await;
            Ok(())
        }
    }
}
