//! The node's HTTP server on `http_port` (6432): `/healthz` (the process is
//! alive), `/readyz` (the node accepts queries), `/metrics` (Prometheus) and a
//! merge point for the admin REST API and web UI. Kubernetes probes and
//! Prometheus scrapes are its main clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};
use super::shutdown::ShutdownSignal;

/// Errors from the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Serving failed.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The local address, or `?` when unknown.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Whether the node accepts queries, and if not, why. Starts "not ready:
/// starting"; the lifecycle sets it ready once every listener and the
/// storage engine are up, and not ready again when shutdown begins.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready, reason "starting".
    pub fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            reason: Mutex::new("starting".to_owned()),
        }
    }

    /// Marks the node ready.
    pub fn set_ready(&self) {
        self.reason.lock().clear();
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the node not ready, with a reason shown by `/readyz`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock();
        *r = reason.into();
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else the reason.
    pub fn status(&self) -> Result<(), String> {
        let reason = self.reason.lock();
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(reason.clone())
        }
    }
}

/// What the built-in handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Drives `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The built-in routes merged with `extra` (admin REST, web UI; pass
/// `Router::new()` for none). `extra` must not define the built-in paths.
pub fn build_router(readiness: Arc<Readiness>, metrics: Arc<Metrics>, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(HttpState { readiness, metrics })
        .merge(extra)
}

/// Serves `app` on `listener` until `shutdown` fires, then finishes the
/// requests in progress and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: ShutdownSignal,
) -> Result<(), HttpError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait_owned())
        .await
        .map_err(|source| HttpError::Serve { addr, source })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.readiness.status() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render /metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_answer_and_shutdown_stops_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Arc::new(Readiness::new());
        let metrics = Arc::new(Metrics::new());
        let extra = Router::new().route("/admin/ping", get(|| async { "pong" }));
        let app = build_router(readiness.clone(), metrics, extra);
        let shutdown = ShutdownSignal::new();
        let server = tokio::spawn(serve(listener, app, shutdown.clone()));

        let r = http_get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
        let r = http_get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("not ready: starting"),
            "{r}"
        );
        readiness.set_ready();
        let r = http_get(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = http_get(addr, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains(OPENMETRICS_CONTENT_TYPE), "{r}");
        assert!(r.contains("quiver_queries_total{kind=\"select\"} 0"), "{r}");
        let r = http_get(addr, "/admin/ping").await;
        assert!(r.ends_with("pong"), "{r}");
        readiness.set_not_ready("shutting down");
        let r = http_get(addr, "/readyz").await;
        assert!(r.contains("not ready: shutting down"), "{r}");

        shutdown.trigger();
        server.await.unwrap().unwrap();
    }
}
