//! Holding back whatever would remove workers that may still hold shards: a
//! scale-in, or a worker group removed from the spec. It fails closed: when
//! the cluster state cannot be read, nothing is removed.
//!
//! Step in the flow: after the controller has read the StatefulSets this
//! resource owns (`apply::owned_stateful_sets`) and before it builds the
//! desired objects. When the spec may be shrinking ([`may_shrink`]: an
//! existing worker StatefulSet has more replicas than its group asks for or
//! belongs to a group no longer in the spec, the last status counted more
//! workers than the spec asks for, or a hold is in place), the controller
//! reads the coordinators' `GetClusterState`; with a known state,
//! [`crate::retire`] first drains the registered workers that would go
//! ([`leaving`]) and removes the empty ones from the metadata, then [`plan`]
//! decides, from the state those calls left:
//!
//! - state known: a group keeps one replica past its highest pod, among the
//!   pods the spec would remove, that is still registered with the
//!   coordinators (it holds shards, or is not removed from the metadata
//!   yet) ([`holds`]); a removed group is kept while any of its pods is
//!   registered and deleted once none is;
//! - state unknown (no coordinator reachable, no leader, an RPC error):
//!   every group whose StatefulSet has more replicas than the spec asks for
//!   is held at the replicas it has now, and every removed group is kept;
//!   no worker is drained or removed.
//!
//! A held group's StatefulSet is built with the replicas it keeps
//! ([`held_spec`]); a kept removed group's StatefulSet, headless Service and
//! PodDisruptionBudget (one name, [`Holds::retained`]) are neither applied
//! nor deleted by [`crate::apply`], so they stay exactly as they are. The
//! `Progressing` condition says why, with reason [`REASON`]
//! ([`mark_status`]), and an event tells the user (a Warning when the state
//! is unknown). The hold lifts itself once the workers are drained and
//! removed from the metadata.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use quiver_proto::meta::v1::{ClusterState, NodeRole};

use crate::build::{coordinator_name, worker_group_name, LABEL_WORKER_GROUP};
use crate::crd::DistributedDatabaseStatus;
use crate::status::{pod_name_of, PROGRESSING};
use crate::validate::ValidDatabase;

/// Reason of the `Progressing` condition while something is held.
pub const REASON: &str = "ScaleInHeld";

/// A registered worker whose pod the spec would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    /// Its pod (`NAME-worker-GROUP-ORDINAL`).
    pub pod: String,
    /// The pod's ordinal.
    pub ordinal: i32,
    /// Node id in the metadata.
    pub node_id: u64,
    /// Host it registered with.
    pub host: String,
    /// Its gRPC port.
    pub port: u32,
    /// Shard placements it holds.
    pub placements: u64,
    /// Whether it is being drained.
    pub draining: bool,
}

/// One worker group held above its spec, or kept although removed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The worker group.
    pub group: String,
    /// Its StatefulSet (also the name of its headless Service and PDB).
    pub stateful_set: String,
    /// Replicas the spec asks for; `None` when the group was removed from
    /// the spec.
    pub wanted: Option<i32>,
    /// Replicas kept.
    pub kept: i32,
    /// The workers that would go and are still registered, by ordinal;
    /// empty when the cluster state is unknown.
    pub pods: Vec<Leaving>,
}

/// Everything held in one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    /// The groups held or kept.
    pub groups: Vec<Hold>,
    /// Why the cluster state could not be read, when it could not.
    pub state_unknown: Option<String>,
}

impl Holds {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Names of the removed groups' objects to leave as they are.
    pub fn retained(&self) -> BTreeSet<String> {
        self.groups
            .iter()
            .filter(|h| h.wanted.is_none())
            .map(|h| h.stateful_set.clone())
            .collect()
    }
}

/// Whether the last status reported a hold.
pub fn was_held(previous: Option<&DistributedDatabaseStatus>) -> bool {
    previous.is_some_and(|p| {
        p.conditions
            .iter()
            .any(|c| c.type_ == PROGRESSING && c.reason == REASON)
    })
}

/// Whether the spec may remove workers, so the cluster state must be read
/// first: an existing StatefulSet would lose pods ([`shrinks`]), the last
/// status counted more workers than the spec asks for, or a hold is in
/// place.
pub fn may_shrink(
    db: &ValidDatabase,
    existing: &[StatefulSet],
    previous: Option<&DistributedDatabaseStatus>,
) -> bool {
    let wanted = db.spec.total_worker_replicas();
    let counted_more = previous.is_some_and(|p| {
        i64::from(p.workers.registered) > wanted || i64::from(p.workers.ready_replicas) > wanted
    });
    counted_more || was_held(previous) || existing.iter().any(|s| shrinks(db, s))
}

/// Whether the spec would take pods away from an existing StatefulSet: a
/// worker group's with more replicas than the group asks for, or one of a
/// group no longer in the spec.
pub fn shrinks(db: &ValidDatabase, sts: &StatefulSet) -> bool {
    match spec_replicas(db, &sts.name_any()) {
        Some(wanted) => replicas_of(sts) > wanted,
        None => is_removed(db, sts),
    }
}

/// The registered workers whose pods the spec would remove: those past
/// their group's replicas, and every one of a removed group.
pub fn leaving(db: &ValidDatabase, existing: &[StatefulSet], state: &ClusterState) -> Vec<Leaving> {
    let mut out = Vec::new();
    for group in &db.spec.worker_groups {
        let sts = worker_group_name(db, &group.name);
        out.extend(registered_pods(state, &sts, db.spec.group_replicas(group)));
    }
    for sts in existing.iter().filter(|s| is_removed(db, s)) {
        out.extend(registered_pods(state, &sts.name_any(), 0));
    }
    out
}

/// What to hold, from the existing StatefulSets and the cluster state (or
/// why it could not be read).
pub fn plan(
    db: &ValidDatabase,
    existing: &[StatefulSet],
    state: Result<&ClusterState, &str>,
) -> Holds {
    match state {
        Ok(state) => {
            let mut groups = holds(db, state);
            groups.extend(kept_removed_groups(db, existing, Some(state)));
            Holds {
                groups,
                state_unknown: None,
            }
        }
        Err(why) => {
            let mut groups = holds_while_unknown(db, existing);
            groups.extend(kept_removed_groups(db, existing, None));
            Holds {
                groups,
                state_unknown: Some(why.to_owned()),
            }
        }
    }
}

/// The groups of the spec whose scale-in would remove workers that are
/// still registered (the state is known).
pub fn holds(db: &ValidDatabase, state: &ClusterState) -> Vec<Hold> {
    let mut out = Vec::new();
    for group in &db.spec.worker_groups {
        let sts = worker_group_name(db, &group.name);
        let wanted = db.spec.group_replicas(group);
        let pods = registered_pods(state, &sts, wanted);
        let Some(kept) = pods.iter().map(|p| p.ordinal + 1).max() else {
            continue;
        };
        out.push(Hold {
            group: group.name.clone(),
            stateful_set: sts,
            wanted: Some(wanted),
            kept,
            pods,
        });
    }
    out
}

/// The groups of the spec held at the replicas their StatefulSet has now,
/// when it has more than the spec asks for (the state is unknown).
pub fn holds_while_unknown(db: &ValidDatabase, existing: &[StatefulSet]) -> Vec<Hold> {
    let mut out = Vec::new();
    for group in &db.spec.worker_groups {
        let sts = worker_group_name(db, &group.name);
        let wanted = db.spec.group_replicas(group);
        let Some(current) = existing
            .iter()
            .find(|s| s.name_any() == sts)
            .map(replicas_of)
        else {
            continue;
        };
        if current > wanted {
            out.push(Hold {
                group: group.name.clone(),
                stateful_set: sts,
                wanted: Some(wanted),
                kept: current,
                pods: Vec::new(),
            });
        }
    }
    out
}

/// The removed groups to keep: all of them when the state is unknown
/// (`None`), those with a pod still registered otherwise. A removed group
/// not listed here is deleted.
pub fn kept_removed_groups(
    db: &ValidDatabase,
    existing: &[StatefulSet],
    state: Option<&ClusterState>,
) -> Vec<Hold> {
    existing
        .iter()
        .filter(|s| is_removed(db, s))
        .filter_map(|s| {
            let name = s.name_any();
            let pods = state.map(|state| registered_pods(state, &name, 0));
            if pods.as_ref().is_some_and(Vec::is_empty) {
                return None;
            }
            Some(Hold {
                group: group_of(db, s),
                wanted: None,
                kept: replicas_of(s),
                pods: pods.unwrap_or_default(),
                stateful_set: name,
            })
        })
        .collect()
}

/// `db` with each held group's replicas raised to what it keeps.
pub fn held_spec(db: &ValidDatabase, holds: &Holds) -> ValidDatabase {
    let mut held = db.clone();
    // A removed group is not rebuilt: its objects are retained as they are.
    for h in holds.groups.iter().filter(|h| h.wanted.is_some()) {
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
pub fn message(holds: &Holds) -> String {
    let parts: Vec<String> = holds.groups.iter().map(describe).collect();
    let why = match &holds.state_unknown {
        Some(why) => format!(
            "the cluster state is unknown ({why}), so no worker is drained or removed until \
             the coordinators answer"
        ),
        None => "the operator drains those workers (their shards move to the others) and \
                 removes them from the cluster metadata before their pods go"
            .to_owned(),
    };
    format!("{}; {why}", parts.join("; "))
}

/// One held group, with what its registered pods hold when known.
fn describe(h: &Hold) -> String {
    let what = match h.wanted {
        Some(wanted) => format!(
            "worker group {} kept at {} replicas, not {wanted}",
            h.group, h.kept
        ),
        None => format!(
            "worker group {} removed from the spec but kept (StatefulSet {} left as it is)",
            h.group, h.stateful_set
        ),
    };
    if h.pods.is_empty() {
        return what;
    }
    let pods: Vec<String> = h.pods.iter().map(describe_pod).collect();
    format!("{what}: {}", pods.join(", "))
}

fn describe_pod(p: &Leaving) -> String {
    let draining = if p.draining { ", draining" } else { "" };
    if p.placements == 0 {
        format!("{} holds no shard placement but is still registered", p.pod)
    } else {
        format!(
            "{} holds {} shard placement(s){draining}",
            p.pod, p.placements
        )
    }
}

/// Marks the status `Progressing` with reason [`REASON`].
pub fn mark_status(status: &mut DistributedDatabaseStatus, holds: &Holds, now: &Time) {
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
        .filter(|c| c.status == "True" && c.reason == REASON)
        .map_or_else(|| now.clone(), |c| c.last_transition_time);
    status.conditions.push(Condition {
        type_: PROGRESSING.to_owned(),
        status: "True".to_owned(),
        reason: REASON.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
}

/// Ordinal of pod `name` of StatefulSet `sts` (`sts-3` -> 3).
fn ordinal(pod: &str, sts: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

/// The registered workers of `sts` with an ordinal of at least `from`, by
/// ordinal. A node is a pod's when the first label of its host is the pod
/// name (workers register as `POD.SERVICE`).
fn registered_pods(state: &ClusterState, sts: &str, from: i32) -> Vec<Leaving> {
    let mut pods: Vec<Leaving> = state
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Worker as i32)
        .filter_map(|n| {
            let pod = pod_name_of(&n.host)?;
            let o = ordinal(&pod, sts)?;
            (o >= from).then(|| Leaving {
                pod,
                ordinal: o,
                node_id: n.node_id,
                host: n.host.clone(),
                port: n.port,
                placements: n.placements,
                draining: n.draining,
            })
        })
        .collect();
    pods.sort_by(|a, b| (a.ordinal, &a.pod).cmp(&(b.ordinal, &b.pod)));
    pods
}

/// Replicas of a group of the spec by its StatefulSet's name; `None` when
/// no group of the spec has that StatefulSet.
fn spec_replicas(db: &ValidDatabase, sts: &str) -> Option<i32> {
    db.spec
        .worker_groups
        .iter()
        .find(|g| worker_group_name(db, &g.name) == sts)
        .map(|g| db.spec.group_replicas(g))
}

/// An owned StatefulSet that is neither the coordinators' nor a group's of
/// the spec: a removed worker group (the operator makes no other kind).
fn is_removed(db: &ValidDatabase, sts: &StatefulSet) -> bool {
    let name = sts.name_any();
    name != coordinator_name(db) && spec_replicas(db, &name).is_none()
}

/// The worker group of a StatefulSet: its label, else its name.
fn group_of(db: &ValidDatabase, sts: &StatefulSet) -> String {
    let name = sts.name_any();
    let prefix = worker_group_name(db, "");
    sts.labels()
        .get(LABEL_WORKER_GROUP)
        .filter(|g| !g.is_empty())
        .cloned()
        .or_else(|| {
            name.strip_prefix(&prefix)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or(name)
}

/// `spec.replicas`, which Kubernetes defaults to 1.
fn replicas_of(sts: &StatefulSet) -> i32 {
    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use quiver_proto::meta::v1::Node;
    use std::collections::BTreeMap;

    fn db() -> ValidDatabase {
        let yaml = include_str!("../tests/fixtures/minimal.yaml");
        let value: crate::crd::DistributedDatabase = serde_saphyr::from_str(yaml).unwrap();
        crate::validate::validate(&value).unwrap()
    }

    /// `db` with group `a` asking for one worker.
    fn one_worker() -> ValidDatabase {
        let mut db = db();
        db.spec.worker_groups[0].replicas = Some(1);
        db
    }

    fn node(host: &str, placements: u64) -> Node {
        Node {
            node_id: placements + 100,
            port: 9090,
            host: host.into(),
            role: NodeRole::Worker as i32,
            placements,
            ..Node::default()
        }
    }

    /// An existing worker StatefulSet of `group` with `replicas`.
    fn sts(name: &str, group: &str, replicas: i32) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.name = Some(name.to_owned());
        s.metadata.labels = Some(BTreeMap::from([(
            LABEL_WORKER_GROUP.to_owned(),
            group.to_owned(),
        )]));
        s.spec = Some(StatefulSetSpec {
            replicas: Some(replicas),
            ..StatefulSetSpec::default()
        });
        s
    }

    /// What [`leaving`] reports for `node(host, placements)`.
    fn gone(host: &str, ordinal: i32, placements: u64) -> Leaving {
        Leaving {
            pod: host.split('.').next().unwrap().to_owned(),
            ordinal,
            node_id: placements + 100,
            host: host.to_owned(),
            port: 9090,
            placements,
            draining: false,
        }
    }

    fn pods(h: &Hold) -> Vec<(&str, u64)> {
        h.pods
            .iter()
            .map(|p| (p.pod.as_str(), p.placements))
            .collect()
    }

    fn progressing(status: &DistributedDatabaseStatus) -> &Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap()
    }

    #[test]
    fn scale_in_is_held_while_removed_pods_are_registered() {
        let db = one_worker();
        let sts = worker_group_name(&db, "a");
        let state = ClusterState {
            nodes: vec![
                node(&format!("{sts}-0.{sts}"), 4),
                node(&format!("{sts}-1.{sts}"), 0),
                node(&format!("{sts}-2.{sts}"), 3),
            ],
            ..ClusterState::default()
        };
        let h = plan(&db, &[], Ok(&state));
        assert_eq!(h.state_unknown, None);
        assert_eq!(h.groups.len(), 1);
        assert_eq!((h.groups[0].wanted, h.groups[0].kept), (Some(1), 3));
        // Both pods that go are still registered; only one holds shards.
        let (one, two) = (format!("{sts}-1"), format!("{sts}-2"));
        assert_eq!(
            pods(&h.groups[0]),
            vec![(one.as_str(), 0), (two.as_str(), 3)]
        );
        assert_eq!(
            leaving(&db, &[], &state),
            vec![
                gone(&format!("{sts}-1.{sts}"), 1, 0),
                gone(&format!("{sts}-2.{sts}"), 2, 3)
            ]
        );
        assert!(h.retained().is_empty());
        let held = held_spec(&db, &h);
        assert_eq!(held.spec.group_replicas(&held.spec.worker_groups[0]), 3);
        let objects = crate::build::build_all(&held, Some("pw")).unwrap();
        let worker = objects
            .stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(sts.as_str()))
            .unwrap();
        assert_eq!(worker.spec.as_ref().unwrap().replicas, Some(3));
        let text = message(&h);
        assert!(
            text.contains(&format!("{sts}-2 holds 3 shard placement(s)")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{sts}-1 holds no shard placement but is still registered"
            )),
            "{text}"
        );

        let mut status = DistributedDatabaseStatus::default();
        mark_status(&mut status, &h, &crate::controller::now());
        let c = progressing(&status);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", REASON));

        // An empty pod is held until it is removed from the metadata...
        let empty = ClusterState {
            nodes: vec![node(&format!("{sts}-2.{sts}"), 0)],
            ..ClusterState::default()
        };
        assert_eq!(holds(&db, &empty)[0].kept, 3);
        // ...and pods removed from it (or a scale-up) hold nothing.
        let removed = ClusterState {
            nodes: vec![node(&format!("{sts}-0.{sts}"), 4)],
            ..ClusterState::default()
        };
        assert!(holds(&db, &removed).is_empty());
        assert!(leaving(&db, &[], &removed).is_empty());
    }

    #[test]
    fn unknown_state_holds_every_shrinking_group_at_its_current_replicas() {
        let db = one_worker();
        let name = worker_group_name(&db, "a");
        let existing = [sts(&name, "a", 3)];
        let h = plan(&db, &existing, Err("no coordinator reachable"));
        assert_eq!(
            h.groups,
            vec![Hold {
                group: "a".into(),
                stateful_set: name.clone(),
                wanted: Some(1),
                kept: 3,
                pods: Vec::new(),
            }]
        );
        let held = held_spec(&db, &h);
        assert_eq!(held.spec.group_replicas(&held.spec.worker_groups[0]), 3);
        let text = message(&h);
        assert!(
            text.contains("kept at 3 replicas, not 1")
                && text.contains("the cluster state is unknown (no coordinator reachable)"),
            "{text}"
        );

        let mut status = DistributedDatabaseStatus::default();
        mark_status(&mut status, &h, &crate::controller::now());
        let c = progressing(&status);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", REASON));
        assert!(
            c.message.contains("cluster state is unknown"),
            "{}",
            c.message
        );

        // A group at (or below) its spec is not held, and neither is a new one.
        let at_spec = [sts(&name, "a", 1)];
        assert!(plan(&db, &at_spec, Err("down")).is_empty());
        assert!(plan(&db, &[], Err("down")).is_empty());
    }

    #[test]
    fn existing_stateful_sets_reveal_a_shrink_without_a_previous_status() {
        let db = one_worker();
        let name = worker_group_name(&db, "a");
        assert!(may_shrink(&db, &[sts(&name, "a", 3)], None));
        assert!(!may_shrink(&db, &[sts(&name, "a", 1)], None));
        assert!(!may_shrink(&db, &[], None));
        let coordinator = sts(&coordinator_name(&db), "", 1);
        assert!(!may_shrink(&db, &[coordinator], None));
        // A StatefulSet of a group no longer in the spec is a shrink too.
        let removed = sts(&worker_group_name(&db, "b"), "b", 2);
        assert!(may_shrink(&db, &[removed], None));
        // So is a status that counted more workers than the spec asks for.
        let mut previous = DistributedDatabaseStatus::default();
        previous.workers.registered = 2;
        assert!(may_shrink(&db, &[], Some(&previous)));
    }

    #[test]
    fn removed_group_is_kept_while_its_pods_are_registered_and_deleted_after() {
        let db = db();
        let removed = worker_group_name(&db, "b");
        let existing = [
            sts(&worker_group_name(&db, "a"), "a", 2),
            sts(&removed, "b", 2),
        ];
        let holding = ClusterState {
            nodes: vec![
                node(&format!("{removed}-0.{removed}"), 0),
                node(&format!("{removed}-1.{removed}"), 5),
            ],
            ..ClusterState::default()
        };
        let h = plan(&db, &existing, Ok(&holding));
        assert_eq!(
            h.groups,
            vec![Hold {
                group: "b".into(),
                stateful_set: removed.clone(),
                wanted: None,
                kept: 2,
                pods: vec![
                    gone(&format!("{removed}-0.{removed}"), 0, 0),
                    gone(&format!("{removed}-1.{removed}"), 1, 5)
                ],
            }]
        );
        assert_eq!(h.retained(), BTreeSet::from([removed.clone()]));
        // The spec is not changed: the removed group is not rebuilt.
        assert_eq!(held_spec(&db, &h), db);
        let text = message(&h);
        assert!(
            text.contains("worker group b removed from the spec but kept")
                && text.contains(&format!("{removed}-1 holds 5 shard placement(s)")),
            "{text}"
        );

        // Unknown state: kept, whatever it holds.
        let unknown = plan(&db, &existing, Err("no leader"));
        assert_eq!(unknown.retained(), BTreeSet::from([removed.clone()]));
        assert!(message(&unknown).contains("the cluster state is unknown (no leader)"));

        // Every pod of a removed group goes.
        assert_eq!(leaving(&db, &existing, &holding).len(), 2);

        // Known and none registered: not kept, so apply deletes it.
        let empty = ClusterState {
            nodes: vec![node(&format!("{}-1.x", worker_group_name(&db, "a")), 0)],
            ..ClusterState::default()
        };
        let h = plan(&db, &existing, Ok(&empty));
        assert!(h.is_empty(), "{h:?}");
        assert!(h.retained().is_empty());
    }

    #[test]
    fn removed_group_without_label_is_named_from_its_stateful_set() {
        let db = db();
        let mut s = sts(&worker_group_name(&db, "zone-b"), "", 1);
        s.metadata.labels = None;
        let h = kept_removed_groups(&db, &[s], None);
        assert_eq!(h[0].group, "zone-b");
    }
}
