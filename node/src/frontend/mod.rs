//! The PostgreSQL wire-protocol front end (built on `pgwire`).
//!
//! One accept loop; each socket gets its own handler set and [`Session`], so
//! a malformed or oversized message ends that connection only. TLS is
//! offered when a certificate and key are configured; authentication is
//! trust (loopback only) or SCRAM-SHA-256.

pub mod auth;
pub mod batching;
pub mod copy_in;
pub mod framing;
pub mod handler;
pub mod numeric;
pub mod params;
pub mod results;
pub mod rows;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::server::metrics::Metrics;
use crate::server::shutdown::{InFlight, ShutdownSignal};
use crate::sql::Database;
use auth::{ScramSecret, Startup};
use handler::{Conn, Handler};

/// Errors of the front end.
#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid TLS certificate or key: {0}")]
    Tls(String),
}

/// How the front end authenticates and encrypts.
#[derive(Clone, Default)]
pub struct FrontendOptions {
    /// `Some` = SCRAM-SHA-256 with this password; `None` = trust.
    pub password: Option<String>,
    pub tls: Option<TlsAcceptor>,
}

/// Loads a PEM certificate chain and private key for TLS.
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, FrontendError> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|source| FrontendError::TlsFile {
                path: p.display().to_string(),
                source,
            })
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<CertificateDer>, _>>()
        .map_err(|e| FrontendError::Tls(e.to_string()))?;
    if certs.is_empty() {
        return Err(FrontendError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key: PrivateKeyDer = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| FrontendError::Tls(e.to_string()))?
        .ok_or_else(|| FrontendError::Tls(format!("no private key in {}", key.display())))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| FrontendError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

struct ConnHandlers {
    handler: Arc<Handler>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: pgwire::api::ClientInfo,
    {
        tracing::debug!(error = %error, "statement error");
    }
}

impl PgWireServerHandlers for ConnHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Accepts connections until `shutdown` fires. In-flight statements are
/// tracked by `in_flight` so the caller can drain them.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    opts: FrontendOptions,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    shutdown: ShutdownSignal,
) {
    let manager = Arc::new(ConnectionManager::new());
    let cancel = Arc::new(DefaultCancelHandler::new(manager.clone()));
    let secret = opts
        .password
        .as_deref()
        .map(|p| Arc::new(ScramSecret::new(p)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let cork = batching::Cork::for_socket(&socket);
        let conn = Conn::new(db.session(), metrics.clone(), in_flight.clone(), cork);
        let handlers = ConnHandlers {
            handler: Arc::new(Handler::new(conn)),
            startup: Arc::new(Startup::new(secret.as_ref(), &manager)),
            cancel: cancel.clone(),
        };
        let tls = opts.tls.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.connection_opened();
            if let Err(e) = framing::serve_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            metrics.connection_closed();
        });
    }
}
