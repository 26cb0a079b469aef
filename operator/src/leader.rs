//! Operator leader election with a `coordination.k8s.io/v1` Lease, so that
//! two (or more) operator replicas can run and exactly one reconciles.
//!
//! Not a reconcile step: it gates [`crate::run`]. The candidate takes the
//! Lease when it is free or expired, renews it every `renew_every`, and
//! every write goes through `replace` with the `resourceVersion` it read,
//! so two candidates racing for an expired Lease cannot both win (the
//! loser gets 409 Conflict). The decision itself, [`decide`], is a pure
//! function and unit-tested.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or written.
    #[error("{action} the Lease {name} failed: {source}")]
    Kube {
        /// Reading, creating or updating.
        action: &'static str,
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another candidate holds the Lease now.
    #[error("lost the Lease {name} to {holder}")]
    Lost {
        /// Lease name.
        name: String,
        /// Its new holder.
        holder: String,
    },
}

/// Where the Lease is and who this candidate is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This candidate (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// Renewal period (well under `lease_duration`).
    pub renew_every: Duration,
}

/// What a candidate does with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It holds the Lease: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a valid Lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides from the Lease's spec, at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed.checked_add(duration).is_ok_and(|end| end > now) => {
            Decision::Wait { holder }
        }
        _ => Decision::Acquire,
    }
}

/// One election round: returns whether this candidate holds the Lease
/// afterwards. A 409 Conflict (someone wrote first) counts as "not held".
pub async fn try_acquire_or_renew(
    client: &Client,
    config: &LeaseConfig,
) -> Result<bool, LeaderError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let err = |action: &'static str| {
        let name = config.name.clone();
        move |source| LeaderError::Kube {
            action,
            name,
            source,
        }
    };
    let now = Timestamp::now();
    let current = api.get_opt(&config.name).await.map_err(err("reading"))?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        now,
    );
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let result = match (current, decision) {
        (_, Decision::Wait { .. }) => return Ok(false),
        (None, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (Some(mut lease), decision) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if decision == Decision::Acquire {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            spec.lease_duration_seconds = Some(duration_secs);
            spec.renew_time = Some(MicroTime(now));
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(source) => Err(LeaderError::Kube {
            action: "writing",
            name: config.name.clone(),
            source,
        }),
    }
}

/// Blocks until this candidate holds the Lease.
pub async fn acquire(client: &Client, config: &LeaseConfig) -> Result<(), LeaderError> {
    let mut ticker = tokio::time::interval(config.renew_every);
    loop {
        ticker.tick().await;
        match try_acquire_or_renew(client, config).await {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::debug!(lease = %config.name, "another replica leads; waiting"),
            Err(err) => tracing::warn!(error = %err, "leader election round failed"),
        }
    }
}

/// Renews the Lease until renewal fails for longer than the lease duration
/// (another replica may have taken over); then returns the reason.
pub async fn keep_renewing(client: &Client, config: &LeaseConfig) -> LeaderError {
    let mut ticker = tokio::time::interval(config.renew_every);
    let mut last_success = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        match try_acquire_or_renew(client, config).await {
            Ok(true) => last_success = tokio::time::Instant::now(),
            Ok(false) => {
                return LeaderError::Lost {
                    name: config.name.clone(),
                    holder: "another replica".to_owned(),
                }
            }
            Err(err) if last_success.elapsed() >= config.lease_duration => return err,
            Err(err) => tracing::warn!(error = %err, "renewing the Lease failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn free_or_missing_lease_is_acquired() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Decision::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed_even_if_expired() {
        let now = Timestamp::now();
        let old = now - SignedDuration::from_secs(600);
        assert_eq!(decide(Some(&spec("a", old, 15)), "a", now), Decision::Renew);
    }

    #[test]
    fn valid_foreign_lease_waits_and_expired_one_is_taken() {
        let now = Timestamp::now();
        let recent = now - SignedDuration::from_secs(5);
        assert_eq!(
            decide(Some(&spec("b", recent, 15)), "a", now),
            Decision::Wait { holder: "b".into() }
        );
        let stale = now - SignedDuration::from_secs(16);
        assert_eq!(
            decide(Some(&spec("b", stale, 15)), "a", now),
            Decision::Acquire
        );
    }
}
