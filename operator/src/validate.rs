//! Step 2 of reconcile: validate the resource.
//!
//! The CRD schema already enforces ranges, patterns and (through CEL) the
//! cross-field rules, but CEL may be disabled on a cluster and is never
//! evaluated offline, so the same rules are repeated here in Rust with the
//! same messages. The output, [`ValidDatabase`], is what the pure builders
//! take: it can only be made by [`validate`], so a builder never sees a
//! resource that broke a rule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{
    DistributedDatabase, DistributedDatabaseSpec, MAX_GROUP_NAME_LENGTH, MAX_NAME_LENGTH,
    MAX_WORKER_GROUPS,
};

/// A rule the resource breaks. Each message is meant for the user, and is
/// shown in the `Ready` condition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// The object lacks what the API server always sets.
    #[error("the resource has no {0} (it was not read from the API server)")]
    MissingMetadata(&'static str),
    /// `metadata.name` too long.
    #[error("metadata.name must be at most {MAX_NAME_LENGTH} characters (names of the pods and services are derived from it), got {0}")]
    NameTooLong(usize),
    /// Raft needs an odd group.
    #[error("coordinator.replicas must be 1, 3 or 5 (a Raft group needs an odd number of members), got {0}")]
    CoordinatorReplicas(i32),
    /// No worker group.
    #[error("workerGroups must list at least one group")]
    NoWorkerGroups,
    /// Too many worker groups.
    #[error("workerGroups may list at most {MAX_WORKER_GROUPS} groups, got {0}")]
    TooManyWorkerGroups(usize),
    /// A group name that cannot be part of a DNS label.
    #[error("workerGroups name {0:?} must be 1-{MAX_GROUP_NAME_LENGTH} lowercase letters, digits or '-', starting and ending with a letter or digit")]
    InvalidGroupName(String),
    /// Two groups share a name.
    #[error("workerGroups names must be unique: {0:?} appears more than once")]
    DuplicateGroup(String),
    /// Replica counts out of range.
    #[error("replicas of worker group {group:?} must be between 1 and 100, got {replicas}")]
    WorkerReplicas {
        /// The group.
        group: String,
        /// The count it asks for.
        replicas: i32,
    },
    /// More placements per shard than workers.
    #[error("sharding.replicationFactor must not exceed the total number of workers (sum of workerGroups replicas): {factor} > {workers}")]
    ReplicationFactorTooHigh {
        /// Asked-for factor.
        factor: i32,
        /// Workers in all groups.
        workers: i64,
    },
    /// Shard count out of range.
    #[error("sharding.shardCount must be between 1 and 4096, got {0}")]
    ShardCount(i32),
    /// TLS on without a certificate.
    #[error("tls.secretRef is required when tls.enabled is true")]
    TlsWithoutSecret,
}

/// A resource that passed every rule, with the metadata builders need.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidDatabase {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.generation` (0 when absent).
    pub generation: i64,
    /// Controller owner reference put on every child object.
    pub owner: OwnerReference,
    /// The validated spec.
    pub spec: DistributedDatabaseSpec,
}

/// Checks every rule, in the order a user would fix them.
pub fn validate(db: &DistributedDatabase) -> Result<ValidDatabase, ValidationError> {
    let name = db
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("metadata.name"))?;
    let namespace = db
        .metadata
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("metadata.namespace"))?;
    let owner = db
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("metadata.uid"))?;
    if name.len() > MAX_NAME_LENGTH {
        return Err(ValidationError::NameTooLong(name.len()));
    }
    validate_spec(&db.spec)?;
    Ok(ValidDatabase {
        name,
        namespace,
        generation: db.metadata.generation.unwrap_or_default(),
        owner,
        spec: db.spec.clone(),
    })
}

/// The rules on the spec alone (the CEL rules of the CRD, and the schema's
/// ranges that matter for building objects).
pub fn validate_spec(spec: &DistributedDatabaseSpec) -> Result<(), ValidationError> {
    if ![1, 3, 5].contains(&spec.coordinator.replicas) {
        return Err(ValidationError::CoordinatorReplicas(
            spec.coordinator.replicas,
        ));
    }
    if spec.worker_groups.is_empty() {
        return Err(ValidationError::NoWorkerGroups);
    }
    if spec.worker_groups.len() > MAX_WORKER_GROUPS {
        return Err(ValidationError::TooManyWorkerGroups(
            spec.worker_groups.len(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for group in &spec.worker_groups {
        if !is_group_name(&group.name) {
            return Err(ValidationError::InvalidGroupName(group.name.clone()));
        }
        if !seen.insert(group.name.as_str()) {
            return Err(ValidationError::DuplicateGroup(group.name.clone()));
        }
        let replicas = spec.group_replicas(group);
        if !(1..=100).contains(&replicas) {
            return Err(ValidationError::WorkerReplicas {
                group: group.name.clone(),
                replicas,
            });
        }
    }
    if !(1..=4096).contains(&spec.sharding.shard_count) {
        return Err(ValidationError::ShardCount(spec.sharding.shard_count));
    }
    let workers = spec.total_worker_replicas();
    if i64::from(spec.sharding.replication_factor) > workers {
        return Err(ValidationError::ReplicationFactorTooHigh {
            factor: spec.sharding.replication_factor,
            workers,
        });
    }
    if let Some(tls) = &spec.tls {
        if tls.enabled && tls.secret_ref.is_none() {
            return Err(ValidationError::TlsWithoutSecret);
        }
    }
    Ok(())
}

/// A DNS-label-like name of at most [`MAX_GROUP_NAME_LENGTH`] characters.
fn is_group_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !bytes.is_empty()
        && bytes.len() <= MAX_GROUP_NAME_LENGTH
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TlsSpec, WorkerGroupSpec};

    fn fixture() -> DistributedDatabase {
        let yaml = include_str!("../tests/fixtures/ha.yaml");
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    fn group(name: &str, replicas: Option<i32>) -> WorkerGroupSpec {
        let mut g = fixture().spec.worker_groups[0].clone();
        g.name = name.to_owned();
        g.replicas = replicas;
        g
    }

    #[test]
    fn fixture_is_valid_and_carries_owner() {
        let valid = validate(&fixture()).expect("valid");
        assert_eq!(valid.name, "analytics");
        assert_eq!(valid.namespace, "data");
        assert_eq!(valid.owner.kind, "DistributedDatabase");
        assert_eq!(valid.owner.controller, Some(true));
    }

    #[test]
    fn coordinator_replicas_must_be_odd_and_small() {
        for bad in [0, 2, 4, 6] {
            let mut db = fixture();
            db.spec.coordinator.replicas = bad;
            assert_eq!(
                validate(&db),
                Err(ValidationError::CoordinatorReplicas(bad))
            );
        }
        for good in [1, 3, 5] {
            let mut db = fixture();
            db.spec.coordinator.replicas = good;
            assert!(validate(&db).is_ok(), "{good} coordinators");
        }
    }

    #[test]
    fn group_names_unique_and_dns_safe() {
        let mut db = fixture();
        db.spec.worker_groups = vec![group("a", None), group("a", None)];
        assert_eq!(
            validate(&db),
            Err(ValidationError::DuplicateGroup("a".into()))
        );
        for bad in ["", "A", "-a", "a-", "a_b", "abcdefghijklm"] {
            db.spec.worker_groups = vec![group(bad, None)];
            assert_eq!(
                validate(&db),
                Err(ValidationError::InvalidGroupName(bad.into())),
                "{bad:?}"
            );
        }
        db.spec.worker_groups = vec![group("zone-1", None)];
        assert!(validate(&db).is_ok());
    }

    #[test]
    fn replication_factor_counts_default_and_explicit_replicas() {
        let mut db = fixture();
        db.spec.worker_replicas = 1;
        db.spec.worker_groups = vec![group("a", None), group("b", Some(2))];
        db.spec.sharding.replication_factor = 3;
        assert!(validate(&db).is_ok());
        db.spec.sharding.replication_factor = 4;
        assert_eq!(
            validate(&db),
            Err(ValidationError::ReplicationFactorTooHigh {
                factor: 4,
                workers: 3
            })
        );
    }

    #[test]
    fn empty_groups_and_tls_without_secret_are_rejected() {
        let mut db = fixture();
        db.spec.worker_groups.clear();
        assert_eq!(validate(&db), Err(ValidationError::NoWorkerGroups));

        let mut db = fixture();
        db.spec.tls = Some(TlsSpec {
            enabled: true,
            secret_ref: None,
        });
        assert_eq!(validate(&db), Err(ValidationError::TlsWithoutSecret));
    }

    #[test]
    fn long_names_and_missing_metadata_are_rejected() {
        let mut db = fixture();
        db.metadata.name = Some("x".repeat(31));
        assert_eq!(validate(&db), Err(ValidationError::NameTooLong(31)));

        let mut db = fixture();
        db.metadata.uid = None;
        assert_eq!(
            validate(&db),
            Err(ValidationError::MissingMetadata("metadata.uid"))
        );
    }

    #[test]
    fn messages_name_the_field() {
        let msg = ValidationError::CoordinatorReplicas(2).to_string();
        assert!(msg.contains("coordinator.replicas"), "{msg}");
        let msg = ValidationError::ReplicationFactorTooHigh {
            factor: 3,
            workers: 2,
        }
        .to_string();
        assert!(msg.contains("sharding.replicationFactor"), "{msg}");
    }
}
