//! `pg_dist_partition`, `pg_dist_shard`, `pg_dist_placement`,
//! `pg_dist_colocation`, `pg_dist_cleanup` and `quiver_shard_moves`: the
//! Raft catalogue as read-only SQL tables.
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

fn strings<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

/// Shard moves, running and ended (ADR 0013).
fn moves(s: &MetaState) -> Vec<ArrayRef> {
    use crate::meta::moves::MoveState;
    let m: Vec<_> = s.moves.iter().collect();
    let state = |st: &MoveState| match st {
        MoveState::Planned => "planned",
        MoveState::Copying => "copying",
        MoveState::CatchingUp => "catching_up",
        MoveState::Fenced { .. } => "fenced",
        MoveState::Switched => "done",
        MoveState::Failed(_) => "failed",
        MoveState::Cancelled => "cancelled",
    };
    let shards: Vec<String> = m
        .iter()
        .map(|(_, j)| {
            j.shards
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let first: Vec<u64> = m
        .iter()
        .map(|(_, j)| j.shards.first().copied().unwrap_or(0))
        .collect();
    vec![
        strings(m.iter().map(|(id, _)| Some(id.as_str()))),
        strings(
            m.iter()
                .map(|(_, j)| Some(if j.copy { "copy" } else { "move" })),
        ),
        i64s(first),
        strings(shards.iter().map(|s| Some(s.as_str()))),
        i64s(m.iter().map(|(_, j)| j.from)),
        i64s(m.iter().map(|(_, j)| j.to)),
        strings(m.iter().map(|(_, j)| Some(state(&j.state)))),
        strings(m.iter().map(|(_, j)| match &j.state {
            MoveState::Failed(why) => Some(why.as_str()),
            _ => None,
        })),
        i64s(m.iter().map(|(_, j)| j.bytes_copied)),
        i64s(m.iter().map(|(_, j)| j.bytes_total)),
        i64s(m.iter().map(|(_, j)| j.started_ms)),
        Arc::new(
            m.iter()
                .map(|(_, j)| j.finished_ms.map(|f| i64::try_from(f).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        ),
    ]
}

/// Copies left to drop (Citus's `pg_dist_cleanup`).
fn cleanups(s: &MetaState) -> Vec<ArrayRef> {
    use crate::meta::moves::CleanupPolicy;
    let c: Vec<_> = s.cleanups.iter().collect();
    let shards: Vec<String> = c
        .iter()
        .map(|(_, r)| {
            r.shards
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    vec![
        i64s(c.iter().map(|(id, _)| **id)),
        strings(c.iter().map(|(_, r)| Some(r.job.as_str()))),
        strings(shards.iter().map(|s| Some(s.as_str()))),
        i64s(c.iter().map(|(_, r)| r.node)),
        strings(c.iter().map(|(_, r)| {
            Some(match r.policy {
                CleanupPolicy::OnFailure => "on_failure",
                CleanupPolicy::DeferredOnSuccess => "deferred_on_success",
            })
        })),
    ]
}

/// `get_rebalance_progress()`: each move of the current (or last)
/// rebalance, and every move still running outside one.
fn rebalance_progress(s: &MetaState) -> Vec<ArrayRef> {
    use crate::meta::moves::MoveState;
    struct Row<'a> {
        index: usize,
        rebalance: &'a str,
        shard: u64,
        from: u64,
        to: u64,
        job: Option<&'a crate::meta::moves::MoveJob>,
    }
    let mut rows: Vec<Row> = Vec::new();
    // Moves before `moves_done` whose job was forgotten ended as planned.
    let mut done_before = 0;
    if let Some(r) = &s.rebalance {
        done_before = r.moves_done as usize;
        for (i, m) in r.moves.iter().enumerate() {
            let job = s.moves.get(&format!("{}-{i}", r.id));
            let shard = s
                .placements
                .get(&m.placement_id)
                .map(|p| p.shard_id)
                .or_else(|| job.and_then(|j| j.shards.first().copied()))
                .unwrap_or(0);
            rows.push(Row {
                index: i,
                rebalance: &r.id,
                shard,
                from: m.from,
                to: m.to,
                job,
            });
        }
    }
    for (id, j) in &s.moves {
        let in_rebalance = s
            .rebalance
            .as_ref()
            .is_some_and(|r| id.starts_with(&format!("{}-", r.id)));
        if !in_rebalance && !j.state.is_terminal() {
            rows.push(Row {
                index: usize::MAX,
                rebalance: "",
                shard: j.shards.first().copied().unwrap_or(0),
                from: j.from,
                to: j.to,
                job: Some(j),
            });
        }
    }
    let table = |shard: u64| {
        s.shards
            .get(&shard)
            .and_then(|sh| s.tables.get(&sh.table_id))
            .map(|t| t.name.as_str())
    };
    let host = |n: u64| s.nodes.get(&n).map(|n| n.host.as_str());
    let port = |n: u64| s.nodes.get(&n).map(|n| i32::from(n.port));
    let (state, progress): (Vec<&str>, Vec<i32>) = rows
        .iter()
        .map(|r| match r.job.map(|j| &j.state) {
            None if r.index < done_before => ("done", 2),
            None => {
                let cancelled = s.rebalance.as_ref().is_some_and(|rb| {
                    matches!(rb.state, crate::meta::state::RebalanceState::Cancelled)
                });
                (if cancelled { "cancelled" } else { "waiting" }, 0)
            }
            Some(MoveState::Switched) => ("done", 2),
            Some(MoveState::Failed(_)) => ("failed", 3),
            Some(MoveState::Cancelled) => ("cancelled", 3),
            Some(MoveState::Fenced { .. }) => ("switching", 1),
            Some(MoveState::CatchingUp) => ("catching_up", 1),
            Some(MoveState::Copying) => ("copying", 1),
            Some(MoveState::Planned) => ("planned", 1),
        })
        .unzip();
    vec![
        strings(rows.iter().map(|r| Some(r.rebalance))),
        strings(rows.iter().map(|r| table(r.shard))),
        i64s(rows.iter().map(|r| r.shard)),
        strings(rows.iter().map(|r| host(r.from))),
        Arc::new(rows.iter().map(|r| port(r.from)).collect::<Int32Array>()),
        strings(rows.iter().map(|r| host(r.to))),
        Arc::new(rows.iter().map(|r| port(r.to)).collect::<Int32Array>()),
        Arc::new(progress.into_iter().map(Some).collect::<Int32Array>()),
        strings(state.into_iter().map(Some)),
        i64s(rows.iter().map(|r| r.job.map_or(0, |j| j.bytes_copied))),
        i64s(rows.iter().map(|r| r.job.map_or(0, |j| j.bytes_total))),
        Arc::new(
            rows.iter()
                .map(|r| r.job.and_then(|j| i64::try_from(j.started_ms).ok()))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| {
                    r.job
                        .and_then(|j| j.finished_ms)
                        .and_then(|f| i64::try_from(f).ok())
                })
                .collect::<Int64Array>(),
        ),
    ]
}

/// `get_rebalance_progress()` as a table function.
#[derive(Debug)]
struct ProgressFn {
    cluster: Arc<Cluster>,
}

impl datafusion::catalog::TableFunctionImpl for ProgressFn {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        use DataType::{Int32, Int64, Utf8};
        if !args.is_empty() {
            return Err(datafusion::error::DataFusionError::Plan(
                "get_rebalance_progress() takes no arguments".into(),
            ));
        }
        Ok(Arc::new(MetaTable {
            cluster: self.cluster.clone(),
            schema: Arc::new(Schema::new(vec![
                field("rebalance_id", Utf8, false),
                field("table_name", Utf8, true),
                field("shardid", Int64, false),
                field("sourcename", Utf8, true),
                field("sourceport", Int32, true),
                field("targetname", Utf8, true),
                field("targetport", Int32, true),
                field("progress", Int32, false),
                field("state", Utf8, false),
                field("bytes_copied", Int64, false),
                field("bytes_total", Int64, false),
                field("started_ms", Int64, true),
                field("finished_ms", Int64, true),
            ])),
            build: rebalance_progress,
        }))
    }
}

/// Registers `get_rebalance_progress()`.
pub fn install_functions(ctx: &datafusion::prelude::SessionContext, cluster: &Arc<Cluster>) {
    ctx.register_udtf(
        "get_rebalance_progress",
        Arc::new(ProgressFn {
            cluster: cluster.clone(),
        }),
    );
}

/// Registers the catalogue tables in `schema`.
pub fn install(schema: &QuiverSchema, cluster: &Arc<Cluster>) {
    use DataType::{Int32, Int64, Utf8};
    let tables: [(&str, Vec<Field>, Build); 6] = [
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
        (
            "quiver_shard_moves",
            vec![
                field("move_id", Utf8, false),
                field("kind", Utf8, false),
                field("shardid", Int64, false),
                field("shards", Utf8, false),
                field("source_nodeid", Int64, false),
                field("target_nodeid", Int64, false),
                field("state", Utf8, false),
                field("error", Utf8, true),
                field("bytes_copied", Int64, false),
                field("bytes_total", Int64, false),
                field("started_ms", Int64, false),
                field("finished_ms", Int64, true),
            ],
            moves,
        ),
        (
            "pg_dist_cleanup",
            vec![
                field("record_id", Int64, false),
                field("operation_id", Utf8, false),
                field("shards", Utf8, false),
                field("nodeid", Int64, false),
                field("policy_type", Utf8, false),
            ],
            cleanups,
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
