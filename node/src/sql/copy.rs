//! COPY for a session: `COPY ... FROM STDIN` (rows arrive in batches
//! from the wire codec and join the transaction's pending inserts, with
//! defaults filled in for missing columns) and `COPY ... TO STDOUT`.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
};

use super::error::SqlError;
use super::idents;
use super::session::{BlockState, CopyIn, Outcome, Session};
use crate::storage::table::{TableData, TableMeta};

impl Session {
    pub(super) async fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Outcome, SqlError> {
        let opts = copy_options(options, legacy)?;
        if to {
            if !matches!(target, CopyTarget::Stdout) {
                return Err(SqlError::unsupported("COPY TO supports only STDOUT"));
            }
            let sql = match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("SELECT {cols} FROM {table_name}")
                }
                CopySource::Query(q) => q.to_string(),
            };
            let df = self.ctx.sql(&sql).await?;
            return Ok(Outcome::CopyOut { df, options: opts });
        }
        if !matches!(target, CopyTarget::Stdin) {
            return Err(SqlError::unsupported("COPY FROM supports only STDIN"));
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(SqlError::syntax("COPY FROM needs a table"));
        };
        let name = idents::relation(table_name);
        let snap = self.txn.snapshot();
        let t = snap
            .table_by_name(&name)
            .cloned()
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
        let cols = if columns.is_empty() {
            (0..t.meta.columns.len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let n = idents::fold(c);
                    t.meta.column_index(&n).ok_or_else(|| {
                        SqlError::new(
                            "42703",
                            format!("column \"{n}\" of relation \"{name}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let full = t.meta.schema();
        let schema = Arc::new(
            full.project(&cols)
                .map_err(|e| SqlError::new("XX000", e.to_string()))?,
        );
        let distributed = self
            .db
            .cluster
            .as_ref()
            .is_some_and(|c| c.layout(&t.meta.name).is_some());
        let stageable = !distributed && cols.iter().copied().eq(0..t.meta.columns.len());
        Ok(Outcome::CopyIn(CopyIn {
            table: t.meta.clone(),
            columns: cols,
            schema,
            options: opts,
            stageable,
        }))
    }

    /// Adds the decoded rows of one chunk of COPY data. With `staged`
    /// (only for a [`CopyIn::stageable`] COPY): rows already in the table's
    /// form ([`stage_form`]) and their `codec::ipc_stream`, which is logged
    /// ahead of the commit so that a large COPY writes its WAL while it reads.
    pub async fn copy_chunk(
        &mut self,
        copy: &CopyIn,
        batches: Vec<RecordBatch>,
        staged: Option<(Vec<RecordBatch>, Vec<u8>)>,
    ) -> Result<(), SqlError> {
        for b in batches {
            self.copy_rows(copy, b).await?;
        }
        let Some((rows, ipc)) = staged.filter(|_| copy.stageable) else {
            return Ok(());
        };
        let t = self.copy_target(copy)?;
        if t.meta.schema() != copy.table.schema() {
            return Err(SqlError::new(
                "40001",
                format!("relation \"{}\" changed during COPY", copy.table.name),
            ));
        }
        self.txn.add_staged_inserts(&t, rows, ipc)?;
        Ok(())
    }

    /// The COPY's table in the statement's snapshot.
    fn copy_target(&self, copy: &CopyIn) -> Result<Arc<TableData>, SqlError> {
        let snap = self.txn.snapshot();
        snap.tables.get(&copy.table.id).cloned().ok_or_else(|| {
            SqlError::new(
                "42P01",
                format!("relation \"{}\" does not exist", copy.table.name),
            )
        })
    }

    /// Adds decoded COPY rows (columns as in `copy.schema`) to the
    /// transaction, filling missing columns with their defaults.
    async fn copy_rows(&mut self, copy: &CopyIn, batch: RecordBatch) -> Result<(), SqlError> {
        let t = self.copy_target(copy)?;
        let full = t.meta.schema();
        let n = batch.num_rows();
        let mut cols = Vec::with_capacity(full.fields().len());
        for i in 0..full.fields().len() {
            match copy.columns.iter().position(|&c| c == i) {
                Some(p) => cols.push(batch.column(p).clone()),
                None => cols.push(self.default_array(&t.meta, i, n)?),
            }
        }
        let b = super::provider::from_columns(&t.meta, &full, cols)?;
        if let Some(cluster) = self.db.cluster.clone() {
            let _permit = cluster
                .write_permit(&self.txn, || vec![t.meta.name.clone()])
                .await;
            if let Some(layout) = cluster.layout(&t.meta.name) {
                // A distributed table: the rows go to their shards now.
                let column = layout.column().and_then(|c| t.meta.column_index(c));
                cluster
                    .write_rows(&self.txn, &t.meta, &layout, column, &[b])
                    .await?;
                return Ok(());
            }
        }
        self.txn.add_inserts(&t, vec![b])?;
        Ok(())
    }

    pub(super) fn default_array(
        &self,
        meta: &TableMeta,
        col: usize,
        n: usize,
    ) -> Result<datafusion::arrow::array::ArrayRef, SqlError> {
        let ty = meta.columns[col].ty.arrow_type();
        let Some(sql) = &meta.columns[col].default else {
            return Ok(datafusion::arrow::array::new_null_array(&ty, n));
        };
        let expr = self.db.schema.plan_default(meta, sql)?;
        let empty = DFSchema::empty();
        let phys = self.ctx.state().create_physical_expr(expr, &empty)?;
        let one = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            vec![],
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        let v = phys.evaluate(&one)?.into_array(n)?;
        datafusion::arrow::compute::cast(&v, &ty).map_err(|e| SqlError::new("22P02", e.to_string()))
    }

    /// Ends a `COPY FROM STDIN`: checks keys, commits outside a block.
    pub async fn finish_copy(&mut self, copy: &CopyIn) -> Result<(), SqlError> {
        let r = self.txn.precheck_unique(copy.table.id);
        let r = match r {
            Ok(()) if self.block == BlockState::Idle => self.commit_pending().await,
            Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if r.is_err() {
            self.fail_copy();
        }
        r
    }

    /// Abandons a `COPY FROM STDIN` after an error.
    pub fn fail_copy(&mut self) {
        if self.block == BlockState::InBlock {
            self.block = BlockState::Failed;
        } else {
            self.txn.take_pending();
            if let (Some(d), Some(c)) = (self.txn.take_dist(), self.db.cluster.clone()) {
                tokio::spawn(async move { c.abort(d).await });
            }
        }
    }
}

/// A decoded batch of a [`CopyIn::stageable`] COPY as the table stores it
/// (NOT NULL checked). Pure, so a decoder thread can compute it to stage.
pub fn stage_form(meta: &TableMeta, batch: RecordBatch) -> datafusion::error::Result<RecordBatch> {
    super::provider::from_columns(meta, &meta.schema(), batch.columns().to_vec())
}

/// A column list as COPY's option text (`a, "B"`): the codec folds it.
fn column_list(cols: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    cols.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// COPY options as `(name, value)` pairs.
fn copy_options(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<Vec<(String, Option<String>)>, SqlError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut put = |k: &str, v: Option<String>| out.push((k.to_string(), v));
    for o in options {
        match o {
            CopyOption::Format(f) => put("format", Some(f.value.to_ascii_lowercase())),
            CopyOption::Delimiter(c) => put("delimiter", Some(c.to_string())),
            CopyOption::Null(s) => put("null", Some(s.clone())),
            CopyOption::Header(b) => put("header", Some(b.to_string())),
            CopyOption::Quote(c) => put("quote", Some(c.to_string())),
            CopyOption::Escape(c) => put("escape", Some(c.to_string())),
            CopyOption::Encoding(e) => {
                let e = e.to_ascii_lowercase().replace(['-', '_'], "");
                if e != "utf8" {
                    return Err(SqlError::unsupported("only UTF8 encoding is supported"));
                }
            }
            CopyOption::Freeze(_) => {}
            CopyOption::ForceQuote(cols) => put("force_quote", Some(column_list(cols))),
            CopyOption::ForceNotNull(cols) => put("force_not_null", Some(column_list(cols))),
            CopyOption::ForceNull(cols) => put("force_null", Some(column_list(cols))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => {
                return Err(SqlError::unsupported("COPY BINARY is not supported yet"))
            }
            CopyLegacyOption::Delimiter(c) => put("delimiter", Some(c.to_string())),
            CopyLegacyOption::Null(s) => put("null", Some(s.clone())),
            CopyLegacyOption::Header => put("header", Some("true".into())),
            CopyLegacyOption::Csv(csv) => {
                put("format", Some("csv".into()));
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => put("header", Some("true".into())),
                        CopyLegacyCsvOption::Quote(q) => put("quote", Some(q.to_string())),
                        CopyLegacyCsvOption::Escape(q) => put("escape", Some(q.to_string())),
                        CopyLegacyCsvOption::ForceQuote(cols) => {
                            put("force_quote", Some(column_list(cols)))
                        }
                        CopyLegacyCsvOption::ForceNotNull(cols) => {
                            put("force_not_null", Some(column_list(cols)))
                        }
                    }
                }
            }
            other => return Err(SqlError::unsupported(format!("COPY option {other}"))),
        }
    }
    Ok(out)
}
