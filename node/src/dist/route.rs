//! Where a distributed table's rows live, and which shards a row or a
//! filter reaches.
//!
//! Step in the flow: [`TableLayout::of`] reads one table's shards and active
//! placements out of a metadata snapshot. Writes call [`TableLayout::route`]
//! to split a batch by shard (hash of the distribution column; every row to
//! the one shard of a reference table). Scans call
//! [`TableLayout::prune`] with the query's filters: `col = v` and
//! `col IN (...)` on the distribution column keep only the shards those
//! values hash to (the router path); anything else keeps every shard.
//! Range tables route and prune by value ([`super::range`]).

use std::collections::BTreeSet;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::hash::hash_array;
use crate::meta::placement::shard_index_for_hash;
use crate::meta::state::{
    MetaState, NodeId, PlacementState, ShardId, TableId, TableInfo, TableKind,
};
use crate::sql::SqlError;

/// One shard and the nodes holding an active copy.
#[derive(Debug, Clone)]
pub struct ShardRoute {
    pub shard_id: ShardId,
    pub index: u32,
    /// The shard's `pg_dist_shard` bounds (see [`crate::meta::state::ShardInfo`]).
    pub min: i64,
    pub max: i64,
    /// `(node, host:port)` of every active placement.
    pub placements: Vec<(NodeId, String)>,
}

/// A distributed table as the executor needs it.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub table_id: TableId,
    pub info: TableInfo,
    /// In shard index order.
    pub shards: Vec<ShardRoute>,
}

impl TableLayout {
    /// The layout of table `name` (`None` when it is not distributed), with
    /// each shard's copies on `unhealthy` nodes listed last, so reads go to a
    /// healthy copy when there is one.
    pub fn of_with(
        state: &MetaState,
        name: &str,
        unhealthy: &BTreeSet<NodeId>,
    ) -> Option<TableLayout> {
        let table_id = state.table_by_name(name)?;
        let info = state.tables.get(&table_id)?.clone();
        let mut shards: Vec<ShardRoute> = state
            .shards_of(table_id)
            .into_iter()
            .map(|(shard_id, s)| ShardRoute {
                shard_id,
                index: s.index,
                min: s.min,
                max: s.max,
                placements: state
                    .placements_of(shard_id)
                    .into_iter()
                    .filter(|(_, p)| p.state == PlacementState::Active)
                    .filter_map(|(_, p)| {
                        let n = state.nodes.get(&p.node_id)?;
                        Some((p.node_id, format!("{}:{}", n.host, n.port)))
                    })
                    .collect(),
            })
            .collect();
        shards.sort_by_key(|s| s.index);
        if !unhealthy.is_empty() {
            for s in shards.iter_mut() {
                s.placements.sort_by_key(|(n, _)| unhealthy.contains(n));
            }
        }
        Some(TableLayout {
            table_id,
            info,
            shards,
        })
    }

    /// The distribution column, if the table has one.
    pub fn column(&self) -> Option<&str> {
        match &self.info.kind {
            TableKind::Hash { column, .. } | TableKind::Range { column, .. } => Some(column),
            TableKind::Reference => None,
        }
    }

    pub fn is_reference(&self) -> bool {
        matches!(self.info.kind, TableKind::Reference)
    }

    /// A shard's placement to read from, or an error naming the shard.
    pub fn read_placement(&self, shard: &ShardRoute) -> Result<(NodeId, String), SqlError> {
        shard.placements.first().cloned().ok_or_else(|| {
            SqlError::new(
                "XX000",
                format!(
                    "shard {} of table {} has no active placement",
                    shard.shard_id, self.info.name
                ),
            )
        })
    }

    /// Splits `batch` by shard: `(position in self.shards, rows)`.
    /// `column` is the position of the distribution column in the batch.
    pub fn route(
        &self,
        batch: &RecordBatch,
        column: Option<usize>,
    ) -> Result<Vec<(usize, RecordBatch)>, SqlError> {
        let count = self.shards.len() as u32;
        let (Some(col), false) = (column, self.is_reference()) else {
            return Ok(vec![(0, batch.clone())]);
        };
        let mut per_shard: Vec<Vec<u32>> = vec![Vec::new(); self.shards.len()];
        if let TableKind::Range { .. } = self.info.kind {
            let keys = super::range::keys(batch.column(col))?;
            for (row, pos) in super::range::locate(self, &keys)?.into_iter().enumerate() {
                per_shard[pos].push(row as u32);
            }
        } else {
            let hashes =
                hash_array(batch.column(col)).map_err(|e| SqlError::new("XX000", e.to_string()))?;
            for (row, h) in hashes.into_iter().enumerate() {
                let idx = shard_index_for_hash(h, count) as usize;
                per_shard[idx.min(self.shards.len() - 1)].push(row as u32);
            }
        }
        let mut out = Vec::new();
        for (i, rows) in per_shard.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let taken = take_record_batch(batch, &UInt32Array::from(rows))
                .map_err(|e| SqlError::new("XX000", e.to_string()))?;
            out.push((i, taken));
        }
        Ok(out)
    }

    /// The positions (in `self.shards`) a scan with `filters` must read.
    /// `column_type` is the distribution column's Arrow type.
    pub fn prune(&self, filters: &[Expr], column_type: Option<&DataType>) -> Vec<usize> {
        let all: Vec<usize> = (0..self.shards.len()).collect();
        if let (TableKind::Range { .. }, Some(ty)) = (&self.info.kind, column_type) {
            return super::range::prune(self, filters, ty);
        }
        let (Some(column), Some(ty), TableKind::Hash { .. }) =
            (self.column(), column_type, &self.info.kind)
        else {
            return all;
        };
        let mut keep: Option<BTreeSet<usize>> = None;
        for f in filters {
            let Some(values) = key_values(f, column) else {
                continue;
            };
            let Some(hit) = self.shards_for(&values, ty) else {
                continue;
            };
            keep = Some(match keep {
                None => hit,
                Some(k) => k.intersection(&hit).copied().collect(),
            });
        }
        keep.map_or(all, |k| k.into_iter().collect())
    }

    fn shards_for(&self, values: &[ScalarValue], ty: &DataType) -> Option<BTreeSet<usize>> {
        let arr = ScalarValue::iter_to_array(values.iter().cloned()).ok()?;
        let arr: ArrayRef = cast(&arr, ty).ok()?;
        if arr.null_count() > 0 {
            // `col = NULL` matches nothing, but leave that to the filter.
            return None;
        }
        let count = self.shards.len() as u32;
        let hashes = hash_array(&arr).ok()?;
        Some(
            hashes
                .into_iter()
                .map(|h| shard_index_for_hash(h, count) as usize)
                .collect(),
        )
    }
}

fn is_column(e: &Expr, name: &str) -> bool {
    match e {
        Expr::Column(c) => c.name == name,
        Expr::Cast(c) => is_column(&c.expr, name),
        _ => false,
    }
}

/// The value of a literal, through casts.
pub(super) fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
        _ => None,
    }
}

/// The values `f` pins the column `name` to: `name = v`, `v = name`,
/// `name IN (v, ...)`.
fn key_values(f: &Expr, name: &str) -> Option<Vec<ScalarValue>> {
    match f {
        // DataFusion writes a short IN list as ORs of equalities.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut v = key_values(left, name)?;
            v.extend(key_values(right, name)?);
            Some(v)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_column(left, name) {
                literal(right).map(|v| vec![v])
            } else if is_column(right, name) {
                literal(left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::InList(l) if !l.negated && is_column(&l.expr, name) => {
            l.list.iter().map(literal).collect()
        }
        _ => None,
    }
}
