//! Process lifecycle, the stop half: a [`ShutdownSignal`] that every long-running
//! task watches (it fires on SIGTERM, SIGINT or a programmatic
//! [`ShutdownSignal::trigger`]), and an [`InFlight`] tracker so that the node
//! can stop taking new queries, let the running ones finish, then flush and
//! exit 0.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Errors from installing the signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The OS refused a signal handler.
    #[error("cannot install a handler for {signal}: {source}")]
    Install {
        /// `SIGTERM` or `SIGINT`.
        signal: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Why the node is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// SIGTERM arrived (Kubernetes, `kill`).
    Terminate,
    /// SIGINT arrived (Ctrl-C).
    Interrupt,
    /// Code called [`ShutdownSignal::trigger`].
    Requested,
}

impl ShutdownReason {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::Terminate => "SIGTERM",
            ShutdownReason::Interrupt => "SIGINT",
            ShutdownReason::Requested => "shutdown requested",
        }
    }
}

/// A cloneable "stop now" flag. Every clone sees the same state; once
/// triggered it stays triggered.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    tx: Arc<watch::Sender<Option<ShutdownReason>>>,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(None);
        Self { tx: Arc::new(tx) }
    }

    /// Fires the signal (idempotent: the first reason is kept).
    pub fn trigger(&self) {
        self.fire(ShutdownReason::Requested);
    }

    fn fire(&self, reason: ShutdownReason) {
        self.tx.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Why the signal fired, if it has.
    pub fn reason(&self) -> Option<ShutdownReason> {
        *self.tx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    /// Sleeps for `d`; false when the signal fires first (a background
    /// loop then stops).
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.wait() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    pub async fn wait(&self) -> ShutdownReason {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            // The sender lives in `self`, so the channel cannot close while
            // we wait; an error would only mean it did, and then we stop.
            if rx.changed().await.is_err() {
                return ShutdownReason::Requested;
            }
        }
    }

    /// An owned future for APIs that need `'static` (e.g. axum's graceful
    /// shutdown).
    pub fn wait_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            this.wait().await;
        }
    }

    /// Installs SIGTERM and SIGINT handlers that fire this signal. Must be
    /// called inside a Tokio runtime. Call it early: from then on the signals
    /// no longer kill the process outright.
    pub fn listen_for_os_signals(&self) -> Result<(), ShutdownError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|source| ShutdownError::Install {
                signal: "SIGTERM",
                source,
            })?;
        let mut int = signal(SignalKind::interrupt()).map_err(|source| ShutdownError::Install {
            signal: "SIGINT",
            source,
        })?;
        let this = self.clone();
        tokio::spawn(async move {
            let reason = tokio::select! {
                _ = term.recv() => ShutdownReason::Terminate,
                _ = int.recv() => ShutdownReason::Interrupt,
            };
            tracing::info!(signal = reason.as_str(), "shutdown signal received");
            this.fire(reason);
            // Keep the handlers installed so that a second signal during the
            // drain does not kill the process before it has flushed.
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::warn!("already shutting down; waiting for in-flight work to finish");
            }
        });
        Ok(())
    }
}

#[derive(Debug, Default)]
struct InFlightState {
    active: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

/// Counts running queries. Cheap to clone; every clone shares the count.
///
/// The frontend calls [`InFlight::try_enter`] before it runs a statement and
/// keeps the guard until the result is sent; shutdown calls
/// [`InFlight::close`] and then [`InFlight::wait_idle`].
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    state: Arc<InFlightState>,
}

/// One running query; dropping it ends the query's count.
#[derive(Debug)]
#[must_use = "the query counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    state: Arc<InFlightState>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.state.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// A tracker with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a query as running, even after [`InFlight::close`].
    pub fn enter(&self) -> InFlightGuard {
        self.state.active.fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            state: Arc::clone(&self.state),
        }
    }

    /// Counts a query as running unless the tracker is closed (the node is
    /// draining), in which case the caller should refuse the query.
    pub fn try_enter(&self) -> Option<InFlightGuard> {
        let guard = self.enter();
        if self.state.closed.load(Ordering::Acquire) {
            // Dropping the guard undoes the count and wakes a waiter.
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Refuses new queries from now on (see [`InFlight::try_enter`]).
    pub fn close(&self) {
        self.state.closed.store(true, Ordering::Release);
    }

    /// Whether [`InFlight::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    /// How many queries are running.
    pub fn active(&self) -> usize {
        self.state.active.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight; `false` if `timeout` passed first.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.idle()).await.is_ok()
    }

    async fn idle(&self) {
        loop {
            let notified = self.state.idle.notified();
            tokio::pin!(notified);
            // Register before checking so a guard dropped in between still
            // wakes us.
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_fires_once_for_every_clone() {
        let s = ShutdownSignal::new();
        let clone = s.clone();
        assert!(!clone.is_triggered());
        let waiter = tokio::spawn(clone.wait_owned());
        s.trigger();
        waiter.await.unwrap();
        assert!(clone.is_triggered());
        assert_eq!(clone.reason(), Some(ShutdownReason::Requested));
        // Already fired: resolves at once.
        assert_eq!(s.wait().await, ShutdownReason::Requested);
    }

    #[tokio::test]
    async fn wait_idle_waits_for_guards() {
        let t = InFlight::new();
        assert!(t.wait_idle(Duration::from_millis(1)).await);
        let g1 = t.enter();
        let g2 = t.try_enter().unwrap();
        assert_eq!(t.active(), 2);
        t.close();
        assert!(t.try_enter().is_none());
        assert_eq!(t.active(), 2);
        assert!(!t.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait_idle(Duration::from_secs(10)).await })
        };
        drop(g1);
        tokio::task::yield_now().await;
        drop(g2);
        assert!(waiter.await.unwrap());
        assert_eq!(t.active(), 0);
    }
}
