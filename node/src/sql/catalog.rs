//! The `public` schema: stored tables from the engine's newest version,
//! plus external tables (Parquet/CSV files read in place) from the config.
//!
//! DataFusion, `information_schema` and the `pg_catalog` emulation all list
//! tables through this provider, so `\dt` and `\d` see what the engine has.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use parking_lot::{Mutex, RwLock};

use super::provider::QuiverTable;
use crate::storage::table::TableMeta;
use crate::storage::Engine;

/// Schema provider backed by the storage engine.
pub struct QuiverSchema {
    engine: Arc<Engine>,
    /// Plans column DEFAULT expressions.
    expr_state: SessionState,
    cache: Mutex<HashMap<u64, Arc<QuiverTable>>>,
    external: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// On a coordinator: tables in the Raft catalogue are distributed.
    cluster: std::sync::OnceLock<Arc<crate::dist::Cluster>>,
}

impl std::fmt::Debug for QuiverSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuiverSchema")
    }
}

impl QuiverSchema {
    pub fn new(engine: Arc<Engine>, expr_state: SessionState) -> Self {
        QuiverSchema {
            engine,
            expr_state,
            cache: Mutex::new(HashMap::new()),
            external: RwLock::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Registers an external (file-backed, read-only) table.
    pub fn add_external(&self, name: &str, table: Arc<dyn TableProvider>) {
        self.external.write().insert(name.to_string(), table);
    }

    pub fn remove_external(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.external.write().remove(name)
    }

    pub fn is_external(&self, name: &str) -> bool {
        self.external.read().contains_key(name)
    }

    /// Plans a column's DEFAULT expression.
    /// Makes this a coordinator's schema: tables in `cluster`'s catalogue
    /// are read and written on the workers.
    pub fn set_cluster(&self, cluster: Arc<crate::dist::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    fn defaults_of(&self, meta: &TableMeta) -> Result<Vec<Option<Expr>>> {
        meta.columns
            .iter()
            .map(|c| {
                c.default
                    .as_deref()
                    .map(|d| self.plan_default(meta, d))
                    .transpose()
            })
            .collect()
    }

    pub fn plan_default(&self, meta: &TableMeta, sql: &str) -> Result<Expr> {
        let schema = DFSchema::try_from(meta.schema().as_ref().clone())?;
        self.expr_state.create_logical_expr(sql, &schema)
    }

    fn provider(&self, meta: &Arc<TableMeta>) -> Result<Arc<QuiverTable>> {
        let mut cache = self.cache.lock();
        if let Some(t) = cache.get(&meta.id) {
            if t.meta() == meta {
                return Ok(t.clone());
            }
        }
        let defaults = self.defaults_of(meta)?;
        let t = Arc::new(QuiverTable::new(
            self.engine.clone(),
            meta.clone(),
            defaults,
        ));
        cache.insert(meta.id, t.clone());
        Ok(t)
    }
}

#[async_trait]
impl SchemaProvider for QuiverSchema {
    fn table_names(&self) -> Vec<String> {
        let snap = self.engine.snapshot();
        let mut names: Vec<String> = snap.names.keys().cloned().collect();
        // Shuffle intermediates on a worker are not listed.
        names.extend(
            self.external
                .read()
                .keys()
                .filter(|n| !n.starts_with("__shuffle_"))
                .cloned(),
        );
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(t) = self.external.read().get(name) {
            return Ok(Some(t.clone()));
        }
        let snap = self.engine.snapshot();
        let Some(t) = snap.table_by_name(name) else {
            return Ok(None);
        };
        if let Some(cluster) = self.cluster.get() {
            if cluster.snapshot().table_by_name(name).is_some() {
                return Ok(Some(Arc::new(crate::dist::table::DistributedTable::new(
                    cluster.clone(),
                    t.meta.clone(),
                    self.defaults_of(&t.meta)?,
                ))));
            }
        }
        Ok(Some(self.provider(&t.meta)? as Arc<dyn TableProvider>))
    }

    /// Views and external tables (kept in memory, not persisted).
    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.engine.snapshot().names.contains_key(&name) {
            return Err(DataFusionError::Plan(format!(
                "relation \"{name}\" already exists"
            )));
        }
        Ok(self.external.write().insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.external.write().remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.external.read().contains_key(name) || self.engine.snapshot().names.contains_key(name)
    }
}
