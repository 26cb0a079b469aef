//! Step 4 of reconcile: apply the desired objects.
//!
//! Before the build, [`owned_stateful_sets`] reads the StatefulSets this
//! resource owns, so that [`crate::scale_in`] sees the replicas they have
//! now and the worker groups removed from the spec.
//!
//! Server-side apply with one field manager ([`FIELD_MANAGER`], forced, so
//! the operator wins conflicts over fields it owns), in a fixed order:
//! ServiceAccount, Secret, ConfigMap, Services, PodDisruptionBudgets, and
//! StatefulSets last, so everything a pod mounts exists before the pod.
//! Then objects this resource owns that are no longer desired (a removed
//! worker group's StatefulSet, Service and PDB) are deleted, except those
//! named in `retain`: the objects of a removed group that
//! [`crate::scale_in`] keeps (its nodes still hold shard placements, or the
//! cluster state is unknown) are neither applied nor deleted. The result,
//! [`Applied`], holds the StatefulSets as the API server returned them,
//! which is what [`crate::status`] reads: status is derived from what was
//! applied, never from the desired objects.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::{DesiredObjects, FIELD_MANAGER, LABEL_INSTANCE, LABEL_MANAGED_BY};

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A desired object has no name (a builder bug).
    #[error("a desired {0} has no name")]
    Unnamed(&'static str),
    /// The API server refused an apply.
    #[error("server-side apply of {kind} {name} failed: {source}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing owned objects for orphan removal failed.
    #[error("listing {kind} objects failed: {source}")]
    List {
        /// Kind listed.
        kind: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an orphan failed.
    #[error("deleting orphaned {kind} {name} failed: {source}")]
    Delete {
        /// Kind of the orphan.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the API server holds after an apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Every desired StatefulSet, as returned by the apply (with status).
    pub stateful_sets: Vec<StatefulSet>,
    /// Names of the orphans deleted, as `Kind/name`.
    pub deleted: Vec<String>,
}

impl Applied {
    /// The applied StatefulSet of that name.
    pub fn stateful_set(&self, name: &str) -> Option<&StatefulSet> {
        self.stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }
}

/// Parameters of every apply.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The StatefulSets of `instance` that `owner_uid` controls, as they are
/// now.
pub async fn owned_stateful_sets(
    client: &Client,
    namespace: &str,
    instance: &str,
    owner_uid: &str,
) -> Result<Vec<StatefulSet>, ApplyError> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&owned_selector(instance)))
        .await
        .map_err(|source| ApplyError::List {
            kind: "StatefulSet",
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|s| controlled_by(s, owner_uid))
        .collect())
}

/// Applies every desired object and removes orphans owned by `owner_uid`,
/// leaving the objects named in `retain` as they are.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    instance: &str,
    owner_uid: &str,
    desired: &DesiredObjects,
    retain: &BTreeSet<String>,
) -> Result<Applied, ApplyError> {
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    apply_one(&sa, &desired.service_account, "ServiceAccount").await?;
    if let Some(secret) = &desired.secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        apply_one(&api, secret, "Secret").await?;
    }
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    apply_one(&cm, &desired.config_map, "ConfigMap").await?;
    let svc: Api<Service> = Api::namespaced(client.clone(), namespace);
    for service in &desired.services {
        apply_one(&svc, service, "Service").await?;
    }
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    for budget in &desired.pod_disruption_budgets {
        apply_one(&pdb, budget, "PodDisruptionBudget").await?;
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let mut applied = Applied::default();
    for set in &desired.stateful_sets {
        applied
            .stateful_sets
            .push(apply_one(&sts, set, "StatefulSet").await?);
    }

    let selector = owned_selector(instance);
    let keep = names(&desired.stateful_sets, retain);
    applied
        .deleted
        .extend(delete_orphans(&sts, &selector, owner_uid, &keep, "StatefulSet").await?);
    let keep = names(&desired.services, retain);
    applied
        .deleted
        .extend(delete_orphans(&svc, &selector, owner_uid, &keep, "Service").await?);
    let keep = names(&desired.pod_disruption_budgets, retain);
    applied
        .deleted
        .extend(delete_orphans(&pdb, &selector, owner_uid, &keep, "PodDisruptionBudget").await?);
    Ok(applied)
}

/// Label selector of everything the operator made for one resource.
pub fn owned_selector(instance: &str) -> String {
    format!("{LABEL_INSTANCE}={instance},{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

/// Names of `objects`, and the `retained` ones.
fn names<K: Resource>(objects: &[K], retained: &BTreeSet<String>) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .chain(retained.iter().cloned())
        .collect()
}

/// Whether `owner_uid` is the controller of `object`.
fn controlled_by<K: Resource>(object: &K, owner_uid: &str) -> bool {
    object
        .owner_references()
        .iter()
        .any(|o| o.uid == owner_uid && o.controller == Some(true))
}

async fn apply_one<K>(api: &Api<K>, object: &K, kind: &'static str) -> Result<K, ApplyError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(ApplyError::Unnamed(kind))?;
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| ApplyError::Apply { kind, name, source })
}

/// Deletes objects matching `selector`, owned by `owner_uid`, whose names
/// are not in `keep`. Returns `Kind/name` of each deleted object.
async fn delete_orphans<K>(
    api: &Api<K>,
    selector: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
    kind: &'static str,
) -> Result<Vec<String>, ApplyError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| ApplyError::List { kind, source })?;
    let mut deleted = Vec::new();
    for object in list.items {
        let name = object.name_any();
        if !controlled_by(&object, owner_uid) || keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => return Err(ApplyError::Delete { kind, name, source }),
        }
    }
    Ok(deleted)
}
