//! The coordinator's Flight connections to workers.
//!
//! Step in the flow: scans, writes and the two-phase commit call workers
//! through one shared [`WorkerClients`]. It keeps up to
//! `quiver.max_cached_conns_per_worker` HTTP/2 connections per worker
//! (opened lazily, reused round-robin; each carries many concurrent calls)
//! and bounds the calls in flight to one worker with
//! `quiver.max_shared_pool_size` (0: no bound). A worker that cannot be
//! reached fails the call within the connect timeout with an error naming
//! it, instead of hanging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Channel, Endpoint};

use super::wire::{sql_of, Action, ActionReply, PutCommand, QueryTicket};
use super::worker::MAX_MESSAGE_BYTES;
use crate::sql::SqlError;

/// How long connecting to a worker may take before the call fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Pauses before the retries of a call whose connection could not be made.
/// Nothing reached the worker then, so any call may be retried; this rides
/// out a restarted worker's name or address not yet being resolvable (its
/// heartbeats reach the coordinator before the coordinator can reach it).
const CONNECT_RETRY_PAUSES: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// Whether `e` says the connection to the worker could not be made (name
/// resolution, refused or timed-out connect): the call was not sent.
fn is_connect_error(e: &FlightError) -> bool {
    let FlightError::Tonic(status) = e else {
        return false;
    };
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status.as_ref());
    while let Some(s) = source {
        text.push_str(&s.to_string().to_ascii_lowercase());
        source = s.source();
    }
    [
        "dns error",
        "tcp connect error",
        "error trying to connect",
        "connection refused",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// Runs `call` again after each pause while it fails to connect.
async fn retry_connect<T, F, Fut>(mut call: F) -> Result<T, FlightError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, FlightError>>,
{
    let mut pauses = CONNECT_RETRY_PAUSES.iter();
    loop {
        match call().await {
            Err(e) if is_connect_error(&e) => match pauses.next() {
                Some(p) => tokio::time::sleep(*p).await,
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Pool limits (the `quiver.*` settings of the same names).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_cached_conns_per_worker: usize,
    /// 0: unbounded.
    pub max_shared_pool_size: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_cached_conns_per_worker: 1,
            max_shared_pool_size: 0,
        }
    }
}

impl PoolSettings {
    /// The node-wide pool from the config's setting defaults
    /// (`quiver.max_cached_conns_per_worker`, `quiver.max_shared_pool_size`).
    pub fn from_settings(defaults: &[(String, String)]) -> Self {
        let get = |name: &str| {
            defaults
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        let d = PoolSettings::default();
        PoolSettings {
            max_cached_conns_per_worker: get("quiver.max_cached_conns_per_worker")
                .unwrap_or(d.max_cached_conns_per_worker)
                .max(1),
            max_shared_pool_size: get("quiver.max_shared_pool_size")
                .unwrap_or(d.max_shared_pool_size),
        }
    }
}

#[derive(Debug)]
struct Pool {
    channels: Vec<Channel>,
    next: usize,
    limit: Arc<Semaphore>,
}

/// Connections to every worker, by `host:port`.
#[derive(Debug)]
pub struct WorkerClients {
    settings: PoolSettings,
    pools: Mutex<HashMap<String, Pool>>,
}

/// An error from `addr` while doing `what`: the worker's own SQL error with
/// its SQLSTATE, or 08006 naming the node when it cannot be reached.
pub fn remote_error(addr: &str, what: &str, e: FlightError) -> SqlError {
    let status = match e {
        FlightError::Tonic(s) => *s,
        other => {
            return SqlError::new("08006", format!("worker {addr} ({what}): {other}"));
        }
    };
    if let Some(sql) = sql_of(&status) {
        return sql;
    }
    let reason = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            "is unreachable"
        }
        _ => "failed",
    };
    SqlError::new(
        "08006",
        format!("worker {addr} {reason} while {what}: {}", status.message()),
    )
}

impl WorkerClients {
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(WorkerClients {
            settings,
            pools: Mutex::new(HashMap::new()),
        })
    }

    fn client(
        &self,
        addr: &str,
    ) -> Result<(FlightServiceClient<Channel>, Arc<Semaphore>), SqlError> {
        let mut pools = self.pools.lock();
        let pool = match pools.get_mut(addr) {
            Some(p) => p,
            None => {
                let limit = match self.settings.max_shared_pool_size {
                    0 => Semaphore::MAX_PERMITS,
                    n => n,
                };
                pools.entry(addr.to_owned()).or_insert(Pool {
                    channels: Vec::new(),
                    next: 0,
                    limit: Arc::new(Semaphore::new(limit)),
                })
            }
        };
        if pool.channels.len() < self.settings.max_cached_conns_per_worker.max(1) {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| SqlError::new("08006", format!("worker address {addr}: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10));
            pool.channels.push(endpoint.connect_lazy());
        }
        let channel = pool.channels[pool.next % pool.channels.len()].clone();
        pool.next = pool.next.wrapping_add(1);
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok((inner, pool.limit.clone()))
    }

    async fn permit(limit: Arc<Semaphore>) -> Result<OwnedSemaphorePermit, SqlError> {
        limit
            .acquire_owned()
            .await
            .map_err(|_| SqlError::new("57P01", "worker pool closed"))
    }

    /// Runs a query fragment on `addr`; the rows stream as they come. The
    /// returned permit must live as long as the stream.
    pub async fn query(
        &self,
        addr: &str,
        ticket: &QueryTicket,
    ) -> Result<(FlightRecordBatchStream, OwnedSemaphorePermit), SqlError> {
        let (inner, limit) = self.client(addr)?;
        let permit = Self::permit(limit).await?;
        let body = serde_json::to_vec(ticket).map_err(|e| SqlError::new("XX000", e.to_string()))?;
        let body = Bytes::from(body);
        let stream = retry_connect(|| {
            let mut client = FlightClient::new_from_inner(inner.clone());
            let ticket = Ticket {
                ticket: body.clone(),
            };
            async move { client.do_get(ticket).await }
        })
        .await
        .map_err(|e| remote_error(addr, "running a query fragment", e))?;
        Ok((stream, permit))
    }

    /// Stages `batches` on `addr` for shard table `cmd.table`.
    pub async fn put(
        &self,
        addr: &str,
        cmd: &PutCommand,
        batches: Vec<RecordBatch>,
    ) -> Result<u64, SqlError> {
        self.put_with_schema(addr, cmd, None, batches).await
    }

    /// [`Self::put`], sending `schema` first (so no batches still carry it).
    pub async fn put_with_schema(
        &self,
        addr: &str,
        cmd: &PutCommand,
        schema: Option<datafusion::arrow::datatypes::SchemaRef>,
        batches: Vec<RecordBatch>,
    ) -> Result<u64, SqlError> {
        let (inner, limit) = self.client(addr)?;
        let _permit = Self::permit(limit).await?;
        let body = serde_json::to_vec(cmd).map_err(|e| SqlError::new("XX000", e.to_string()))?;
        let body = Bytes::from(body);
        let what = format!("writing to {}", cmd.table);
        let replies: Vec<_> = retry_connect(|| {
            let mut client = FlightClient::new_from_inner(inner.clone());
            let mut encoder = FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(FlightDescriptor::new_cmd(body.clone())));
            if let Some(schema) = &schema {
                encoder = encoder.with_schema(schema.clone());
            }
            let data = encoder.build(futures::stream::iter(batches.clone().into_iter().map(Ok)));
            async move { client.do_put(data).await }
        })
        .await
        .map_err(|e| remote_error(addr, &what, e))?
        .try_collect()
        .await
        .map_err(|e| remote_error(addr, &what, e))?;
        let mut rows = 0;
        for r in replies {
            let reply: ActionReply = serde_json::from_slice(&r.app_metadata)
                .map_err(|e| SqlError::new("XX000", format!("worker {addr}: bad reply: {e}")))?;
            rows += reply.rows;
        }
        Ok(rows)
    }

    /// The raw Flight messages of `do_get` ticket `body` on `addr`, outside
    /// the connection limit (a shard move's copy, [`super::worker_move`]).
    pub async fn raw_get(
        &self,
        addr: &str,
        body: Vec<u8>,
    ) -> Result<tonic::Streaming<arrow_flight::FlightData>, SqlError> {
        let (mut inner, _) = self.client(addr)?;
        let ticket = Ticket {
            ticket: Bytes::from(body),
        };
        inner
            .do_get(ticket)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| remote_error(addr, "copying a shard", FlightError::Tonic(Box::new(s))))
    }

    /// Runs `action` on `addr`, within the worker's connection limit.
    pub async fn action(&self, addr: &str, action: &Action) -> Result<ActionReply, SqlError> {
        let (inner, limit) = self.client(addr)?;
        let _permit = Self::permit(limit).await?;
        Self::call(addr, inner, action).await
    }

    /// Runs a small control `action` on `addr` outside the connection limit
    /// (the deadlock detector must reach a worker whose every connection
    /// waits for a lock).
    pub async fn control(&self, addr: &str, action: &Action) -> Result<ActionReply, SqlError> {
        let (inner, _) = self.client(addr)?;
        Self::call(addr, inner, action).await
    }

    async fn call(
        addr: &str,
        inner: FlightServiceClient<Channel>,
        action: &Action,
    ) -> Result<ActionReply, SqlError> {
        let body = serde_json::to_vec(action).map_err(|e| SqlError::new("XX000", e.to_string()))?;
        let body = Bytes::from(body);
        let what = action.kind();
        let replies: Vec<Bytes> = retry_connect(|| {
            let mut client = FlightClient::new_from_inner(inner.clone());
            let action = arrow_flight::Action {
                r#type: what.into(),
                body: body.clone(),
            };
            async move { client.do_action(action).await }
        })
        .await
        .map_err(|e| remote_error(addr, what, e))?
        .try_collect()
        .await
        .map_err(|e| remote_error(addr, what, e))?;
        match replies.first() {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| SqlError::new("XX000", format!("worker {addr}: bad reply: {e}"))),
            None => Ok(ActionReply::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_failures_are_retried_and_others_are_not() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let unreachable = || {
            FlightError::Tonic(Box::new(tonic::Status::unavailable(
                "error trying to connect: dns error",
            )))
        };
        let got = retry_connect(|| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(unreachable())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 2);
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let failed: Result<(), _> = retry_connect(|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Err(FlightError::Tonic(Box::new(tonic::Status::internal(
                    "boom",
                ))))
            }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_port_fails_after_the_retries_naming_the_worker() {
        // Bind, learn a free port, close it: nothing listens there.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let clients = WorkerClients::new(PoolSettings::default());
        let ticket = QueryTicket {
            sql: "SELECT 1".into(),
            tables: Vec::new(),
            gid: None,
            snapshot: None,
        };
        let started = std::time::Instant::now();
        let err = clients.query(&addr, &ticket).await.err().unwrap();
        let waited: Duration = CONNECT_RETRY_PAUSES.iter().sum();
        assert!(started.elapsed() >= waited, "{:?}", started.elapsed());
        assert_eq!(err.sqlstate, "08006");
        assert!(err.message.contains(&addr), "{}", err.message);
        assert!(err.message.contains("unreachable"), "{}", err.message);
    }

    #[test]
    fn pool_from_config_defaults() {
        let d = PoolSettings::from_settings(&[]);
        assert_eq!(d.max_cached_conns_per_worker, 1);
        let s = PoolSettings::from_settings(&[
            ("quiver.max_cached_conns_per_worker".into(), "4".into()),
            ("quiver.max_shared_pool_size".into(), "64".into()),
        ]);
        assert_eq!(
            (s.max_cached_conns_per_worker, s.max_shared_pool_size),
            (4, 64)
        );
    }
}
