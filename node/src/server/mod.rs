//! Process-level pieces of a node: configuration, HTTP endpoints, metrics and
//! the start/stop lifecycle.
//!
//! [`run`] is what the `quiver` binary calls once its flags are resolved into
//! a [`NodeConfig`]: it installs the signal handlers, binds every listener
//! first (so a port in use fails fast with one clear line), starts the
//! services, marks the node ready, and on SIGTERM drains and stops them in
//! reverse order. Errors are [`ServerError`]s whose `Display` is one line.

pub mod cluster;
pub mod config;
pub mod executor;
pub mod http;
pub mod metrics;
pub mod node;
pub mod shutdown;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::{AuthMode, ConfigError, NodeConfig, Role};
pub use http::Readiness;
pub use metrics::{Metrics, QueryKind};
pub use shutdown::{InFlight, InFlightGuard, ShutdownSignal};

/// How long shutdown waits for in-flight queries before it stops anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// How long shutdown waits for open HTTP requests.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that stop the node. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// `host:port` as configured.
        addr: String,
        /// A short description, e.g. `address already in use`.
        reason: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The data directory could not be created or written.
    #[error("data directory \"{}\" is not writable: {source}", path.display())]
    DataDirNotWritable {
        /// The configured data directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The data directory could not be listed.
    #[error("data directory \"{}\" is not readable: {source}", path.display())]
    DataDirNotReadable {
        /// The configured data directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The data directory path names something that is not a directory.
    #[error("data directory \"{}\" is not a directory", path.display())]
    DataDirNotADirectory {
        /// The configured data directory.
        path: PathBuf,
    },
    /// Signal handlers could not be installed.
    #[error(transparent)]
    Signals(#[from] shutdown::ShutdownError),
    /// The HTTP server failed while running.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The storage engine or SQL layer could not start or stop.
    #[error("storage: {0}")]
    Storage(String),
    /// The metadata Raft member could not start or stop.
    #[error("metadata: {0}")]
    Meta(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(String),
    /// A background task panicked or was cancelled.
    #[error("{task} task failed: {source}")]
    Task {
        /// Which task.
        task: &'static str,
        /// The join error.
        source: tokio::task::JoinError,
    },
}

/// Binds a TCP listener on `addr` (`host:port`), with an error that says
/// which address and why in plain words.
pub async fn bind_tcp(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            reason: describe_bind_error(&source),
            source,
        })
}

fn describe_bind_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// Creates the data directory if it is missing and checks that it can be
/// listed and written (by creating and removing a probe file).
pub fn prepare_data_dir(path: &Path) -> Result<(), ServerError> {
    let not_writable = |source| ServerError::DataDirNotWritable {
        path: path.to_owned(),
        source,
    };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        return Err(ServerError::DataDirNotADirectory {
            path: path.to_owned(),
        });
    }
    std::fs::create_dir_all(path).map_err(not_writable)?;
    let meta = std::fs::metadata(path).map_err(|source| ServerError::DataDirNotReadable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ServerError::DataDirNotADirectory {
            path: path.to_owned(),
        });
    }
    std::fs::read_dir(path).map_err(|source| ServerError::DataDirNotReadable {
        path: path.to_owned(),
        source,
    })?;
    let probe = path.join(format!(".quiver-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    Ok(())
}

/// Runs a node until SIGTERM/SIGINT, then stops it cleanly.
pub async fn run(config: NodeConfig) -> Result<(), ServerError> {
    let shutdown = ShutdownSignal::new();
    shutdown.listen_for_os_signals()?;
    let readiness = Arc::new(Readiness::new());
    let metrics = Arc::new(Metrics::new());
    run_with(config, readiness, metrics, shutdown).await
}

/// [`run`] with the shared pieces supplied by the caller (tests, embedders):
/// the node stops when `shutdown` fires.
pub async fn run_with(
    config: NodeConfig,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    shutdown: ShutdownSignal,
) -> Result<(), ServerError> {
    config.validate()?;
    tracing::info!(
        role = %config.role,
        data_dir = %config.data_dir.display(),
        auth = ?config.auth_mode(),
        "starting quiver node"
    );

    // Bind every listener before starting anything, so a port in use fails
    // at once and before storage recovery.
    let http_listener = bind_tcp(&config.http_addr()).await?;
    let pgwire_listener = if config.role.serves_pgwire() {
        Some(bind_tcp(&config.pgwire_addr()).await?)
    } else {
        None
    };
    // Standalone nodes open no rpc port: no Raft, no gRPC.
    let rpc_listener = if config.role == Role::Standalone {
        None
    } else {
        Some(bind_tcp(&config.rpc_addr()).await?)
    };
    let rpc_port = match &rpc_listener {
        Some(l) => l.local_addr().map_or(config.rpc_port, |a| a.port()),
        None => config.rpc_port,
    };
    let in_flight = InFlight::new();

    let meta = match config.role {
        Role::Coordinator => Some(cluster::start_meta(&config, rpc_port).await?),
        _ => None,
    };

    let database = node::start(
        &config,
        pgwire_listener,
        metrics.clone(),
        Arc::new(in_flight.clone()),
        shutdown.clone(),
        meta.clone(),
    )
    .await?;

    // Workers serve their shards over Arrow Flight on the rpc port.
    let flight = if config.role == Role::Worker {
        let txns = crate::dist::worker_txn::WorkerTxns::open(database.db.clone(), &config.data_dir)
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        Some(crate::dist::worker::WorkerFlight::new(
            database.db.clone(),
            txns,
        ))
    } else {
        None
    };
    let mut grpc_task = rpc_listener.map(|l| {
        log_listening("grpc", &config.rpc_addr());
        cluster::serve_grpc(l, meta.clone(), flight, shutdown.clone())
    });
    if let Some(api) = &meta {
        cluster::wait_for_leadership(api, &config).await;
    }
    // Coordinators resolve distributed transactions left by a crash, and
    // break deadlocks between workers.
    if let Some(c) = database.db.cluster.clone() {
        tokio::spawn(
            c.clone()
                .recovery_loop(Duration::from_secs(5), shutdown.clone()),
        );
        tokio::spawn(
            c.clone()
                .move_loop(Duration::from_secs(1), shutdown.clone()),
        );
        tokio::spawn(c.deadlock_loop(shutdown.clone()));
    }

    let app = http::build_router(readiness.clone(), metrics.clone(), axum::Router::new());
    let mut http_task = tokio::spawn(http::serve(http_listener, app, shutdown.clone()));
    log_listening("http", &config.http_addr());
    if config.role.serves_pgwire() {
        log_listening("pgwire", &config.pgwire_addr());
    }

    let worker_task = if config.role == Role::Worker {
        let me = cluster::WorkerIdentity::new(&config, rpc_port);
        tracing::info!(coordinator = %me.coordinator, "worker starting; registering with the coordinator");
        Some(tokio::spawn(cluster::worker_loop(
            me,
            readiness.clone(),
            shutdown.clone(),
        )))
    } else {
        readiness.set_ready();
        tracing::info!("node ready");
        None
    };

    let http_result = tokio::select! {
        reason = shutdown.wait() => {
            tracing::info!(reason = reason.as_str(), "shutting down");
            None
        }
        res = &mut http_task => Some(res),
    };
    readiness.set_not_ready("shutting down");
    in_flight.close();
    if !in_flight.wait_idle(DRAIN_TIMEOUT).await {
        tracing::warn!(
            active = in_flight.active(),
            "in-flight queries did not finish in time"
        );
    }

    if let Some(task) = worker_task {
        task.abort();
    }
    database.stop().await?;
    if let Some(task) = grpc_task.take() {
        shutdown.trigger();
        match tokio::time::timeout(HTTP_STOP_TIMEOUT, task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => tracing::warn!("gRPC calls still open at shutdown; closing them"),
        }
    }
    if let Some(api) = &meta {
        if let Err(e) = api.node().shutdown().await {
            tracing::warn!(error = %e, "metadata raft member did not stop cleanly");
        }
    }

    let http_result = match http_result {
        Some(res) => res,
        None => {
            shutdown.trigger();
            match tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut http_task).await {
                Ok(res) => res,
                Err(_) => {
                    tracing::warn!("HTTP requests still open at shutdown; closing them");
                    http_task.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    match http_result {
        Ok(res) => res?,
        Err(source) => {
            return Err(ServerError::Task {
                task: "http",
                source,
            })
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn log_listening(service: &'static str, addr: &str) {
    tracing::info!(service, %addr, "listening");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_error_is_one_clear_line() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind_tcp(&addr).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("cannot listen on {addr}: address already in use")
        );
    }

    #[test]
    fn data_dir_is_created_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare_data_dir(&dir).unwrap();
        assert!(dir.is_dir());
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_data_dir(&file.join("data"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("data directory \""), "{err}");
        assert!(err.contains("is not writable"), "{err}");
        assert!(!err.contains('\n'));
        let err = prepare_data_dir(&file).unwrap_err().to_string();
        assert!(err.contains("is not"), "{err}");
    }

    #[tokio::test]
    async fn run_with_serves_until_shutdown() {
        // Never the default ./quiver-data: that is the source tree here.
        let tmp = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            port: 0,
            http_port: 0,
            rpc_port: 0,
            data_dir: tmp.path().join("data"),
            ..Default::default()
        };
        let readiness = Arc::new(Readiness::new());
        let shutdown = ShutdownSignal::new();
        let node = tokio::spawn(run_with(
            config,
            readiness.clone(),
            Arc::new(Metrics::new()),
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !readiness.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.trigger();
        node.await.unwrap().unwrap();
        assert!(!readiness.is_ready());
    }
}
