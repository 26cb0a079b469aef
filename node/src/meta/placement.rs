//! Shard and placement planning: pure functions the leader runs *before* it
//! proposes a table.
//!
//! Step in the flow: `CREATE TABLE ... distributed` asks these helpers for
//! the shard ranges and the nodes of each copy, then proposes a
//! [`super::MetaCommand::CreateDistributedTable`] carrying the result.
//! `apply` only re-validates, so it stays deterministic; these functions may
//! look at anything in the [`MetaState`] they are given but nothing else.
//!
//! # Hash space
//!
//! A hash-distributed table splits the **signed 32-bit hash space**
//! `[i32::MIN, i32::MAX]` (2^32 values) into `shard_count` contiguous,
//! inclusive ranges, the way Citus does: with `step = 2^32 / shard_count`
//! (integer division), shard `i` covers
//! `[i32::MIN + i*step, i32::MIN + (i+1)*step - 1]`, and the last shard
//! also takes the remainder up to `i32::MAX`. The row hash itself (which
//! function of the distribution column) is the executor's business; it only
//! has to produce an `i32`. [`shard_index_for_hash`] is the inverse of
//! [`plan_hash_shards`]. Ranges are stored as `i64` in
//! [`super::state::ShardInfo`] so range tables can use the full `i64` domain.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::command::{PlacementSpec, ShardSpec};
use super::state::{ColocationId, MetaState, NodeId};

/// Largest shard count a table may have.
pub const MAX_SHARD_COUNT: u32 = 1 << 16;

/// Why a placement plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error("shard count must be between 1 and {MAX_SHARD_COUNT}, not {0}")]
    ShardCount(u32),
    #[error("replication factor {wanted} needs that many active workers; there are {available}")]
    NotEnoughWorkers { wanted: u32, available: usize },
    #[error("co-location group {0} does not exist or has no table")]
    NoColocation(ColocationId),
}

/// The inclusive bounds of the hash space, as `i64`.
pub fn hash_space() -> (i64, i64) {
    (i64::from(i32::MIN), i64::from(i32::MAX))
}

fn hash_step(shard_count: u32) -> i64 {
    (1i64 << 32) / i64::from(shard_count.max(1))
}

/// The shard (0-based index) whose range holds `hash`, for a table of
/// `shard_count` hash shards laid out by [`plan_hash_shards`].
pub fn shard_index_for_hash(hash: i32, shard_count: u32) -> u32 {
    let count = shard_count.max(1);
    let offset = i64::from(hash) - i64::from(i32::MIN);
    let index = offset / hash_step(count);
    // The last shard also takes the remainder of the division.
    index.min(i64::from(count) - 1) as u32
}

/// The `shard_count` hash ranges that tile the hash space (see the module
/// docs), in index order.
pub fn plan_hash_shards(shard_count: u32) -> Result<Vec<ShardSpec>, PlacementError> {
    if shard_count == 0 || shard_count > MAX_SHARD_COUNT {
        return Err(PlacementError::ShardCount(shard_count));
    }
    let (lo, hi) = hash_space();
    let step = hash_step(shard_count);
    Ok((0..shard_count)
        .map(|i| {
            let min = lo + i64::from(i) * step;
            let max = if i + 1 == shard_count {
                hi
            } else {
                min + step - 1
            };
            ShardSpec { index: i, min, max }
        })
        .collect())
}

/// Workers that may take new placements, by id.
pub fn placeable_workers(state: &MetaState) -> Vec<NodeId> {
    state
        .nodes
        .iter()
        .filter(|(_, n)| n.is_placeable())
        .map(|(id, _)| *id)
        .collect()
}

/// Places `replication_factor` copies of each of `shard_count` shards
/// (indexes `first_index..`) on the active workers, evenly.
///
/// Greedy and deterministic: each copy goes to the worker with the fewest
/// placements so far (existing ones included), never to a worker that has
/// the shard already, preferring a worker group the shard is not in yet;
/// ties go to the lowest node id. With equal starting loads, the counts of
/// any two workers differ by at most one afterwards.
pub fn plan_placements(
    state: &MetaState,
    first_index: u32,
    shard_count: u32,
    replication_factor: u32,
) -> Result<Vec<PlacementSpec>, PlacementError> {
    if shard_count == 0 || shard_count > MAX_SHARD_COUNT {
        return Err(PlacementError::ShardCount(shard_count));
    }
    let rf = replication_factor.max(1);
    let workers = placeable_workers(state);
    if workers.len() < rf as usize {
        return Err(PlacementError::NotEnoughWorkers {
            wanted: rf,
            available: workers.len(),
        });
    }
    let existing = state.placement_counts();
    let mut load: BTreeMap<NodeId, u64> = workers
        .iter()
        .map(|w| (*w, existing.get(w).copied().unwrap_or(0)))
        .collect();
    let group_of = |id: &NodeId| state.nodes.get(id).map(|n| n.group.as_str()).unwrap_or("");
    let mut out = Vec::with_capacity((shard_count * rf) as usize);
    for index in first_index..first_index + shard_count {
        let mut chosen: BTreeSet<NodeId> = BTreeSet::new();
        let mut groups: BTreeSet<&str> = BTreeSet::new();
        for _ in 0..rf {
            let pick = workers
                .iter()
                .filter(|w| !chosen.contains(w))
                .min_by_key(|w| {
                    let new_group = !groups.contains(group_of(w));
                    (!new_group, load.get(w).copied().unwrap_or(0), **w)
                })
                .copied();
            let Some(node_id) = pick else {
                break;
            };
            chosen.insert(node_id);
            groups.insert(group_of(&node_id));
            *load.entry(node_id).or_insert(0) += 1;
            out.push(PlacementSpec {
                shard_index: index,
                node_id,
            });
        }
    }
    Ok(out)
}

/// The placements a new table joining co-location group `colocation_id`
/// must have: shard `i` on the same nodes as shard `i` of the group's tables.
pub fn colocated_placements(
    state: &MetaState,
    colocation_id: ColocationId,
) -> Result<Vec<PlacementSpec>, PlacementError> {
    let table = state
        .first_table_in_colocation(colocation_id)
        .ok_or(PlacementError::NoColocation(colocation_id))?;
    let mut out = Vec::new();
    for (shard_id, shard) in state.shards_of(table) {
        for (_, p) in state.placements_of(shard_id) {
            out.push(PlacementSpec {
                shard_index: shard.index,
                node_id: p.node_id,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_shards_tile_the_space_and_invert() {
        for count in [1u32, 2, 3, 7, 32, 1000] {
            let shards = plan_hash_shards(count).unwrap();
            assert_eq!(shards.len(), count as usize);
            assert_eq!(shards[0].min, i64::from(i32::MIN));
            assert_eq!(shards[shards.len() - 1].max, i64::from(i32::MAX));
            for w in shards.windows(2) {
                assert_eq!(w[1].min, w[0].max + 1);
            }
            for sh in &shards {
                for h in [sh.min, sh.max, (sh.min + sh.max) / 2] {
                    let h = i32::try_from(h).unwrap();
                    assert_eq!(
                        shard_index_for_hash(h, count),
                        sh.index,
                        "count {count} hash {h}"
                    );
                }
            }
        }
        assert_eq!(shard_index_for_hash(i32::MIN, 4), 0);
        assert_eq!(shard_index_for_hash(-1, 4), 1);
        assert_eq!(shard_index_for_hash(0, 4), 2);
        assert_eq!(shard_index_for_hash(i32::MAX, 4), 3);
        assert!(plan_hash_shards(0).is_err());
    }
}
