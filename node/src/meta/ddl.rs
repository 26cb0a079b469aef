//! Table DDL handlers of [`super::apply`]: creating and dropping tables,
//! adding and dropping range shards, altering a schema.
//!
//! Step in the flow: called by `command::apply_checked` for the table
//! commands. Like every handler, each one checks everything first and writes
//! after its last check, so a [`MetaResponse::Rejected`] leaves no trace.
//! The shard and placement *plans* come from the leader
//! ([`super::placement`]); here they are only validated and recorded.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{
    node_placeable, table, Applied, Distribution, MetaResponse, NewTable, PlacementSpec, ShardSpec,
};
use super::state::{
    ColocationGroup, ColocationId, ColumnDef, MetaState, NodeId, PlacementId, ShardId, ShardInfo,
    TableId, TableInfo, TableKind,
};

fn check_new_table(s: &MetaState, table: &NewTable, column: Option<&str>) -> Result<(), String> {
    if table.name.is_empty() {
        return Err("a table needs a name".into());
    }
    if s.table_by_name(&table.name).is_some() {
        return Err(format!("table {} already exists", table.name));
    }
    check_columns(&table.columns, column)
}

fn check_columns(columns: &[ColumnDef], dist_column: Option<&str>) -> Result<(), String> {
    if columns.is_empty() {
        return Err("a table needs at least one column".into());
    }
    let mut seen = BTreeSet::new();
    for c in columns {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("column {} appears twice", c.name));
        }
    }
    if let Some(col) = dist_column {
        if !seen.contains(col) {
            return Err(format!("distribution column {col} is not a column"));
        }
    }
    Ok(())
}

/// Checks proposed shards: indexes `first..first+n` in order, and ranges
/// that are ordered and do not overlap. Hash shards must tile the hash space.
fn check_shards(shards: &[ShardSpec], first_index: u32, hash: bool) -> Result<(), String> {
    if shards.is_empty() {
        return Err("no shards".into());
    }
    for (i, sh) in shards.iter().enumerate() {
        if sh.index != first_index + i as u32 {
            return Err(format!("shard index {} out of order", sh.index));
        }
        if hash {
            if sh.min > sh.max {
                return Err(format!("shard {} has an empty hash range", sh.index));
            }
        } else if sh.min >= sh.max {
            return Err(format!("shard {} has an empty value range", sh.index));
        }
    }
    for w in shards.windows(2) {
        let ok = if hash {
            w[1].min == w[0].max + 1
        } else {
            w[1].min >= w[0].max
        };
        if !ok {
            return Err(format!(
                "shards {} and {} overlap or leave a gap",
                w[0].index, w[1].index
            ));
        }
    }
    if hash {
        let (lo, hi) = super::placement::hash_space();
        if shards[0].min != lo || shards[shards.len() - 1].max != hi {
            return Err("hash shards must cover the whole hash space".into());
        }
    }
    Ok(())
}

/// Checks proposed placements against `shard_count` shards numbered from
/// `first_index`: nodes placeable, no shard twice on a node, every shard
/// placed at least `min_copies` times.
fn check_placements(
    s: &MetaState,
    placements: &[PlacementSpec],
    first_index: u32,
    shard_count: usize,
    min_copies: usize,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut copies = vec![0usize; shard_count];
    for p in placements {
        let slot = p
            .shard_index
            .checked_sub(first_index)
            .map(|i| i as usize)
            .filter(|i| *i < shard_count)
            .ok_or_else(|| format!("placement for unknown shard index {}", p.shard_index))?;
        node_placeable(s, p.node_id)?;
        if !seen.insert((p.shard_index, p.node_id)) {
            return Err(format!(
                "shard {} placed twice on node {}",
                p.shard_index, p.node_id
            ));
        }
        copies[slot] += 1;
    }
    if let Some(i) = copies.iter().position(|c| *c < min_copies.max(1)) {
        return Err(format!(
            "shard {} has {} placement(s), needs {}",
            first_index as usize + i,
            copies[i],
            min_copies.max(1)
        ));
    }
    Ok(())
}

/// Inserts shards and placements (already validated) for `table_id`.
fn insert_shards(
    s: &mut MetaState,
    table_id: TableId,
    shards: &[ShardSpec],
    placements: &[PlacementSpec],
) -> (Vec<ShardId>, Vec<PlacementId>) {
    let mut by_index = BTreeMap::new();
    let mut shard_ids = Vec::with_capacity(shards.len());
    for sh in shards {
        let id = s.next_shard_id;
        s.next_shard_id += 1;
        s.shards.insert(
            id,
            ShardInfo {
                table_id,
                index: sh.index,
                min: sh.min,
                max: sh.max,
                epoch: 0,
            },
        );
        by_index.insert(sh.index, id);
        shard_ids.push(id);
    }
    let mut placement_ids = Vec::with_capacity(placements.len());
    for p in placements {
        let Some(shard_id) = by_index.get(&p.shard_index) else {
            continue;
        };
        placement_ids.push(s.add_placement(*shard_id, p.node_id));
    }
    (shard_ids, placement_ids)
}

/// The (shard index -> nodes) layout of a co-location group's first table.
fn colocation_layout(
    s: &MetaState,
    colocation_id: ColocationId,
) -> BTreeMap<u32, BTreeSet<NodeId>> {
    let mut layout = BTreeMap::new();
    if let Some(t) = s.first_table_in_colocation(colocation_id) {
        for (shard_id, sh) in s.shards_of(t) {
            let nodes = s
                .placements_of(shard_id)
                .into_iter()
                .map(|(_, p)| p.node_id)
                .collect();
            layout.insert(sh.index, nodes);
        }
    }
    layout
}

pub(super) fn create_distributed(
    s: &mut MetaState,
    table: &NewTable,
    distribution: &Distribution,
    shards: &[ShardSpec],
    placements: &[PlacementSpec],
) -> Applied {
    let (kind, new_group) = match distribution {
        Distribution::Hash {
            column,
            colocate_with,
            replication_factor,
        } => {
            check_new_table(s, table, Some(column))?;
            check_shards(shards, 0, true)?;
            match colocate_with {
                Some(c) => {
                    let group = s
                        .colocations
                        .get(c)
                        .ok_or_else(|| format!("no co-location group {c}"))?;
                    if group.shard_count as usize != shards.len() {
                        return Err(format!(
                            "co-location group {c} has {} shards, not {}",
                            group.shard_count,
                            shards.len()
                        ));
                    }
                    let mut proposed: BTreeMap<u32, BTreeSet<NodeId>> = BTreeMap::new();
                    for p in placements {
                        proposed.entry(p.shard_index).or_default().insert(p.node_id);
                    }
                    let layout = colocation_layout(s, *c);
                    if !layout.is_empty() && layout != proposed {
                        return Err(format!(
                            "placements differ from co-location group {c}'s layout"
                        ));
                    }
                    check_placements(s, placements, 0, shards.len(), 1)?;
                    (
                        TableKind::Hash {
                            column: column.clone(),
                            colocation_id: *c,
                        },
                        None,
                    )
                }
                None => {
                    let rf = (*replication_factor).max(1);
                    check_placements(s, placements, 0, shards.len(), rf as usize)?;
                    let data_type = table
                        .columns
                        .iter()
                        .find(|col| &col.name == column)
                        .map(|col| col.data_type.clone())
                        .unwrap_or_default();
                    let id = s.next_colocation_id;
                    let group = ColocationGroup {
                        shard_count: shards.len() as u32,
                        replication_factor: rf,
                        column_type: data_type,
                    };
                    (
                        TableKind::Hash {
                            column: column.clone(),
                            colocation_id: id,
                        },
                        Some((id, group)),
                    )
                }
            }
        }
        Distribution::Range {
            column,
            interval,
            replication_factor,
        } => {
            check_new_table(s, table, Some(column))?;
            // A range table may start empty: shards come as rows arrive.
            if !shards.is_empty() {
                check_shards(shards, 0, false)?;
                check_placements(s, placements, 0, shards.len(), 1)?;
            } else if !placements.is_empty() {
                return Err("placements without shards".into());
            }
            (
                TableKind::Range {
                    column: column.clone(),
                    interval: *interval,
                    replication_factor: (*replication_factor).max(1),
                },
                None,
            )
        }
    };
    // All checks passed: from here on nothing fails.
    if let Some((id, group)) = new_group {
        s.next_colocation_id += 1;
        s.colocations.insert(id, group);
    }
    let table_id = s.next_table_id;
    s.next_table_id += 1;
    s.tables.insert(
        table_id,
        TableInfo {
            name: table.name.clone(),
            columns: table.columns.clone(),
            kind,
            schema_version: 1,
        },
    );
    let (shard_ids, placement_ids) = insert_shards(s, table_id, shards, placements);
    Ok(MetaResponse::TableCreated {
        table_id,
        shard_ids,
        placement_ids,
    })
}

pub(super) fn create_reference(s: &mut MetaState, table: &NewTable, nodes: &[NodeId]) -> Applied {
    check_new_table(s, table, None)?;
    let placements: Vec<PlacementSpec> = nodes
        .iter()
        .map(|n| PlacementSpec {
            shard_index: 0,
            node_id: *n,
        })
        .collect();
    check_placements(s, &placements, 0, 1, 1)?;
    let table_id = s.next_table_id;
    s.next_table_id += 1;
    s.tables.insert(
        table_id,
        TableInfo {
            name: table.name.clone(),
            columns: table.columns.clone(),
            kind: TableKind::Reference,
            schema_version: 1,
        },
    );
    let shard = ShardSpec {
        index: 0,
        min: i64::MIN,
        max: i64::MAX,
    };
    let (shard_ids, placement_ids) = insert_shards(s, table_id, &[shard], &placements);
    Ok(MetaResponse::TableCreated {
        table_id,
        shard_ids,
        placement_ids,
    })
}

pub(super) fn add_range_shards(
    s: &mut MetaState,
    table_id: TableId,
    shards: &[ShardSpec],
    placements: &[PlacementSpec],
) -> Applied {
    if !matches!(table(s, table_id)?.kind, TableKind::Range { .. }) {
        return Err(format!("table {table_id} is not range-distributed"));
    }
    let existing = s.shards_of(table_id);
    let first_index = existing.last().map(|(_, sh)| sh.index + 1).unwrap_or(0);
    check_shards(shards, first_index, false)?;
    for (_, old) in &existing {
        for new in shards {
            if new.min < old.max && old.min < new.max {
                return Err(format!(
                    "new shard {} overlaps shard {} of table {table_id}",
                    new.index, old.index
                ));
            }
        }
    }
    check_placements(s, placements, first_index, shards.len(), 1)?;
    let (shard_ids, placement_ids) = insert_shards(s, table_id, shards, placements);
    Ok(MetaResponse::ShardsAdded {
        shard_ids,
        placement_ids,
    })
}

pub(super) fn drop_shards(s: &mut MetaState, table_id: TableId, shard_ids: &[ShardId]) -> Applied {
    if !matches!(table(s, table_id)?.kind, TableKind::Range { .. }) {
        return Err(format!(
            "table {table_id} is not range-distributed; drop the table instead"
        ));
    }
    for id in shard_ids {
        match s.shards.get(id) {
            Some(sh) if sh.table_id == table_id => {}
            _ => return Err(format!("table {table_id} has no shard {id}")),
        }
    }
    let drop: BTreeSet<ShardId> = shard_ids.iter().copied().collect();
    s.shards.retain(|id, _| !drop.contains(id));
    s.placements.retain(|_, p| !drop.contains(&p.shard_id));
    Ok(MetaResponse::Ok)
}

pub(super) fn alter_table(
    s: &mut MetaState,
    table_id: TableId,
    columns: &[ColumnDef],
    expected: u64,
) -> Applied {
    let t = table(s, table_id)?;
    if t.schema_version != expected {
        return Err(format!(
            "table {table_id} is at schema version {}, not {expected}",
            t.schema_version
        ));
    }
    let dist_column = match &t.kind {
        TableKind::Hash { column, .. } | TableKind::Range { column, .. } => Some(column.as_str()),
        TableKind::Reference => None,
    };
    check_columns(columns, dist_column)?;
    let t = s
        .tables
        .get_mut(&table_id)
        .ok_or_else(|| format!("no table {table_id}"))?;
    t.columns = columns.to_vec();
    t.schema_version += 1;
    Ok(MetaResponse::TableAltered {
        schema_version: t.schema_version,
    })
}

pub(super) fn drop_table(s: &mut MetaState, table_id: TableId) -> Applied {
    let t = s
        .tables
        .remove(&table_id)
        .ok_or_else(|| format!("no table {table_id}"))?;
    let shards: BTreeSet<ShardId> = s
        .shards
        .iter()
        .filter(|(_, sh)| sh.table_id == table_id)
        .map(|(id, _)| *id)
        .collect();
    s.shards.retain(|id, _| !shards.contains(id));
    s.placements.retain(|_, p| !shards.contains(&p.shard_id));
    if let TableKind::Hash { colocation_id, .. } = t.kind {
        if s.first_table_in_colocation(colocation_id).is_none() {
            s.colocations.remove(&colocation_id);
        }
    }
    Ok(MetaResponse::Ok)
}
