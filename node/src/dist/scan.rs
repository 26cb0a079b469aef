//! `ShardScanExec`: the leaf of a plan over a distributed table.
//!
//! Step in the flow: [`super::table::DistributedTable::scan`] prunes the
//! shards and writes one SQL fragment per remaining shard (projection,
//! pushed filters, limit). Partition `i` of this plan runs fragment `i`
//! with a Flight `do_get` on the worker holding the shard and streams the
//! batches as they arrive: the coordinator never buffers a shard. What is
//! above the scan (joins, aggregates, sorts) runs on the coordinator.
//! `EXPLAIN` lists the shards, their nodes and the fragment;
//! `EXPLAIN ANALYZE` adds rows and time per fragment (partition).

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
use super::wire::QueryTicket;
use crate::meta::state::{NodeId, ShardId};
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
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(fragments.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
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
        }
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
        )
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
        e.message = format!(
            "{} (reading shard {} of table {table} on node {})",
            e.message, fr.shard_id, fr.node
        );
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
        let fr = self
            .fragments
            .get(partition)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no fragment {partition}")))?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let clients = self.clients.clone();
        let ticket = QueryTicket {
            sql: fr.sql.clone(),
            gid: self.gid.clone(),
            tables: fr.tables.clone(),
        };
        let projection = self.projection.clone();
        let schema = self.schema.clone();
        let table = self.table.clone();
        let count_only = self.count_only;
        let out_schema = schema.clone();
        let opened = async move {
            let (stream, permit) = clients
                .query(&fr.addr, &ticket)
                .await
                .map_err(|e| in_shard(e, &fr, &table))?;
            let addr = fr.addr.clone();
            Ok::<_, DataFusionError>(stream.map(move |r| {
                let _held = &permit;
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
                        super::client::remote_error(&addr, "streaming a query fragment", e),
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
        };
        let stream = futures::stream::once(opened).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}
