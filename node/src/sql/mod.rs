//! The SQL layer: DataFusion planning and execution over stored tables,
//! plus what DataFusion does not do for us (DDL with constraints, COPY,
//! transactions, `SET`/`SHOW`, PostgreSQL error codes).
//!
//! [`Database`] is shared by all connections of a node; each connection
//! gets a [`Session`] with its own DataFusion context and transaction.

pub mod alter;
pub mod at_time_zone;
pub mod avg_merge;
pub mod catalog;
pub mod chars;
pub mod checked;
pub mod copy;
pub mod ddl;
pub mod epoch;
pub mod error;
pub mod fast_dml;
pub mod idents;
pub mod info_schema;
pub mod int_literals;
pub mod interval_ops;
pub mod isolation;
pub mod literals;
pub mod names;
pub mod pg_attribute;
pub mod pg_functions;
pub mod pg_keys;
pub mod pg_strings;
pub mod pg_text;
pub mod point;
pub mod provider;
pub mod rewrite;
pub mod session;
pub mod settings;
pub mod shard;
pub mod srf;
pub mod subqueries;
pub mod txn;
pub mod type_planner;
pub mod udf;
pub mod write_locks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::datasource::file_format::options::{CsvReadOptions, ParquetReadOptions};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

pub use error::SqlError;
pub use session::{BlockState, CopyIn, Outcome, Session};

use crate::storage::Engine;
use catalog::QuiverSchema;
use txn::TxnContext;

/// The catalog (database) name clients connect to.
pub const CATALOG: &str = "quiver";

/// A file read in place as a table.
#[derive(Debug, Clone)]
pub struct ExternalTable {
    pub name: String,
    pub path: PathBuf,
    pub csv: bool,
}

/// Options for [`Database::open`].
#[derive(Debug, Clone, Default)]
pub struct DatabaseOptions {
    /// DataFusion partitions per query; 0 = number of cores.
    pub target_partitions: usize,
    pub external_tables: Vec<ExternalTable>,
    /// The metadata API of a coordinator: adds `pg_dist_node` and makes the
    /// `quiver_*_node` functions work. `None` on a standalone node.
    pub cluster: Option<Arc<crate::meta::MetaApi>>,
    /// Setting defaults for every session, e.g. `quiver.shard_count` from
    /// the config's `[sharding]`.
    pub setting_defaults: Vec<(String, String)>,
}

/// What every session of a node shares.
pub struct Database {
    pub engine: Arc<Engine>,
    /// On a coordinator: the data path to the workers.
    pub cluster: Option<Arc<crate::dist::Cluster>>,
    base: SessionContext,
    schema: Arc<QuiverSchema>,
    parser: PostgresCompatibilityParser,
    subqueries: subqueries::SubqueryKeeper,
    rows_written: AtomicU64,
    setting_defaults: Vec<(String, String)>,
}

impl Database {
    /// Builds the shared SQL state over an open engine.
    pub async fn open(engine: Arc<Engine>, opts: DatabaseOptions) -> Result<Arc<Self>, SqlError> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_create_default_catalog_and_schema(false)
            // Ours (`info_schema`) is registered in the catalog below.
            .with_information_schema(false);
        if opts.target_partitions > 0 {
            config = config.with_target_partitions(opts.target_partitions);
        }
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        // `1.5` is numeric, as in PostgreSQL (`0.1 + 0.2 = 0.3`), not float8.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        // `now()` and `TIMESTAMPTZ '...'` are instants (timestamptz), as in
        // PostgreSQL; results show them in the session's TimeZone.
        config.options_mut().execution.time_zone = Some("+00:00".into());
        let base = SessionContext::new_with_config(config);
        base.register_udf(checked::checked_int_udf().as_ref().clone());
        base.register_udf(checked::divisor_udf().as_ref().clone());
        base.register_udf(ScalarUDF::new_from_impl(checked::ModFn::default()));
        base.register_udf(interval_ops::interval_scale_udf());
        base.register_udf(interval_ops::justify_hours_udf());
        base.register_udf(avg_merge::avg_merge_udf());
        // PostgreSQL's `sign` is `signum`.
        base.register_udf(
            datafusion::functions::math::signum()
                .as_ref()
                .clone()
                .with_aliases(["sign"]),
        );
        // PostgreSQL's `every` is `bool_and`.
        base.register_udaf(
            datafusion::functions_aggregate::bool_and_or::bool_and_udaf()
                .as_ref()
                .clone()
                .with_aliases(["every"]),
        );
        interval_ops::IntervalArithmetic::install(&base);
        base.add_analyzer_rule(Arc::new(checked::CheckedArithmeticRule::default()));
        let schema = Arc::new(QuiverSchema::new(engine.clone(), base.state()));
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema("public", schema.clone())
            .map_err(SqlError::from)?;
        catalog
            .register_schema(
                info_schema::INFORMATION_SCHEMA,
                Arc::new(info_schema::InfoSchema::new(
                    base.state().catalog_list().clone(),
                    engine.clone(),
                )),
            )
            .map_err(SqlError::from)?;
        base.register_catalog(CATALOG, catalog);
        crate::meta::sql::install(&base, &schema, opts.cluster.clone())?;
        let cluster = opts.cluster.clone().map(|api| {
            crate::dist::Cluster::new(
                api,
                crate::dist::client::PoolSettings::from_settings(&opts.setting_defaults),
            )
        });
        if let Some(c) = &cluster {
            base.add_optimizer_rule(std::sync::Arc::new(
                crate::dist::pushdown::FragmentPushdown::new(c.clone()),
            ));
            schema.set_cluster(c.clone());
            crate::dist::catalog::install(&schema, c);
            crate::dist::catalog::install_functions(&base, c);
        }
        setup_pg_catalog(&base, CATALOG, pg_functions::Roles)
            .map_err(|e| SqlError::new("XX000", format!("pg_catalog setup: {e}")))?;
        // After pg_catalog's, which has a `quote_ident` that never quotes.
        for f in pg_strings::string_udfs() {
            base.register_udf(f);
        }
        base.register_udf(at_time_zone::timezone_udf());
        // After pg_catalog's own type planner, which it wraps.
        type_planner::QuiverTypePlanner::install(&base);
        pg_attribute::install(&base, CATALOG, engine.clone())?;
        pg_keys::install_functions(&base, &engine);
        pg_functions::install(&base);
        for t in &opts.external_tables {
            let path = t.path.to_string_lossy().to_string();
            let r = if t.csv {
                base.register_csv(&t.name, &path, CsvReadOptions::new().has_header(true))
                    .await
            } else {
                base.register_parquet(&t.name, &path, ParquetReadOptions::default())
                    .await
            };
            r.map_err(|e| {
                SqlError::new(
                    "58030",
                    format!("external table \"{}\" ({path}): {e}", t.name),
                )
            })?;
        }
        Ok(Arc::new(Database {
            engine,
            cluster,
            base,
            schema,
            parser: PostgresCompatibilityParser::new(),
            subqueries: subqueries::SubqueryKeeper::default(),
            rows_written: AtomicU64::new(0),
            setting_defaults: opts.setting_defaults.clone(),
        }))
    }

    /// A new session with its own DataFusion context and transaction.
    pub fn session(self: &Arc<Self>) -> Session {
        let txn = Arc::new(TxnContext::new(self.engine.clone()));
        let mut state = self.base.state();
        state.config_mut().set_extension(txn.clone());
        let ctx = SessionContext::new_with_state(state);
        let session = Session::new(self.clone(), ctx, txn);
        for (k, v) in &self.setting_defaults {
            session.settings.set_default(k, v);
        }
        // Scans read the executor settings (`quiver.max_adaptive_...`).
        session
            .ctx
            .state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::new(session.settings.clone()));
        session
    }

    /// Makes `table` readable by `name` in every session (a shuffle's
    /// intermediate result on a worker).
    pub fn put_external(&self, name: &str, table: Arc<dyn datafusion::catalog::TableProvider>) {
        self.schema.add_external(name, table);
    }

    /// Forgets a table added with [`Self::put_external`].
    pub fn remove_external(&self, name: &str) {
        self.schema.remove_external(name);
    }

    pub(crate) fn note_rows_written(&self, n: u64) {
        self.rows_written.fetch_add(n, Ordering::Relaxed);
    }

    /// Rows committed through this node since start.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }
}
