//! `ShardScanExec`: the leaf of a plan over a distributed table.
//!
//! Step in the flow: [`super::table::DistributedTable::scan`] prunes the
//! shards and writes one SQL fragment per remaining shard (projection,
//! pushed filters, limit). Each partition of this plan runs some fragments
//! of one worker, one after another, each with a Flight `do_get`, and
//! streams the batches as they arrive: the coordinator never buffers a
//! shard. A worker gets at most `quiver.max_adaptive_executor_pool_size`
//! partitions, started with slow start ([`super::gate`]). What is above the
//! scan (joins, aggregates, sorts) runs on the coordinator. `EXPLAIN` lists
//! the shards, their nodes and the fragment; `EXPLAIN ANALYZE` adds rows
//! and time per partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::client::WorkerClients;
use super::gate::QueryGates;
use super::read_point::ReadPoint;
use super::shuffle::ShuffleStage;
use super::wire::QueryTicket;
use crate::meta::state::{NodeId, ShardId};
use crate::sql::settings::{exec_limits, Settings};
use crate::sql::SqlError;

/// One shard's part of a scan.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub shard_id: ShardId,
    pub node: NodeId,
    pub addr: String,
    pub sql: String,
    /// Table names the worker maps to shard tables (pushed-down fragments).
    pub tables: Vec<(String, String)>,
}

/// Reads shards of one distributed table from the workers.
#[derive(Debug)]
pub struct ShardScanExec {
    table: String,
    schema: SchemaRef,
    fragments: Vec<Fragment>,
    gid: Option<String>,
    /// The fragments return one `count(*)` each (no column is needed).
    count_only: bool,
    clients: Arc<WorkerClients>,
    /// Columns of the fragment's result to keep.
    projection: Option<Vec<usize>>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Streams per worker this query may run at a time.
    gates: Arc<QueryGates>,
    /// The fragments (positions) each partition runs, all on one worker.
    partitions: Vec<Vec<usize>>,
    /// A shuffle's map stage, run before the first fragment.
    stage: Option<Arc<ShuffleStage>>,
    /// The statement's snapshot across shards ([`super::read_point`]).
    read_point: Option<Arc<ReadPoint>>,
}

/// The gid of the session's open distributed transaction, if any: its
/// fragments run inside it, so a statement sees its own writes.
pub fn session_gid(state: &dyn datafusion::catalog::Session) -> Option<String> {
    state
        .config()
        .get_extension::<crate::sql::txn::TxnContext>()
        .and_then(|t| t.dist_gid())
}

/// Splits fragments into partitions: at most `pool` per worker, each
/// holding fragments of one worker only.
fn plan_partitions(fragments: &[Fragment], pool: usize) -> Vec<Vec<usize>> {
    let mut per_worker: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, fr) in fragments.iter().enumerate() {
        match per_worker.iter_mut().find(|(a, _)| *a == fr.addr) {
            Some((_, v)) => v.push(i),
            None => per_worker.push((&fr.addr, vec![i])),
        }
    }
    let mut out = Vec::new();
    for (_, frs) in per_worker {
        let k = pool.max(1).min(frs.len());
        let mut parts = vec![Vec::new(); k];
        for (j, f) in frs.into_iter().enumerate() {
            parts[j % k].push(f);
        }
        out.extend(parts);
    }
    out
}

fn properties(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(partitions.max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl ShardScanExec {
    pub fn new(
        table: String,
        schema: SchemaRef,
        fragments: Vec<Fragment>,
        gid: Option<String>,
        count_only: bool,
        clients: Arc<WorkerClients>,
    ) -> Self {
        let props = properties(&schema, fragments.len());
        let partitions = (0..fragments.len()).map(|i| vec![i]).collect();
        ShardScanExec {
            table,
            schema,
            fragments,
            gid,
            count_only,
            clients,
            projection: None,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            gates: QueryGates::unbounded(),
            partitions,
            stage: None,
            read_point: None,
        }
    }

    /// Reads at the statement's read point: the fragments are registered
    /// with it now, and name its pin when they run. The fragments of a
    /// shuffle's reduce side read intermediate results, not shards: the
    /// map tasks read at the read point instead.
    pub fn with_read_point(mut self, read_point: Option<Arc<ReadPoint>>) -> Self {
        if let Some(rp) = &read_point {
            if self.stage.is_none() {
                rp.plan(
                    self.fragments.iter().map(|f| f.addr.as_str()),
                    self.fragments.len(),
                );
            }
        }
        self.read_point = read_point;
        self
    }

    /// Runs `stage` (a shuffle's map tasks) before the fragments.
    pub fn with_stage(mut self, stage: Arc<ShuffleStage>) -> Self {
        self.stage = Some(stage);
        self
    }

    /// Bounds the streams per worker with the session's executor settings.
    pub fn with_session_limits(mut self, state: &dyn datafusion::catalog::Session) -> Self {
        if let Some(settings) = state.config().get_extension::<Settings>() {
            let (pool, slow_start) = exec_limits(&settings);
            self.partitions = plan_partitions(&self.fragments, pool);
            self.props = properties(&self.schema, self.partitions.len());
            self.gates = QueryGates::new(pool, slow_start);
        }
        self
    }

    /// Keeps only these columns of each fragment's result.
    pub fn with_projection(mut self, projection: Option<Vec<usize>>) -> Self {
        self.projection = projection;
        self
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let shards: Vec<String> = self
            .fragments
            .iter()
            .map(|fr| format!("{}@node{}({})", fr.shard_id, fr.node, fr.addr))
            .collect();
        write!(
            f,
            "ShardScanExec: table={}, shards={} [{}], fragment={}",
            self.table,
            self.fragments.len(),
            shards.join(", "),
            self.fragments.first().map_or("", |fr| fr.sql.as_str())
        )?;
        if let Some(stage) = &self.stage {
            write!(f, ", after a {}", stage.describe())?;
        }
        Ok(())
    }
}

/// A worker's result columns, by position, cast to `schema`'s types where
/// they differ.
pub fn cast_columns(
    b: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<
    Vec<datafusion::arrow::array::ArrayRef>,
    datafusion::arrow::error::ArrowError,
> {
    b.columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect()
}

fn relabel(schema: &SchemaRef, b: RecordBatch, count_only: bool) -> Result<RecordBatch> {
    if count_only {
        let n = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .filter(|a| !a.is_empty())
            .map_or(0, |a| a.value(0));
        return Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(n.max(0) as usize)),
        )?);
    }
    let cols = cast_columns(&b, schema)?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
    )?)
}

fn in_shard(e: SqlError, fr: &Fragment, table: &str) -> DataFusionError {
    let mut e = e;
    if e.sqlstate == "08006" {
        // Pushed-down fragments and shuffles are named after their tables.
        let what = if let Some(t) = table.strip_prefix("fragment_") {
            format!("shard {} of table {t}", fr.shard_id)
        } else if let Some(t) = table.strip_prefix("shuffle_") {
            format!("bucket {} of a shuffle of {t}", fr.shard_id)
        } else {
            format!("shard {} of table {table}", fr.shard_id)
        };
        e.message = format!("{} (reading {what} on node {})", e.message, fr.node);
    }
    DataFusionError::External(Box::new(e))
}

impl ExecutionPlan for ShardScanExec {
    fn name(&self) -> &str {
        "ShardScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let frs: Vec<Fragment> = self
            .partitions
            .get(partition)
            .map(|p| {
                p.iter()
                    .filter_map(|&i| self.fragments.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default();
        let Some(addr) = frs.first().map(|f| f.addr.clone()) else {
            return Err(DataFusionError::Internal(format!(
                "no fragment {partition}"
            )));
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let clients = self.clients.clone();
        let gid = self.gid.clone();
        let projection = self.projection.clone();
        let schema = self.schema.clone();
        let table = self.table.clone();
        let count_only = self.count_only;
        let out_schema = schema.clone();
        let gates = self.gates.clone();
        let stage = self.stage.clone();
        let read_point = self.read_point.clone().filter(|_| stage.is_none());
        let opened = async move {
            // The stage lives as long as the streams (its drop frees the
            // intermediate results they read).
            if let Some(stage) = &stage {
                stage
                    .ensure()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
            }
            let snapshot = match &read_point {
                Some(rp) => rp
                    .pin_for(&addr)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
                None => None,
            };
            // One place in the worker's gate for all fragments of the partition.
            let slot = Arc::new(gates.enter(&addr).await);
            let each = futures::stream::iter(frs).then(move |fr| {
                let (clients, slot, baseline) = (clients.clone(), slot.clone(), baseline.clone());
                let stage = stage.clone();
                // The pins live as long as a stream reads them.
                let read_point = read_point.clone();
                let (projection, schema, table) =
                    (projection.clone(), schema.clone(), table.clone());
                let ticket = QueryTicket {
                    sql: fr.sql.clone(),
                    gid: gid.clone(),
                    tables: fr.tables.clone(),
                    snapshot: snapshot.clone(),
                };
                async move {
                    let (stream, permit) = clients
                        .query(&fr.addr, &ticket)
                        .await
                        .map_err(|e| in_shard(e, &fr, &table))?;
                    Ok::<_, DataFusionError>(stream.map(move |r| {
                        let _held = (&permit, &slot, &stage, &read_point);
                        let timer = baseline.elapsed_compute().timer();
                        let out = match r {
                            Ok(b) => match &projection {
                                Some(p) => b
                                    .project(p)
                                    .map_err(DataFusionError::from)
                                    .and_then(|b| relabel(&schema, b, count_only)),
                                None => relabel(&schema, b, count_only),
                            },
                            Err(e) => Err(in_shard(
                                super::client::remote_error(
                                    &fr.addr,
                                    "streaming a query fragment",
                                    e,
                                ),
                                &fr,
                                &table,
                            )),
                        };
                        timer.done();
                        if let Ok(b) = &out {
                            baseline.record_output(b.num_rows());
                        }
                        out
                    }))
                }
            });
            Ok::<_, DataFusionError>(each.try_flatten())
        };
        let stream = futures::stream::once(opened).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(shard: u64, addr: &str) -> Fragment {
        Fragment {
            shard_id: shard,
            node: 1,
            addr: addr.into(),
            sql: String::new(),
            tables: vec![],
        }
    }

    #[test]
    fn partitions_hold_one_worker_and_respect_the_pool() {
        let frs: Vec<Fragment> = (0..7)
            .map(|i| frag(i, if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let parts = plan_partitions(&frs, 2);
        assert_eq!(parts.len(), 4);
        for p in &parts {
            let addr = &frs[p[0]].addr;
            assert!(p.iter().all(|&i| &frs[i].addr == addr));
        }
        let mut all: Vec<usize> = parts.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        // a pool larger than the fragments: one partition per fragment
        assert_eq!(plan_partitions(&frs, 16).len(), 7);
        assert_eq!(plan_partitions(&frs, 1).len(), 2);
    }
}
