//! Offline rendering: the objects the operator would apply for a
//! `DistributedDatabase` manifest, as multi-document YAML, without a
//! cluster (`quiver-operator render -f manifests/minimal.yaml`).
//!
//! Not a reconcile step: it runs [`crate::validate`] and [`crate::build`]
//! exactly as the controller does, so the container end-to-end test and
//! reviewers see precisely what a cluster would get. Fields only the API
//! server sets (namespace, uid) get placeholders.

use crate::build::{build_all, BuildError};
use crate::crd::DistributedDatabase;
use crate::validate::{validate, ValidationError};

/// uid given to a manifest that has none (it only appears in owner references).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The manifest breaks a rule.
    #[error("invalid DistributedDatabase: {0}")]
    Invalid(#[from] ValidationError),
    /// A builder failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// An object could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}

/// Every desired object of `db`, in apply order, as YAML documents.
pub fn render_objects(
    mut db: DistributedDatabase,
    namespace: &str,
    password: &str,
) -> Result<String, RenderError> {
    db.metadata
        .namespace
        .get_or_insert_with(|| namespace.to_owned());
    db.metadata
        .uid
        .get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
    let valid = validate(&db)?;
    let objects = build_all(&valid, Some(password))?;
    let mut docs = vec![serde_saphyr::to_string(&objects.service_account)?];
    if let Some(secret) = &objects.secret {
        docs.push(serde_saphyr::to_string(secret)?);
    }
    docs.push(serde_saphyr::to_string(&objects.config_map)?);
    for service in &objects.services {
        docs.push(serde_saphyr::to_string(service)?);
    }
    for budget in &objects.pod_disruption_budgets {
        docs.push(serde_saphyr::to_string(budget)?);
    }
    for set in &objects.stateful_sets {
        docs.push(serde_saphyr::to_string(set)?);
    }
    Ok(docs
        .iter()
        .map(|d| format!("---\n{d}"))
        .collect::<Vec<_>>()
        .concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_minimal_sample_with_placeholders() {
        let db: DistributedDatabase =
            serde_saphyr::from_str(include_str!("../../manifests/minimal.yaml")).expect("sample");
        let yaml = render_objects(db, "e2e", "pw").expect("renders");
        assert_eq!(yaml.matches("---\n").count(), 10, "{yaml}");
        assert!(yaml.contains("namespace: e2e"));
        assert!(yaml.contains(PLACEHOLDER_UID));
        assert!(yaml.contains("name: demo-worker-a"));
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let mut db: DistributedDatabase =
            serde_saphyr::from_str(include_str!("../../manifests/minimal.yaml")).expect("sample");
        db.spec.coordinator.replicas = 2;
        let err = render_objects(db, "e2e", "pw").expect_err("invalid");
        assert!(err.to_string().contains("coordinator.replicas"), "{err}");
    }
}
