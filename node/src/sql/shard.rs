//! Session entry points used by a worker's shard transactions and by the
//! coordinator's distributed writes.
//!
//! Step in the flow: [`crate::dist::worker_txn`] keeps one [`Session`] per
//! open global transaction. Rows that arrive over Flight `do_put` are staged
//! with [`Session::stage_rows`]; at PREPARE the session's writes are taken
//! out with [`Session::take_writes`] and kept (on disk) until the decision.

use datafusion::arrow::array::RecordBatch;
use datafusion::common::ParamValues;

use super::error::SqlError;
use super::session::{BlockState, Session};
use crate::storage::WriteSet;

impl Session {
    /// Stages `batches` as inserts into `table` in the open transaction,
    /// checking NOT NULL and unique keys as INSERT does. Returns the rows.
    pub fn stage_rows(&mut self, table: &str, batches: &[RecordBatch]) -> Result<u64, SqlError> {
        if self.block == BlockState::Failed {
            return Err(SqlError::aborted());
        }
        let snap = self.txn.snapshot();
        let t = snap.table_by_name(table).cloned().ok_or_else(|| {
            SqlError::new("42P01", format!("relation \"{table}\" does not exist"))
        })?;
        let schema = t.meta.schema();
        let mut rows = 0u64;
        let mut conformed = Vec::with_capacity(batches.len());
        for b in batches {
            rows += b.num_rows() as u64;
            conformed.push(super::provider::conform(&t.meta, &schema, b)?);
        }
        let staged = self
            .txn
            .add_inserts(&t, conformed)
            .and_then(|_| self.txn.precheck_unique(t.meta.id));
        if let Err(e) = staged {
            self.block = BlockState::Failed;
            return Err(e.into());
        }
        Ok(rows)
    }

    /// The tables among `ids` this transaction has written to.
    pub fn written_among(&self, ids: &[u64]) -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| self.txn.has_pending(*id))
            .collect()
    }

    /// Fails the open block: its writes must not commit.
    pub fn fail_block(&mut self) {
        if self.block == BlockState::InBlock {
            self.block = BlockState::Failed;
        }
    }

    /// Starts a transaction block, as `BEGIN` does.
    pub fn begin_block(&mut self) {
        if self.block == BlockState::Idle {
            self.block = BlockState::InBlock;
            self.txn.take_pending();
            self.txn.fix_snapshot(false);
        }
    }

    /// Runs one SQL text (one or more statements) inside the open block and
    /// returns the rows the last one affected (from its command tag).
    pub async fn exec_in_block(
        &mut self,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<u64, SqlError> {
        let mut rows = 0;
        for stmt in self.parse(sql)? {
            match self.execute(&stmt, None, params.clone()).await? {
                super::Outcome::Command(tag) => {
                    rows = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                super::Outcome::Rows { df, .. } => {
                    rows = df.count().await? as u64;
                }
                _ => {}
            }
        }
        Ok(rows)
    }

    /// Ends the block and hands back its writes (for a prepare); an aborted
    /// block is refused.
    pub fn take_writes(&mut self) -> Result<WriteSet, SqlError> {
        if self.block == BlockState::Failed {
            return Err(SqlError::new(
                "25P02",
                "the transaction failed on this node and cannot be prepared",
            ));
        }
        self.block = BlockState::Idle;
        self.txn.fix_snapshot(false);
        Ok(self.txn.take_pending().to_write_set())
    }
}

// --- the coordinator side ---------------------------------------------------

impl Session {
    /// Aborts the session's distributed transaction, if any.
    pub(super) async fn abort_dist(&mut self) {
        if let (Some(d), Some(c)) = (self.txn.take_dist(), &self.db.cluster) {
            c.abort(d).await;
        }
    }

    /// Runs `create_distributed_table(...)` / `create_reference_table(...)`.
    pub(super) async fn run_utility(
        &mut self,
        call: &crate::dist::ddl::UtilityCall,
        params: Option<&ParamValues>,
    ) -> Result<super::Outcome, SqlError> {
        let Some(cluster) = self.db.cluster.clone() else {
            return Err(SqlError::new(
                "55000",
                format!("{}() requires the coordinator role", call.name),
            ));
        };
        let shard_count = self
            .settings
            .get("quiver.shard_count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let replication = self
            .settings
            .get("quiver.shard_replication_factor")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // Arguments given as expressions (or as parameters of a prepared
        // statement) are evaluated here, as text.
        let mut call = call.clone();
        for (sql, slot) in call.computed() {
            let mut df = self
                .ctx
                .sql(&format!("SELECT CAST(({sql}) AS TEXT)"))
                .await?;
            if let Some(p) = params {
                df = df.with_param_values(p.clone())?;
            }
            let batches = df.collect().await?;
            *slot = batches
                .first()
                .filter(|b| b.num_rows() == 1)
                .and_then(|b| {
                    use datafusion::arrow::array::{Array, AsArray};
                    let text = datafusion::arrow::compute::cast(
                        b.column(0),
                        &datafusion::arrow::datatypes::DataType::Utf8,
                    )
                    .ok()?;
                    let text = text.as_string_opt::<i32>()?;
                    text.is_valid(0).then(|| text.value(0).to_owned())
                })
                .ok_or_else(|| SqlError::new("22004", format!("argument {sql} is NULL")))?;
        }
        let text = if call.name == crate::dist::mover::MOVE_FN {
            crate::dist::mover::run_call(&call, &cluster).await?
        } else if crate::dist::rebalancer::FUNCTIONS.contains(&call.name.as_str()) {
            crate::dist::rebalancer::run_call(&call, &cluster).await?
        } else {
            crate::dist::ddl::run_utility(&call, &cluster, &self.db, shard_count, replication)
                .await?
        };
        let schema = crate::dist::ddl::utility_schema(&call);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(
                datafusion::arrow::array::StringArray::from(vec![text]),
            )],
        )
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        Ok(super::Outcome::Batches {
            schema,
            batches: vec![batch],
        })
    }

    /// Drops the shards and metadata of `name` if it is distributed; the
    /// caller drops the local shell table.
    pub(super) async fn drop_distributed(&mut self, name: &str) -> Result<(), SqlError> {
        let Some(cluster) = self.db.cluster.clone() else {
            return Ok(());
        };
        let Some(layout) = cluster.layout(name) else {
            return Ok(());
        };
        cluster.refuse_if_moving(layout.table_id)?;
        cluster
            .propose(
                crate::meta::command::MetaCommand::DropTable {
                    table_id: layout.table_id,
                },
                "55000",
            )
            .await?;
        crate::dist::ddl::drop_shards(&cluster, &layout).await;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let (Some(d), Some(c)) = (self.txn.take_dist(), self.db.cluster.clone()) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { c.abort(d).await });
        }
    }
}
