//! Holding a scale-in while the workers it would remove hold shards.
//!
//! Step in the flow: before building the desired objects, the controller
//! reads the coordinators' `GetClusterState` and [`holds`] finds, per worker
//! group, pods the spec would remove (ordinal at or above the new replica
//! count) whose node still holds shard placements. Their StatefulSet keeps
//! enough replicas to keep them ([`held_spec`]), the `Progressing`
//! condition says why ([`mark_status`]), and a Warning event tells the
//! user. The node does not drain workers yet; when it does, the drain call
//! (`meta_client::MetaClient::drain_node`) goes here, and the hold lifts
//! itself once the placements are gone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use quiver_proto::meta::v1::{ClusterState, NodeRole};

use crate::build::worker_group_name;
use crate::crd::DistributedDatabaseStatus;
use crate::status::PROGRESSING;
use crate::validate::ValidDatabase;

/// One worker group held above its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub group: String,
    /// Replicas the spec asks for.
    pub wanted: i32,
    /// Replicas kept: one past the highest pod that holds placements.
    pub kept: i32,
    /// `(pod, placements)` of the pods that would go.
    pub pods: Vec<(String, u64)>,
}

/// Ordinal of pod `name` of StatefulSet `sts` (`sts-3` -> 3).
fn ordinal(pod: &str, sts: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

/// The groups whose scale-in would remove workers that hold placements.
pub fn holds(db: &ValidDatabase, state: &ClusterState) -> Vec<Hold> {
    let mut out = Vec::new();
    for group in &db.spec.worker_groups {
        let sts = worker_group_name(db, &group.name);
        let wanted = db.spec.group_replicas(group);
        let mut pods: Vec<(i32, String, u64)> = state
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Worker as i32 && n.placements > 0)
            .filter_map(|n| {
                let pod = n.host.split('.').next()?;
                let o = ordinal(pod, &sts)?;
                (o >= wanted).then(|| (o, pod.to_owned(), n.placements))
            })
            .collect();
        if pods.is_empty() {
            continue;
        }
        pods.sort();
        let kept = pods.iter().map(|(o, _, _)| o + 1).max().unwrap_or(wanted);
        out.push(Hold {
            group: group.name.clone(),
            wanted,
            kept,
            pods: pods.into_iter().map(|(_, p, n)| (p, n)).collect(),
        });
    }
    out
}

/// `db` with each held group's replicas raised to what it keeps.
pub fn held_spec(db: &ValidDatabase, holds: &[Hold]) -> ValidDatabase {
    let mut held = db.clone();
    for h in holds {
        if let Some(g) = held
            .spec
            .worker_groups
            .iter_mut()
            .find(|g| g.name == h.group)
        {
            g.replicas = Some(h.kept);
        }
    }
    held
}

/// What a hold means, for the condition and the event.
pub fn message(holds: &[Hold]) -> String {
    let parts: Vec<String> = holds
        .iter()
        .map(|h| {
            let pods: Vec<String> = h
                .pods
                .iter()
                .map(|(p, n)| format!("{p} holds {n} shard placement(s)"))
                .collect();
            format!(
                "worker group {} kept at {} replicas, not {}: {}",
                h.group,
                h.kept,
                h.wanted,
                pods.join(", ")
            )
        })
        .collect();
    format!(
        "{}; scaling in needs those shards moved first (quiver_drain_node), which this version \
         does not do automatically",
        parts.join("; ")
    )
}

/// Marks the status `Progressing` with reason `ScaleInHeld`.
pub fn mark_status(status: &mut DistributedDatabaseStatus, holds: &[Hold], now: &Time) {
    if holds.is_empty() {
        return;
    }
    let message = message(holds);
    let generation = status.observed_generation;
    let previous = status
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .cloned();
    status.conditions.retain(|c| c.type_ != PROGRESSING);
    let last_transition_time = previous
        .filter(|c| c.status == "True" && c.reason == "ScaleInHeld")
        .map_or_else(|| now.clone(), |c| c.last_transition_time);
    status.conditions.push(Condition {
        type_: PROGRESSING.to_owned(),
        status: "True".to_owned(),
        reason: "ScaleInHeld".to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::meta::v1::Node;

    fn db() -> ValidDatabase {
        let yaml = include_str!("../tests/fixtures/minimal.yaml");
        let value: crate::crd::DistributedDatabase = serde_saphyr::from_str(yaml).unwrap();
        crate::validate::validate(&value).unwrap()
    }

    fn node(host: &str, placements: u64) -> Node {
        Node {
            host: host.into(),
            role: NodeRole::Worker as i32,
            placements,
            ..Node::default()
        }
    }

    #[test]
    fn scale_in_is_held_while_removed_pods_hold_placements() {
        let mut db = db();
        let group = db.spec.worker_groups[0].name.clone();
        let sts = worker_group_name(&db, &group);
        db.spec.worker_groups[0].replicas = Some(1);
        let state = ClusterState {
            nodes: vec![
                node(&format!("{sts}-0.{sts}"), 4),
                node(&format!("{sts}-1.{sts}"), 0),
                node(&format!("{sts}-2.{sts}"), 3),
            ],
            ..ClusterState::default()
        };
        let h = holds(&db, &state);
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].wanted, h[0].kept), (1, 3));
        assert_eq!(h[0].pods, vec![(format!("{sts}-2"), 3)]);
        let held = held_spec(&db, &h);
        assert_eq!(held.spec.group_replicas(&held.spec.worker_groups[0]), 3);
        let objects = crate::build::build_all(&held, Some("pw")).unwrap();
        let worker = objects
            .stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(sts.as_str()))
            .unwrap();
        assert_eq!(worker.spec.as_ref().unwrap().replicas, Some(3));
        assert!(message(&h).contains(&format!("{sts}-2 holds 3 shard placement(s)")));

        let mut status = DistributedDatabaseStatus::default();
        mark_status(&mut status, &h, &crate::controller::now());
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ScaleInHeld")
        );

        // emptied pods (or a scale-up) hold nothing
        let empty = ClusterState {
            nodes: vec![node(&format!("{sts}-2.{sts}"), 0)],
            ..ClusterState::default()
        };
        assert!(holds(&db, &empty).is_empty());
    }
}
