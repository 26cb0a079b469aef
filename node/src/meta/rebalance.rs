//! The rebalance planner: which shard groups move where so that every
//! worker holds its share, and draining workers hold nothing.
//!
//! Step in the flow: `rebalance_table_shards()`, `quiver_drain_node()` and
//! the metadata API's `Rebalance` ask [`plan`] for a list of moves, then
//! record it in Raft (`StartRebalance`); the leader's rebalancer runs the
//! moves one after another as shard moves (ADR 0013). Pure: it reads only
//! the [`MetaState`] it is given.
//!
//! A unit of movement is a *shard group*: shard `i` of every table of one
//! co-location group (a range table's shard alone), with all its copies.
//! Each co-location group is balanced on its own, by shard groups per
//! worker, which also balances rows when shards are even. Every planned
//! move either empties a draining worker or narrows the gap between the
//! fullest and the emptiest worker, so stopping after any prefix of the
//! plan leaves the cluster better balanced than before. A copy never goes
//! to a worker that holds another copy of the same group, and prefers a
//! worker group (failure domain) the shard group is not in yet.

use std::collections::{BTreeMap, BTreeSet};

use super::state::{
    ColocationId, MetaState, NodeId, PlacementId, PlacementState, ShardMove, TableId, TableKind,
};

/// Moves that balance the cluster (only tables whose names are in `only`,
/// when given).
pub fn plan(s: &MetaState, only: Option<&BTreeSet<TableId>>) -> Vec<ShardMove> {
    let placeable: BTreeSet<NodeId> = s
        .nodes
        .iter()
        .filter(|(_, n)| n.is_placeable())
        .map(|(id, _)| *id)
        .collect();
    let draining: BTreeSet<NodeId> = s
        .nodes
        .iter()
        .filter(|(_, n)| n.draining)
        .map(|(id, _)| *id)
        .collect();
    let mut out = Vec::new();
    for units in units_by_group(s, only).into_values() {
        out.extend(balance(s, units, &placeable, &draining));
    }
    out
}

/// One shard group: the placement that stands for it on each node.
#[derive(Debug, Clone)]
struct Unit {
    /// Node -> a placement of the group's first shard there.
    copies: BTreeMap<NodeId, PlacementId>,
}

/// Shard groups, by co-location group (a range table is a group of its own).
fn units_by_group(
    s: &MetaState,
    only: Option<&BTreeSet<TableId>>,
) -> BTreeMap<(u8, ColocationId), Vec<Unit>> {
    let mut seen: BTreeSet<(u8, ColocationId, u32)> = BTreeSet::new();
    let mut out: BTreeMap<(u8, ColocationId), Vec<Unit>> = BTreeMap::new();
    for (table_id, t) in &s.tables {
        if only.is_some_and(|o| !o.contains(table_id)) {
            continue;
        }
        let key = match &t.kind {
            TableKind::Reference => continue,
            TableKind::Hash { colocation_id, .. } => (0u8, *colocation_id),
            TableKind::Range { .. } => (1u8, *table_id),
        };
        for (shard_id, shard) in s.shards_of(*table_id) {
            if !seen.insert((key.0, key.1, shard.index)) && key.0 == 0 {
                continue;
            }
            let copies = s
                .placements_of(shard_id)
                .into_iter()
                .filter(|(_, p)| p.state == PlacementState::Active)
                .map(|(pid, p)| (p.node_id, pid))
                .collect();
            out.entry(key).or_default().push(Unit { copies });
        }
    }
    out
}

fn balance(
    s: &MetaState,
    units: Vec<Unit>,
    placeable: &BTreeSet<NodeId>,
    draining: &BTreeSet<NodeId>,
) -> Vec<ShardMove> {
    let mut load: BTreeMap<NodeId, usize> = placeable.iter().map(|n| (*n, 0)).collect();
    for u in &units {
        for n in u.copies.keys() {
            *load.entry(*n).or_insert(0) += 1;
        }
    }
    let group = |n: &NodeId| s.nodes.get(n).map_or("", |i| i.group.as_str());
    let mut units = units;
    let mut out = Vec::new();
    // Bounded: each move lowers the spread or empties a draining node.
    for _ in 0..units.len() * placeable.len().max(1) + 1 {
        // The source: a draining node with copies, else the fullest.
        let source = load
            .iter()
            .filter(|(n, c)| **c > 0 && (draining.contains(n) || !placeable.contains(n)))
            .map(|(n, _)| *n)
            .next()
            .or_else(|| {
                load.iter()
                    .filter(|(n, _)| placeable.contains(n))
                    .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
                    .map(|(n, _)| *n)
            });
        let Some(from) = source else { break };
        let leaving = !placeable.contains(&from);
        let from_load = load.get(&from).copied().unwrap_or(0);
        // A unit on `from` and a target that may take it.
        let pick = units.iter().enumerate().find_map(|(i, u)| {
            if !u.copies.contains_key(&from) {
                return None;
            }
            let groups: BTreeSet<&str> = u
                .copies
                .keys()
                .filter(|n| **n != from)
                .map(&group)
                .collect();
            placeable
                .iter()
                .filter(|n| !u.copies.contains_key(n))
                .filter(|n| leaving || load.get(n).copied().unwrap_or(0) + 1 < from_load)
                .min_by_key(|n| {
                    (
                        groups.contains(group(n)),
                        load.get(n).copied().unwrap_or(0),
                        **n,
                    )
                })
                .map(|to| (i, *to))
        });
        let Some((i, to)) = pick else { break };
        let pid = units[i].copies.remove(&from).unwrap_or_default();
        units[i].copies.insert(to, pid);
        *load.entry(from).or_insert(1) -= 1;
        *load.entry(to).or_insert(0) += 1;
        out.push(ShardMove {
            placement_id: pid,
            from,
            to,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::command::{apply, Distribution, MetaCommand, NewTable};
    use crate::meta::placement::{plan_hash_shards, plan_placements};
    use crate::meta::state::{ColumnDef, NodeRole};

    fn worker(s: &mut MetaState, port: u16, group: &str) {
        apply(
            s,
            &MetaCommand::AddNode {
                host: "h".into(),
                port,
                group: group.into(),
                role: NodeRole::Worker,
            },
        );
    }

    fn table(s: &mut MetaState, name: &str, shards: u32, rf: u32, colocate: Option<u64>) {
        let placements = match colocate {
            Some(c) => crate::meta::placement::colocated_placements(s, c).unwrap(),
            None => plan_placements(s, 0, shards, rf).unwrap(),
        };
        let r = apply(
            s,
            &MetaCommand::CreateDistributedTable {
                table: NewTable {
                    name: name.into(),
                    columns: vec![ColumnDef {
                        name: "id".into(),
                        data_type: "Int32".into(),
                        nullable: false,
                        default: None,
                    }],
                },
                distribution: Distribution::Hash {
                    column: "id".into(),
                    colocate_with: colocate,
                    replication_factor: rf,
                },
                shards: plan_hash_shards(shards).unwrap(),
                placements,
            },
        );
        assert!(
            !matches!(r, crate::meta::MetaResponse::Rejected(_)),
            "{r:?}"
        );
    }

    /// Applies `moves` as switches would: each placement of the group.
    fn run(s: &mut MetaState, moves: &[ShardMove]) {
        for m in moves {
            let shard = s.placements[&m.placement_id].shard_id;
            for id in crate::meta::moves::shard_group(s, shard).unwrap() {
                let pid = s
                    .placements_of(id)
                    .into_iter()
                    .find(|(_, p)| p.node_id == m.from)
                    .map(|(pid, _)| pid)
                    .unwrap();
                s.placements.get_mut(&pid).unwrap().node_id = m.to;
            }
        }
    }

    fn counts(s: &MetaState) -> BTreeMap<NodeId, usize> {
        let mut c: BTreeMap<NodeId, usize> = s
            .nodes
            .iter()
            .filter(|(_, n)| n.role == NodeRole::Worker)
            .map(|(id, _)| (*id, 0))
            .collect();
        for p in s.placements.values() {
            *c.entry(p.node_id).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn a_new_worker_gets_its_share_and_each_move_helps() {
        let mut s = MetaState::default();
        worker(&mut s, 1, "a");
        worker(&mut s, 2, "a");
        table(&mut s, "t", 12, 1, None);
        let colocation = match s.tables.values().next().unwrap().kind {
            TableKind::Hash { colocation_id, .. } => colocation_id,
            _ => unreachable!(),
        };
        table(&mut s, "u", 12, 1, Some(colocation));
        worker(&mut s, 3, "a");
        let moves = plan(&s, None);
        assert_eq!(moves.len(), 4, "{moves:?}");
        let spread = |s: &MetaState| {
            let c = counts(s);
            c.values().max().unwrap() - c.values().min().unwrap()
        };
        let mut last = spread(&s);
        for m in &moves {
            run(&mut s, std::slice::from_ref(m));
            let now = spread(&s);
            assert!(now <= last, "a move made it worse");
            last = now;
        }
        assert_eq!(
            counts(&s).values().copied().collect::<Vec<_>>(),
            vec![8, 8, 8]
        );
        assert!(plan(&s, None).is_empty(), "balanced: nothing to do");
    }

    #[test]
    fn a_draining_worker_is_emptied_and_replicas_stay_apart() {
        let mut s = MetaState::default();
        for (p, g) in [(1, "a"), (2, "b"), (3, "a"), (4, "b")] {
            worker(&mut s, p, g);
        }
        table(&mut s, "t", 8, 2, None);
        let drained = 1;
        s.nodes.get_mut(&drained).unwrap().draining = true;
        let moves = plan(&s, None);
        assert!(moves.iter().all(|m| m.from == drained || m.to != drained));
        run(&mut s, &moves);
        assert_eq!(counts(&s)[&drained], 0);
        for shard in s.shards.keys() {
            let nodes: BTreeSet<NodeId> = s
                .placements_of(*shard)
                .iter()
                .map(|(_, p)| p.node_id)
                .collect();
            assert_eq!(nodes.len(), 2, "two copies on two nodes");
        }
    }
}
