//! `DistributedTable`: how DataFusion on the coordinator sees a
//! distributed or reference table.
//!
//! Step in the flow: the coordinator's schema provider hands this out for
//! every table in the Raft catalogue. Reads become a [`ShardScanExec`] over
//! the pruned shards, each reading a SQL fragment that carries the
//! projection, the filters that can be written as SQL, and the limit.
//! INSERT routes rows by the distribution column's hash; UPDATE, DELETE and
//! TRUNCATE run as statements on the shards they can touch. All writes join
//! the session's distributed transaction ([`super::coord`]).

use std::sync::Arc;

use super::unparse::expr_to_sql;
use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{collect, ExecutionPlan};

use super::coord::Cluster;
use super::read_point::ReadPoint;
use super::route::TableLayout;
use super::scan::{Fragment, ShardScanExec};
use super::shard_table_name;
use crate::sql::provider::{conform, count_exec};
use crate::sql::txn::TxnContext;
use crate::sql::SqlError;
use crate::storage::table::TableMeta;

/// A distributed table on the coordinator.
pub struct DistributedTable {
    cluster: Arc<Cluster>,
    shell: Arc<TableMeta>,
    schema: SchemaRef,
    defaults: Vec<Option<Expr>>,
}

impl std::fmt::Debug for DistributedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DistributedTable({})", self.shell.name)
    }
}

pub use crate::sql::idents::quote;

/// `e` as SQL text over an unqualified shard table, or `None` if it cannot
/// be written as SQL.
fn expr_sql(e: &Expr) -> Option<String> {
    let bare = e
        .clone()
        .transform(|x| {
            Ok(match x {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                }
                other => Transformed::no(other),
            })
        })
        .ok()?
        .data;
    expr_to_sql(&bare).ok().map(|s| s.to_string())
}

impl DistributedTable {
    pub fn new(cluster: Arc<Cluster>, shell: Arc<TableMeta>, defaults: Vec<Option<Expr>>) -> Self {
        let schema = shell.schema();
        DistributedTable {
            cluster,
            shell,
            schema,
            defaults,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.shell.name
    }

    fn layout(&self) -> Result<TableLayout> {
        self.cluster.layout(&self.shell.name).ok_or_else(|| {
            DataFusionError::from(SqlError::new(
                "42P01",
                format!("relation \"{}\" is no longer distributed", self.shell.name),
            ))
        })
    }

    fn txn(state: &dyn Session) -> Result<Arc<TxnContext>> {
        state
            .config()
            .get_extension::<TxnContext>()
            .ok_or_else(|| DataFusionError::Internal("no transaction context in session".into()))
    }

    fn column_index(&self, layout: &TableLayout) -> Option<usize> {
        layout.column().and_then(|c| self.shell.column_index(c))
    }

    pub(super) fn column_type(
        &self,
        layout: &TableLayout,
    ) -> Option<datafusion::arrow::datatypes::DataType> {
        self.column_index(layout)
            .map(|i| self.shell.columns[i].ty.arrow_type())
    }

    /// ` WHERE a AND b` for filters that must all be sent (DML).
    fn where_all(filters: &[Expr]) -> Result<String> {
        let mut parts = Vec::new();
        for f in filters {
            let sql = expr_sql(f).ok_or_else(|| {
                DataFusionError::from(SqlError::unsupported(format!(
                    "this condition cannot run on the shards yet: {f}"
                )))
            })?;
            parts.push(format!("({sql})"));
        }
        Ok(if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        })
    }

    /// Runs `sql_for(shard table)` on every placement of the shards at
    /// `positions`; the affected rows of one placement per shard count.
    async fn exec_on_shards(
        &self,
        state: &dyn Session,
        layout: &TableLayout,
        positions: &[usize],
        sql_for: impl Fn(&str) -> String,
    ) -> Result<u64> {
        let txn = Self::txn(state)?;
        let mut targets = Vec::new();
        let mut counted = Vec::new();
        for &pos in positions {
            let shard = &layout.shards[pos];
            let name = shard_table_name(&layout.info.name, shard.shard_id);
            if shard.placements.is_empty() {
                return Err(DataFusionError::from(
                    layout
                        .read_placement(shard)
                        .err()
                        .unwrap_or_else(|| SqlError::new("XX000", "shard without placement")),
                ));
            }
            for (i, (node, addr)) in shard.placements.iter().enumerate() {
                counted.push(i == 0);
                targets.push((*node, addr.clone(), name.clone(), sql_for(&name)));
            }
        }
        let rows = self
            .cluster
            .exec_in_txn(&txn, targets)
            .await
            .map_err(DataFusionError::from)?;
        Ok(rows
            .into_iter()
            .zip(counted)
            .filter(|(_, c)| *c)
            .map(|(r, _)| r)
            .sum())
    }
}

#[async_trait]
impl TableProvider for DistributedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        let i = self.shell.column_index(column)?;
        self.defaults.get(i).and_then(|d| d.as_ref())
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let layout = self.layout()?;
        let projected: SchemaRef = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut positions = layout.prune(filters, self.column_type(&layout).as_ref());
        if layout.is_reference() {
            positions.truncate(1);
        }
        if positions.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let conds: Vec<String> = filters
            .iter()
            .filter_map(expr_sql)
            .map(|s| format!("({s})"))
            .collect();
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit_sql = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
        let count_only = projected.fields().is_empty();
        let cols: Vec<String> = projected.fields().iter().map(|f| quote(f.name())).collect();
        let mut fragments = Vec::with_capacity(positions.len());
        for pos in positions {
            let shard = &layout.shards[pos];
            let (node, addr) = layout
                .read_placement(shard)
                .map_err(DataFusionError::from)?;
            let name = quote(&shard_table_name(&layout.info.name, shard.shard_id));
            let sql = if count_only && limit.is_some() {
                format!("SELECT count(*) FROM (SELECT 1 FROM {name}{where_sql}{limit_sql}) q")
            } else if count_only {
                format!("SELECT count(*) FROM {name}{where_sql}")
            } else {
                format!(
                    "SELECT {} FROM {name}{where_sql}{limit_sql}",
                    cols.join(", ")
                )
            };
            fragments.push(Fragment {
                shard_id: shard.shard_id,
                node,
                addr,
                sql,
                tables: vec![],
            });
        }
        let gid = super::scan::session_gid(state);
        let schema: SchemaRef = if count_only {
            Arc::new(Schema::empty())
        } else {
            projected
        };
        Ok(Arc::new(
            ShardScanExec::new(
                self.shell.name.clone(),
                schema,
                fragments,
                gid,
                count_only,
                self.cluster.clients.clone(),
            )
            .with_read_point(ReadPoint::of_statement(state, &self.cluster))
            .with_session_limits(state),
        ))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported"
            )));
        }
        let txn = Self::txn(state)?;
        let layout = self.layout()?;
        let batches = collect(input, state.task_ctx()).await?;
        let conformed = batches
            .iter()
            .map(|b| conform(&self.shell, &self.schema, b))
            .collect::<Result<Vec<_>>>()?;
        let rows = self
            .cluster
            .write_rows(
                &txn,
                &self.shell,
                &layout,
                self.column_index(&layout),
                &conformed,
            )
            .await
            .map_err(DataFusionError::from)?;
        count_exec(rows)
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let layout = self.layout()?;
        let positions = layout.prune(&filters, self.column_type(&layout).as_ref());
        let where_sql = Self::where_all(&filters)?;
        let n = self
            .exec_on_shards(state, &layout, &positions, |t| {
                format!("DELETE FROM {}{where_sql}", quote(t))
            })
            .await?;
        count_exec(n)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let layout = self.layout()?;
        let mut sets = Vec::new();
        for (name, e) in &assignments {
            if Some(name.as_str()) == layout.column() {
                // Only `SET col = col` (DataFusion lists every column) is fine.
                if matches!(e, Expr::Column(c) if c.name == *name) {
                    continue;
                }
                return Err(DataFusionError::from(SqlError::unsupported(format!(
                    "modifying the distribution column \"{name}\" of a distributed table is not allowed"
                ))));
            }
            if matches!(e, Expr::Column(c) if c.name == *name) {
                continue;
            }
            let sql = expr_sql(e).ok_or_else(|| {
                DataFusionError::from(SqlError::unsupported(format!(
                    "this assignment cannot run on the shards yet: {e}"
                )))
            })?;
            sets.push(format!("{} = {sql}", quote(name)));
        }
        let positions = layout.prune(&filters, self.column_type(&layout).as_ref());
        let where_sql = Self::where_all(&filters)?;
        // Every assignment is `col = col`: nothing changes, so the shards
        // only lock the rows (this is also how `SELECT ... FOR UPDATE`
        // reaches them, see `crate::sql::write_locks`).
        let stmt_for = |t: &str| {
            if sets.is_empty() {
                format!("SELECT 1 FROM {}{where_sql} FOR UPDATE", quote(t))
            } else {
                format!("UPDATE {} SET {}{where_sql}", quote(t), sets.join(", "))
            }
        };
        let n = self
            .exec_on_shards(state, &layout, &positions, stmt_for)
            .await?;
        count_exec(n)
    }

    async fn truncate(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let layout = self.layout()?;
        let positions: Vec<usize> = (0..layout.shards.len()).collect();
        self.exec_on_shards(state, &layout, &positions, |t| {
            format!("TRUNCATE {}", quote(t))
        })
        .await?;
        count_exec(0)
    }
}
