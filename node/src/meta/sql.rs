//! The cluster catalogue in SQL: `pg_dist_node` and the node functions.
//!
//! Step in the flow: on a coordinator, [`install`] registers the read-only
//! table `pg_dist_node` (built from the [`MetaApi`] snapshot each time it is
//! scanned) in the `public` schema, and the async SQL functions
//! `quiver_add_node(host, port)` (returns the node id),
//! `quiver_remove_node(host, port)` (returns true) and
//! `quiver_drain_node(host, port)` (returns the moves its rebalance makes),
//! which call the same [`MetaApi`] methods as the gRPC `AddNode` /
//! `RemoveNode` / `DrainNode`. On a standalone
//! node the functions exist but fail with SQLSTATE 55000 ("requires the
//! coordinator role") and there is no `pg_dist_node`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::api::{ApiError, MetaApi, NodeSelector};
use super::state::NodeRole;
use crate::sql::catalog::QuiverSchema;
use crate::sql::SqlError;

/// Name of the node table.
pub const PG_DIST_NODE: &str = "pg_dist_node";

/// Registers the cluster table and functions. `api` is `None` on a
/// standalone node: the functions then fail with "requires the coordinator
/// role" and no table is added.
pub fn install(
    ctx: &SessionContext,
    schema: &QuiverSchema,
    api: Option<Arc<MetaApi>>,
) -> Result<(), SqlError> {
    if let Some(api) = &api {
        schema.add_external(
            PG_DIST_NODE,
            Arc::new(PgDistNode {
                api: api.clone(),
                schema: pg_dist_node_schema(),
            }),
        );
    }
    for kind in [NodeFnKind::Add, NodeFnKind::Remove, NodeFnKind::Drain] {
        let f = NodeFn {
            kind,
            api: api.clone(),
            signature: Signature::any(2, Volatility::Volatile),
        };
        ctx.register_udf(AsyncScalarUDF::new(Arc::new(f)).into_scalar_udf());
    }
    Ok(())
}

fn pg_dist_node_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("nodeid", DataType::Int64, false),
        Field::new("nodename", DataType::Utf8, false),
        Field::new("nodeport", DataType::Int32, false),
        Field::new("noderole", DataType::Utf8, false),
        Field::new("isactive", DataType::Boolean, false),
        Field::new("health", DataType::Utf8, false),
        Field::new("nodegroup", DataType::Utf8, false),
    ]))
}

/// `pg_dist_node`: one row per node of the catalogue.
#[derive(Debug)]
struct PgDistNode {
    api: Arc<MetaApi>,
    schema: SchemaRef,
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Coordinator => "coordinator",
        NodeRole::Worker => "worker",
    }
}

#[async_trait]
impl TableProvider for PgDistNode {
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
        let nodes = self.api.nodes();
        let ids: Int64Array = nodes
            .iter()
            .map(|n| Some(i64::try_from(n.id).unwrap_or(i64::MAX)))
            .collect();
        let names: StringArray = nodes.iter().map(|n| Some(n.info.host.as_str())).collect();
        let ports: Int32Array = nodes.iter().map(|n| Some(i32::from(n.info.port))).collect();
        let roles: StringArray = nodes.iter().map(|n| Some(role_name(n.info.role))).collect();
        let active: BooleanArray = nodes.iter().map(|n| Some(n.info.active)).collect();
        let health: StringArray = nodes.iter().map(|n| Some(n.health.as_str())).collect();
        let groups: StringArray = nodes.iter().map(|n| Some(n.info.group.as_str())).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids),
            Arc::new(names),
            Arc::new(ports),
            Arc::new(roles),
            Arc::new(active),
            Arc::new(health),
            Arc::new(groups),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NodeFnKind {
    Add,
    Remove,
    Drain,
}

/// `quiver_add_node(host, port)` / `quiver_remove_node(host, port)`.
#[derive(Debug)]
struct NodeFn {
    kind: NodeFnKind,
    api: Option<Arc<MetaApi>>,
    signature: Signature,
}

impl PartialEq for NodeFn {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for NodeFn {}

impl Hash for NodeFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

fn sql_err(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn api_err(e: ApiError) -> DataFusionError {
    sql_err(SqlError::new(e.sqlstate(), e.to_string()))
}

impl NodeFn {
    fn args(&self, args: &ScalarFunctionArgs) -> Result<(StringArray, Int64Array)> {
        let [host, port] = args.args.as_slice() else {
            return Err(sql_err(SqlError::new(
                "42883",
                format!("{}(host, port) takes two arguments", self.name()),
            )));
        };
        let arrays = ColumnarValue::values_to_arrays(&[host.clone(), port.clone()])?;
        let hosts = cast(&arrays[0], &DataType::Utf8)?;
        let ports = cast(&arrays[1], &DataType::Int64)
            .map_err(|e| sql_err(SqlError::new("22023", format!("port: {e}"))))?;
        let hosts = hosts
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("host is not text".into()))?;
        let ports = ports
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("port is not an integer".into()))?;
        Ok((hosts, ports))
    }
}

fn port_of(name: &str, port: Option<i64>) -> Result<u16> {
    port.and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            sql_err(SqlError::new(
                "22023",
                format!("{name}: port must be between 1 and 65535"),
            ))
        })
}

impl ScalarUDFImpl for NodeFn {
    fn name(&self) -> &str {
        match self.kind {
            NodeFnKind::Add => "quiver_add_node",
            NodeFnKind::Remove => "quiver_remove_node",
            NodeFnKind::Drain => "quiver_drain_node",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            NodeFnKind::Add | NodeFnKind::Drain => DataType::Int64,
            NodeFnKind::Remove => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "{} can only be called asynchronously",
            self.name()
        )))
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for NodeFn {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(api) = &self.api else {
            return Err(sql_err(SqlError::new(
                "55000",
                format!("{}() requires the coordinator role", self.name()),
            )));
        };
        let (hosts, ports) = self.args(&args)?;
        let name = self.name();
        let mut ids = Vec::with_capacity(hosts.len());
        for (host, port) in hosts.iter().zip(ports.iter()) {
            let Some(host) = host else {
                ids.push(None);
                continue;
            };
            let port = port_of(name, port)?;
            let id = match self.kind {
                NodeFnKind::Add => {
                    let r = api.add_node(host, port, "").await.map_err(api_err)?;
                    i64::try_from(r.node_id).unwrap_or(i64::MAX)
                }
                NodeFnKind::Remove => {
                    let node = NodeSelector::Addr {
                        host: host.to_owned(),
                        port,
                    };
                    api.remove_node(&node).await.map_err(api_err)?;
                    1
                }
                NodeFnKind::Drain => {
                    let node = NodeSelector::Addr {
                        host: host.to_owned(),
                        port,
                    };
                    let (info, _) = api.drain_node(&node).await.map_err(api_err)?;
                    info.map_or(0, |r| i64::try_from(r.moves.len()).unwrap_or(i64::MAX))
                }
            };
            ids.push(Some(id));
        }
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let out: ArrayRef = match self.kind {
            NodeFnKind::Add | NodeFnKind::Drain => {
                Arc::new(ids.into_iter().collect::<Int64Array>())
            }
            NodeFnKind::Remove => Arc::new(
                ids.into_iter()
                    .map(|v| v.map(|_| true))
                    .collect::<BooleanArray>(),
            ),
        };
        if all_scalar && out.len() == 1 {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}
