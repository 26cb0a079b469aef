//! The database part of a running node: opens the storage engine, builds
//! the SQL layer, serves pgwire, and checkpoints in the background. On
//! shutdown it takes a final checkpoint so the WAL is folded into parts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::config::{AuthMode, NodeConfig, TableFormat};
use super::metrics::Metrics;
use super::shutdown::{InFlight, ShutdownSignal};
use super::ServerError;
use crate::frontend::{self, FrontendOptions};
use crate::meta::MetaApi;
use crate::sql::{Database, DatabaseOptions, ExternalTable};
use crate::storage::wal::WalObserver;
use crate::storage::{Engine, EngineOptions};

/// Checkpoint when this many WAL bytes accumulated...
const CHECKPOINT_WAL_BYTES: u64 = 256 << 20;
/// ...or when there is any WAL and this much time passed.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

struct WalMetrics(Arc<Metrics>);

impl WalObserver for WalMetrics {
    fn fsynced(&self, bytes: u64) {
        self.0.inc_wal_fsync();
        self.0.add_wal_bytes(bytes);
    }
}

/// A running database service.
pub struct DatabaseService {
    pub db: Arc<Database>,
    frontend: Option<JoinHandle<()>>,
    checkpointer: JoinHandle<()>,
}

fn storage_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Storage(e.to_string())
}

/// Opens storage and starts serving `pgwire` (when given a listener).
/// Session setting defaults from the config file.
fn setting_defaults(config: &NodeConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(n) = config.sharding.shard_count {
        out.push(("quiver.shard_count".to_owned(), n.to_string()));
    }
    if let Some(n) = config.sharding.replication_factor {
        out.push(("quiver.shard_replication_factor".to_owned(), n.to_string()));
    }
    out.extend(config.executor.setting_defaults());
    out
}

pub async fn start(
    config: &NodeConfig,
    pgwire: Option<TcpListener>,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    shutdown: ShutdownSignal,
    cluster: Option<Arc<MetaApi>>,
) -> Result<DatabaseService, ServerError> {
    let dir = config.data_dir.clone();
    let observer: Arc<dyn WalObserver> = Arc::new(WalMetrics(metrics.clone()));
    let started = Instant::now();
    let engine = tokio::task::spawn_blocking(move || {
        Engine::open(
            &dir,
            EngineOptions {
                observer: Some(observer),
            },
        )
    })
    .await
    .map_err(storage_err)?
    .map_err(storage_err)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "storage recovered"
    );

    let external_tables = config
        .tables
        .iter()
        .map(|t| ExternalTable {
            name: t.name.clone(),
            path: t.path.clone(),
            csv: matches!(t.format, TableFormat::Csv),
        })
        .collect();
    let db = Database::open(
        engine.clone(),
        DatabaseOptions {
            target_partitions: 0,
            external_tables,
            cluster,
            setting_defaults: setting_defaults(config),
        },
    )
    .await
    .map_err(storage_err)?;

    let frontend = match pgwire {
        Some(listener) => {
            let tls = match (&config.tls_cert, &config.tls_key) {
                (Some(c), Some(k)) => Some(frontend::load_tls(c, k).map_err(storage_err)?),
                _ => None,
            };
            let password = match config.auth_mode() {
                AuthMode::Scram => config.password.clone(),
                AuthMode::Trust => None,
            };
            let opts = FrontendOptions { password, tls };
            Some(tokio::spawn(frontend::serve(
                listener,
                db.clone(),
                opts,
                metrics.clone(),
                in_flight,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let checkpointer = tokio::spawn(checkpoint_loop(db.clone(), metrics, shutdown));
    Ok(DatabaseService {
        db,
        frontend,
        checkpointer,
    })
}

/// Once a second: publishes storage gauges and rows written, and
/// checkpoints when the WAL is large or old enough.
async fn checkpoint_loop(db: Arc<Database>, metrics: Arc<Metrics>, shutdown: ShutdownSignal) {
    let engine = db.engine.clone();
    let mut rows_reported = 0u64;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        let rows = db.rows_written();
        metrics.add_rows_written(rows - rows_reported);
        rows_reported = rows;
        let wal = engine.wal_bytes();
        metrics.set_storage_bytes(engine.disk_bytes() + wal);
        if wal == 0 || (wal < CHECKPOINT_WAL_BYTES && last.elapsed() < CHECKPOINT_INTERVAL) {
            continue;
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.checkpoint()).await {
            Ok(Ok(stats)) => {
                tracing::info!(
                    lsn = stats.lsn,
                    parts = stats.parts_written,
                    compacted = stats.tables_compacted,
                    "checkpoint"
                );
                metrics.set_storage_bytes(stats.disk_bytes);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
        last = Instant::now();
    }
}

impl DatabaseService {
    /// Stops serving and folds the WAL into parts (after in-flight
    /// statements have drained).
    pub async fn stop(self) -> Result<(), ServerError> {
        if let Some(f) = self.frontend {
            f.abort();
        }
        self.checkpointer.abort();
        let engine = self.db.engine.clone();
        if engine.wal_bytes() > 0 {
            tokio::task::spawn_blocking(move || engine.checkpoint())
                .await
                .map_err(storage_err)?
                .map_err(storage_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharding_config_sets_session_defaults() {
        let mut config = NodeConfig::default();
        assert!(setting_defaults(&config).is_empty());
        config.sharding.shard_count = Some(8);
        config.sharding.replication_factor = Some(2);
        assert_eq!(
            setting_defaults(&config),
            vec![
                ("quiver.shard_count".to_owned(), "8".to_owned()),
                ("quiver.shard_replication_factor".to_owned(), "2".to_owned())
            ]
        );
    }
}
