//! `QuiverTable`: the DataFusion `TableProvider` over a stored table.
//!
//! Scans read the statement's snapshot plus the transaction's own pending
//! writes and hand DataFusion in-memory partitions (no copy of row data). An
//! equality (or IN list) on a whole unique key is answered from the hash
//! index instead of a scan: the router path for point queries. INSERT,
//! UPDATE, DELETE and TRUNCATE only change the transaction's pending writes;
//! the session commits them.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{collect, ExecutionPlan};

use super::error::SqlError;
use super::txn::{visible_batches, PendingTable, TxnContext};
use crate::storage::table::{check_not_null, rowids, TableData, TableMeta};
use crate::storage::{Engine, StorageError};

fn ext(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A stored table as DataFusion sees it.
pub struct QuiverTable {
    engine: Arc<Engine>,
    meta: Arc<TableMeta>,
    schema: SchemaRef,
    defaults: Vec<Option<Expr>>,
}

impl std::fmt::Debug for QuiverTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuiverTable({})", self.meta.name)
    }
}

impl QuiverTable {
    pub fn new(engine: Arc<Engine>, meta: Arc<TableMeta>, defaults: Vec<Option<Expr>>) -> Self {
        let schema = meta.schema();
        QuiverTable {
            engine,
            meta,
            schema,
            defaults,
        }
    }

    pub fn meta(&self) -> &Arc<TableMeta> {
        &self.meta
    }

    fn txn(&self, state: &dyn Session) -> Result<Arc<TxnContext>> {
        state
            .config()
            .get_extension::<TxnContext>()
            .ok_or_else(|| DataFusionError::Internal("no transaction context in session".into()))
    }

    /// The table as the statement sees it, and the transaction's pending
    /// changes to it.
    fn current(&self, state: &dyn Session) -> Result<(Arc<TableData>, Option<PendingTable>)> {
        let (snap, pending) = match state.config().get_extension::<TxnContext>() {
            Some(txn) => (txn.snapshot(), txn.pending_table(self.meta.id)),
            None => (self.engine.snapshot(), None),
        };
        let t = snap
            .tables
            .get(&self.meta.id)
            .cloned()
            .ok_or_else(|| ext(StorageError::UndefinedTable(self.meta.name.clone())))?;
        if t.meta.columns != self.meta.columns {
            return Err(ext(StorageError::SerializationFailure));
        }
        Ok((t, pending))
    }

    /// Rows matched through a unique index for `key = literal` filters.
    /// The LSN of the snapshot the statement reads.
    fn snapshot_lsn(&self, state: &dyn Session) -> u64 {
        match state.config().get_extension::<TxnContext>() {
            Some(txn) => txn.snapshot().lsn,
            None => self.engine.snapshot().lsn,
        }
    }

    fn point_lookup(
        &self,
        t: &TableData,
        pending: Option<&PendingTable>,
        filters: &[Expr],
        lsn: u64,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let Some(idx) = self.engine.indexes(self.meta.id) else {
            return Ok(None);
        };
        for key in &idx.keys {
            if !key.usable_at(lsn) {
                continue;
            }
            // One list of candidate values per key column.
            let mut per_col: Vec<Vec<ScalarValue>> = Vec::new();
            for &c in &key.columns {
                let name = &self.meta.columns[c].name;
                match filters.iter().find_map(|f| key_values(f, name)) {
                    Some(vals) => per_col.push(vals),
                    None => break,
                }
            }
            if per_col.len() != key.columns.len() || per_col.iter().any(|v| v.len() != 1) {
                // Multi-column IN lists are left to the scan.
                if !(per_col.len() == 1 && key.columns.len() == 1) {
                    continue;
                }
            }
            let mut arrays: Vec<ArrayRef> = Vec::new();
            for (vals, &c) in per_col.iter().zip(&key.columns) {
                let arr = ScalarValue::iter_to_array(vals.iter().cloned())?;
                arrays.push(cast(&arr, &self.meta.columns[c].ty.arrow_type())?);
            }
            let rows = key.encode_arrays(&arrays).map_err(ext)?;
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for row in rows.iter() {
                let Some(r) = key.newest(row.as_ref(), |r| t.is_live(r)) else {
                    continue;
                };
                if !seen.insert(r) || pending.is_some_and(|p| p.truncate || p.deletes.contains(&r))
                {
                    continue;
                }
                if let Some(b) = t.row(r) {
                    out.push(b);
                }
            }
            if let Some(p) = pending {
                out.extend(p.inserts.iter().cloned());
            }
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// Row ids (and the rows) matching all `filters`, as the transaction
    /// sees the table.
    fn matching(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<(Arc<TableData>, Vec<RecordBatch>)> {
        let (t, pending) = self.current(state)?;
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let preds: Vec<Arc<dyn PhysicalExpr>> = filters
            .iter()
            .map(|f| state.create_physical_expr(f.clone(), &df_schema))
            .collect::<Result<_>>()?;
        // A key given by `=` / `IN` on a unique index: only its rows are
        // candidates (an UPDATE or DELETE by primary key reads one row, not
        // the table).
        let lsn = self.snapshot_lsn(state);
        let candidates = match self.point_lookup(&t, pending.as_ref(), filters, lsn)? {
            Some(rows) => rows,
            None => visible_batches(&t, pending.as_ref()).map_err(ext)?,
        };
        let mut out = Vec::new();
        for b in candidates {
            let mut mask = BooleanArray::from(vec![true; b.num_rows()]);
            for p in &preds {
                let v = p.evaluate(&b)?.into_array(b.num_rows())?;
                let v = v
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Plan("WHERE must be boolean".into()))?;
                mask = datafusion::arrow::compute::and_kleene(&mask, v)?;
            }
            let mask: BooleanArray = mask.iter().map(|v| Some(v == Some(true))).collect();
            let f = filter_record_batch(&b, &mask)?;
            if f.num_rows() > 0 {
                out.push(f);
            }
        }
        Ok((t, out))
    }
}

/// Values `v` in `name = v` or `name IN (v, ...)`, if `f` has that shape.
fn key_values(f: &Expr, name: &str) -> Option<Vec<ScalarValue>> {
    fn is_col(e: &Expr, name: &str) -> bool {
        match e {
            Expr::Column(c) => c.name == name,
            Expr::Cast(c) => is_col(&c.expr, name),
            _ => false,
        }
    }
    match f {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (l, Expr::Literal(v, _)) if is_col(l, name) && !v.is_null() => Some(vec![v.clone()]),
            (Expr::Literal(v, _), r) if is_col(r, name) && !v.is_null() => Some(vec![v.clone()]),
            _ => None,
        },
        Expr::InList(il) if !il.negated && is_col(&il.expr, name) => il
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A one-row `count` result, as DML plans return.
pub(crate) fn count_exec(n: u64) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(UInt64Array::from(vec![n])) as ArrayRef],
    )?;
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

/// Casts a batch's columns to the table's types, by position.
pub(crate) fn conform(
    meta: &TableMeta,
    schema: &SchemaRef,
    b: &RecordBatch,
) -> Result<RecordBatch> {
    if b.num_columns() != meta.columns.len() {
        return Err(DataFusionError::Plan(format!(
            "INSERT has {} expressions but table \"{}\" has {} columns",
            b.num_columns(),
            meta.name,
            meta.columns.len()
        )));
    }
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else if c.data_type() == &DataType::Utf8 && f.data_type() == &DataType::Binary {
                // A string into bytea is bytea input text (`\x0a0b`), as in
                // PostgreSQL, not the string's own bytes.
                bytea_from_text(c)
            } else {
                Ok(cast(c, f.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    from_columns(meta, schema, cols)
}

/// Reads each string as PostgreSQL `bytea` input (hex or escape format).
fn bytea_from_text(c: &ArrayRef) -> Result<ArrayRef> {
    let strings = c
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .ok_or_else(|| DataFusionError::Internal("bytea input is not Utf8".into()))?;
    let mut out = datafusion::arrow::array::BinaryBuilder::with_capacity(strings.len(), 0);
    let mut buf = Vec::new();
    for v in strings.iter() {
        match v {
            None => out.append_null(),
            Some(v) => {
                quiver_copy::parse_bytea(v.as_bytes(), &mut buf).map_err(|e| {
                    DataFusionError::External(Box::new(SqlError::new(e.kind.sqlstate(), e.message)))
                })?;
                out.append_value(&buf);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// A batch of the table's schema from columns, with NOT NULL checked first
/// (so a NULL gives SQLSTATE 23502, not an Arrow schema error).
pub(crate) fn from_columns(
    meta: &TableMeta,
    schema: &SchemaRef,
    cols: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    let relaxed = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let out = RecordBatch::try_new_with_options(relaxed, cols, &Default::default())?;
    check_not_null(meta, &out).map_err(ext)?;
    let out = super::chars::enforce_lengths(meta, out)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(RecordBatch::try_new(
        schema.clone(),
        out.columns().to_vec(),
    )?)
}

#[async_trait]
impl TableProvider for QuiverTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        let i = self.meta.column_index(column)?;
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
        let (t, pending) = self.current(state)?;
        let lsn = self.snapshot_lsn(state);
        let batches = match self.point_lookup(&t, pending.as_ref(), filters, lsn)? {
            Some(rows) => rows,
            None => visible_batches(&t, pending.as_ref()).map_err(ext)?,
        };
        let n = state
            .config()
            .target_partitions()
            .max(1)
            .min(batches.len().max(1));
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.meta.columns.len()).collect());
        let source = MemorySourceConfig::try_new(&parts, t.meta.stored_schema(), Some(projection))?
            .with_limit(limit);
        Ok(datafusion::datasource::source::DataSourceExec::from_data_source(source))
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
        let txn = self.txn(state)?;
        let (t, _) = self.current(state)?;
        let batches = collect(input, state.task_ctx()).await?;
        let mut rows = 0u64;
        let mut conformed = Vec::with_capacity(batches.len());
        for b in &batches {
            rows += b.num_rows() as u64;
            conformed.push(conform(&t.meta, &self.schema, b)?);
        }
        txn.add_inserts(&t, conformed).map_err(ext)?;
        txn.precheck_unique(t.meta.id).map_err(ext)?;
        count_exec(rows)
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let txn = self.txn(state)?;
        let (t, rows) = self.matching(state, &filters)?;
        let mut ids = Vec::new();
        for b in &rows {
            ids.extend(rowids(b).map_err(ext)?.values().iter().copied());
        }
        txn.delete_rows(t.meta.id, &ids).map_err(ext)?;
        count_exec(ids.len() as u64)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let txn = self.txn(state)?;
        let (t, rows) = self.matching(state, &filters)?;
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let mut exprs: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; self.meta.columns.len()];
        for (name, e) in assignments {
            let i = self.meta.column_index(&name).ok_or_else(|| {
                DataFusionError::Plan(format!("column \"{name}\" does not exist"))
            })?;
            exprs[i] = Some(state.create_physical_expr(e, &df_schema)?);
        }
        let mut ids = Vec::new();
        let mut new_rows = Vec::new();
        for b in &rows {
            ids.extend(rowids(b).map_err(ext)?.values().iter().copied());
            let mut cols = Vec::with_capacity(exprs.len());
            for (i, e) in exprs.iter().enumerate() {
                cols.push(match e {
                    Some(e) => {
                        let v = e.evaluate(b)?.into_array(b.num_rows())?;
                        cast(&v, self.schema.field(i).data_type())?
                    }
                    None => b.column(i).clone(),
                });
            }
            new_rows.push(from_columns(&t.meta, &self.schema, cols)?);
        }
        txn.delete_rows(t.meta.id, &ids).map_err(ext)?;
        txn.add_inserts(&t, new_rows).map_err(ext)?;
        txn.precheck_unique(t.meta.id).map_err(ext)?;
        count_exec(ids.len() as u64)
    }

    async fn truncate(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let txn = self.txn(state)?;
        let (t, pending) = self.current(state)?;
        let n: usize = visible_batches(&t, pending.as_ref())
            .map_err(ext)?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        txn.truncate(t.meta.id);
        count_exec(n as u64)
    }
}
