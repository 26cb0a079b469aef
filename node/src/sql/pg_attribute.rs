//! `pg_catalog.pg_attribute` with the column types Quiver tables really have.
//!
//! The `pg_catalog` emulation (datafusion-pg-catalog) derives `atttypid`
//! from each column's Arrow type and has no type modifiers, so psql's `\d`
//! and GUI clients would see `text` for `character(n)`, `varchar(n)`, `json`
//! and `interval` columns and a bare `numeric`. This wraps the emulated
//! schema: `pg_attribute` rows of stored tables get the type OID and
//! `atttypmod` of the declared type (`numeric(10,2)`, `character(3)`), the
//! way PostgreSQL encodes them, and `atthasdef` where a column has a
//! DEFAULT. `pg_class`, `pg_index`, `pg_constraint`
//! and `pg_attrdef` get the stored tables' keys and defaults
//! ([`super::pg_keys`]); every other catalog table passes through.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;

use crate::storage::table::SqlType;
use crate::storage::Engine;

/// PostgreSQL's type OID and `atttypmod` of a column type.
pub fn type_oid_and_mod(ty: &SqlType) -> (i32, i32) {
    match ty {
        SqlType::Bool => (16, -1),
        SqlType::Int2 => (21, -1),
        SqlType::Int4 => (23, -1),
        SqlType::Int8 => (20, -1),
        SqlType::Float4 => (700, -1),
        SqlType::Float8 => (701, -1),
        SqlType::Numeric { precision, scale } => (
            1700,
            ((i32::from(*precision) << 16) | i32::from(*scale)) + 4,
        ),
        SqlType::NumericAny => (1700, -1),
        SqlType::Text => (25, -1),
        SqlType::Varchar(n) => (1043, n.map_or(-1, |n| n as i32 + 4)),
        SqlType::Char(n) => (1042, n.map_or(-1, |n| n as i32 + 4)),
        SqlType::Date => (1082, -1),
        SqlType::Timestamp => (1114, -1),
        SqlType::Timestamptz => (1184, -1),
        SqlType::Interval => (1186, -1),
        SqlType::Bytea => (17, -1),
        SqlType::Json => (114, -1),
    }
}

/// Replaces the session's `pg_catalog` schema with the wrapper.
pub fn install(ctx: &SessionContext, catalog: &str, engine: Arc<Engine>) -> Result<()> {
    let cat = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {catalog}")))?;
    let inner = cat
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Plan("no pg_catalog schema".into()))?;
    cat.register_schema("pg_catalog", Arc::new(PgCatalog { inner, engine }))?;
    Ok(())
}

struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalog")
    }
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        if let Some(which) = super::pg_keys::Which::of(name) {
            let (Some(inner), Some(classes)) = (table, self.inner.table("pg_class").await?) else {
                return Ok(None);
            };
            return Ok(Some(Arc::new(super::pg_keys::KeyTable::new(
                which,
                inner,
                classes,
                self.engine.clone(),
            ))));
        }
        if name != "pg_attribute" {
            return Ok(table);
        }
        let (Some(attrs), Some(classes)) = (table, self.inner.table("pg_class").await?) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Attributes {
            attrs,
            classes,
            engine: self.engine.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_attribute` with the declared types of stored tables' columns.
struct Attributes {
    attrs: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attributes")
    }
}

pub(super) async fn scan_all(
    t: &Arc<dyn TableProvider>,
    state: &dyn Session,
) -> Result<Vec<RecordBatch>> {
    let plan = t.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

pub(super) fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    b.column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog: no column {name}")))
}

impl Attributes {
    /// Patches `atttypid` and `atttypmod` of one batch.
    fn patch(&self, b: &RecordBatch, relnames: &HashMap<i32, String>) -> Result<RecordBatch> {
        let snap = self.engine.snapshot();
        let relids = column(b, "attrelid")?.as_primitive::<Int32Type>();
        let names = column(b, "attname")?.as_string::<i32>();
        let typids = column(b, "atttypid")?.as_primitive::<Int32Type>();
        let typmods = column(b, "atttypmod")?.as_primitive::<Int32Type>();
        let mut new_ids: Vec<Option<i32>> = typids.iter().collect();
        let mut new_mods: Vec<Option<i32>> = typmods.iter().collect();
        // psql's `\d` reads a column's default only where atthasdef is set.
        let mut has_def: Vec<Option<bool>> = column(b, "atthasdef")?.as_boolean().iter().collect();
        for i in 0..b.num_rows() {
            let Some(rel) = relnames.get(&relids.value(i)) else {
                continue;
            };
            let Some(t) = snap.table_by_name(rel) else {
                continue;
            };
            let Some(c) = t.meta.columns.iter().find(|c| c.name == names.value(i)) else {
                continue;
            };
            let (oid, typmod) = type_oid_and_mod(&c.ty);
            new_ids[i] = Some(oid);
            new_mods[i] = Some(typmod);
            has_def[i] = Some(c.default.is_some());
        }
        let schema = b.schema();
        let mut cols = b.columns().to_vec();
        for (name, values) in [("atttypid", new_ids), ("atttypmod", new_mods)] {
            let idx = schema.index_of(name)?;
            cols[idx] = Arc::new(Int32Array::from(values));
        }
        cols[schema.index_of("atthasdef")?] = Arc::new(BooleanArray::from(has_def));
        Ok(RecordBatch::try_new(schema, cols)?)
    }
}

#[async_trait]
impl TableProvider for Attributes {
    fn schema(&self) -> SchemaRef {
        self.attrs.schema()
    }

    fn table_type(&self) -> TableType {
        self.attrs.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut relnames = HashMap::new();
        for b in scan_all(&self.classes, state).await? {
            let oids = column(&b, "oid")?.as_primitive::<Int32Type>();
            let names = column(&b, "relname")?.as_string::<i32>();
            for i in 0..b.num_rows() {
                relnames.insert(oids.value(i), names.value(i).to_string());
            }
        }
        let batches = scan_all(&self.attrs, state)
            .await?
            .iter()
            .map(|b| self.patch(b, &relnames))
            .collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typmods_as_postgres_encodes_them() {
        assert_eq!(
            type_oid_and_mod(&SqlType::Numeric {
                precision: 10,
                scale: 2
            }),
            (1700, 655_366)
        );
        assert_eq!(type_oid_and_mod(&SqlType::Char(Some(3))), (1042, 7));
        assert_eq!(type_oid_and_mod(&SqlType::Varchar(None)), (1043, -1));
        assert_eq!(type_oid_and_mod(&SqlType::Json), (114, -1));
    }
}
