//! `pg_dist_partition`, `pg_dist_shard`, `pg_dist_placement` and
//! `pg_dist_colocation`: the Raft catalogue as read-only SQL tables.
//!
//! Step in the flow: registered on a coordinator next to `pg_dist_node`
//! ([`crate::meta::sql`]). Each scan builds its rows from the current
//! metadata snapshot, so the tables are always as fresh as the state
//! machine, and can be joined with each other and with user tables.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::coord::Cluster;
use crate::meta::state::{MetaState, PlacementState, TableKind};
use crate::sql::catalog::QuiverSchema;

type Build = fn(&MetaState) -> Vec<ArrayRef>;

/// One catalogue table.
struct MetaTable {
    cluster: Arc<Cluster>,
    schema: SchemaRef,
    build: Build,
}

impl std::fmt::Debug for MetaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaTable")
    }
}

#[async_trait]
impl TableProvider for MetaTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = self.cluster.snapshot();
        let batch = RecordBatch::try_new(self.schema.clone(), (self.build)(&state))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn field(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

fn i64s(v: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(
        v.into_iter()
            .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
            .collect::<Int64Array>(),
    )
}

fn partitions(s: &MetaState) -> Vec<ArrayRef> {
    let t: Vec<_> = s.tables.values().collect();
    let method = |k: &TableKind| match k {
        TableKind::Hash { .. } => "h",
        TableKind::Range { .. } => "r",
        TableKind::Reference => "n",
    };
    vec![
        Arc::new(
            t.iter()
                .map(|t| Some(t.name.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            t.iter()
                .map(|t| Some(method(&t.kind)))
                .collect::<StringArray>(),
        ),
        Arc::new(
            t.iter()
                .map(|t| match &t.kind {
                    TableKind::Hash { column, .. } | TableKind::Range { column, .. } => {
                        Some(column.as_str())
                    }
                    TableKind::Reference => None,
                })
                .collect::<StringArray>(),
        ),
        i64s(t.iter().map(|t| match t.kind {
            TableKind::Hash { colocation_id, .. } => colocation_id,
            _ => 0,
        })),
        Arc::new(
            t.iter()
                .map(|t| {
                    Some(if matches!(t.kind, TableKind::Reference) {
                        "t"
                    } else {
                        "s"
                    })
                })
                .collect::<StringArray>(),
        ),
    ]
}

fn shards(s: &MetaState) -> Vec<ArrayRef> {
    let rows: Vec<_> = s
        .shards
        .iter()
        .filter_map(|(id, sh)| s.tables.get(&sh.table_id).map(|t| (id, sh, t)))
        .collect();
    // Hash bounds are hash values; range bounds are values of the column.
    let bound = |t: &crate::meta::state::TableInfo, v: i64| match &t.kind {
        TableKind::Reference => None,
        TableKind::Hash { .. } => Some(v.to_string()),
        TableKind::Range { column, .. } => Some(
            t.columns
                .iter()
                .find(|c| &c.name == column)
                .and_then(|c| c.data_type.parse().ok())
                .map_or_else(|| v.to_string(), |ty| super::range::render(v, &ty)),
        ),
    };
    vec![
        Arc::new(
            rows.iter()
                .map(|(_, _, t)| Some(t.name.as_str()))
                .collect::<StringArray>(),
        ),
        i64s(rows.iter().map(|(id, _, _)| **id)),
        Arc::new(rows.iter().map(|_| Some("t")).collect::<StringArray>()),
        Arc::new(
            rows.iter()
                .map(|(_, sh, t)| bound(t, sh.min))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|(_, sh, t)| bound(t, sh.max))
                .collect::<StringArray>(),
        ),
    ]
}

fn placements(s: &MetaState) -> Vec<ArrayRef> {
    let p: Vec<_> = s.placements.iter().collect();
    vec![
        i64s(p.iter().map(|(id, _)| **id)),
        i64s(p.iter().map(|(_, p)| p.shard_id)),
        Arc::new(
            p.iter()
                .map(|(_, p)| {
                    Some(match p.state {
                        PlacementState::Active => 1,
                        PlacementState::Inactive => 3,
                        PlacementState::ToDelete => 4,
                    })
                })
                .collect::<Int32Array>(),
        ),
        i64s(p.iter().map(|(_, p)| p.length)),
        i64s(p.iter().map(|(_, p)| p.node_id)),
    ]
}

fn colocations(s: &MetaState) -> Vec<ArrayRef> {
    let c: Vec<_> = s.colocations.iter().collect();
    vec![
        i64s(c.iter().map(|(id, _)| **id)),
        Arc::new(
            c.iter()
                .map(|(_, g)| Some(g.shard_count as i32))
                .collect::<Int32Array>(),
        ),
        Arc::new(
            c.iter()
                .map(|(_, g)| Some(g.replication_factor as i32))
                .collect::<Int32Array>(),
        ),
        Arc::new(
            c.iter()
                .map(|(_, g)| Some(g.column_type.as_str()))
                .collect::<StringArray>(),
        ),
    ]
}

/// Registers the four tables in `schema`.
pub fn install(schema: &QuiverSchema, cluster: &Arc<Cluster>) {
    use DataType::{Int32, Int64, Utf8};
    let tables: [(&str, Vec<Field>, Build); 4] = [
        (
            "pg_dist_partition",
            vec![
                field("logicalrelid", Utf8, false),
                field("partmethod", Utf8, false),
                field("partkey", Utf8, true),
                field("colocationid", Int64, false),
                field("repmodel", Utf8, false),
            ],
            partitions,
        ),
        (
            "pg_dist_shard",
            vec![
                field("logicalrelid", Utf8, false),
                field("shardid", Int64, false),
                field("shardstorage", Utf8, false),
                field("shardminvalue", Utf8, true),
                field("shardmaxvalue", Utf8, true),
            ],
            shards,
        ),
        (
            "pg_dist_placement",
            vec![
                field("placementid", Int64, false),
                field("shardid", Int64, false),
                field("shardstate", Int32, false),
                field("shardlength", Int64, false),
                field("nodeid", Int64, false),
            ],
            placements,
        ),
        (
            "pg_dist_colocation",
            vec![
                field("colocationid", Int64, false),
                field("shardcount", Int32, false),
                field("replicationfactor", Int32, false),
                field("distributioncolumntype", Utf8, false),
            ],
            colocations,
        ),
    ];
    for (name, fields, build) in tables {
        schema.add_external(
            name,
            Arc::new(MetaTable {
                cluster: cluster.clone(),
                schema: Arc::new(Schema::new(fields)),
                build,
            }),
        );
    }
}
