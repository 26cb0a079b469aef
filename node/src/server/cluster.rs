//! The cluster side of a node's lifecycle: the gRPC server on `rpc_port`,
//! the metadata Raft member of a coordinator and a worker's registration.
//!
//! Step in the flow: [`super::run_with`] calls these by role.
//! - A **coordinator** opens a [`MetaNode`] under `<data_dir>/raft/`
//!   (bootstrapping a single-voter group when its Raft state is empty and it
//!   has no peers, or is ordinal 0) and serves `quiver.meta.v1` and
//!   `quiver.raft.v1` on one tonic server.
//! - A **worker** serves an (empty for now) tonic server on its rpc port,
//!   registers with `--coordinator-address`, retrying with backoff until a
//!   leader answers, and then sends a heartbeat every second. It is ready
//!   only once registered.
//! - A **standalone** node uses none of this.

use std::sync::Arc;
use std::time::Duration;

use quiver_proto::meta::v1::metadata_service_client::MetadataServiceClient;
use quiver_proto::meta::v1::{HeartbeatRequest, RegisterWorkerRequest};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::Code;

use super::config::NodeConfig;
use super::http::Readiness;
use super::shutdown::ShutdownSignal;
use super::ServerError;
use crate::meta::{
    Bootstrap, GrpcRaftNetworkFactory, HealthTracker, MetaApi, MetaNode, MetaNodeConfig,
    RaftGrpcService,
};

/// Interval between a worker's heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause between a worker's registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a coordinator with a single-voter group waits for its election
/// before it reports ready anyway.
const LEADER_WAIT: Duration = Duration::from_secs(30);

fn meta_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Meta(e.to_string())
}

/// The host other nodes reach this one at.
pub fn advertised_host(config: &NodeConfig) -> String {
    match &config.advertise_address {
        Some(a) if !a.trim().is_empty() => a.trim().to_owned(),
        _ => config.bind_address.trim().to_owned(),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Starts the coordinator's metadata Raft member and its API.
pub async fn start_meta(config: &NodeConfig, rpc_port: u16) -> Result<Arc<MetaApi>, ServerError> {
    let id = config.node_id.unwrap_or(0);
    let rpc_addr = host_port(&advertised_host(config), rpc_port);
    let mut meta_config = MetaNodeConfig::new(id, rpc_addr.clone(), config.data_dir.clone());
    meta_config.bootstrap = if config.peers.is_empty() || id == 0 {
        Bootstrap::SingleVoter
    } else {
        Bootstrap::Join
    };
    let bootstrap = meta_config.bootstrap.clone();
    let node = MetaNode::start(meta_config, GrpcRaftNetworkFactory::new())
        .await
        .map_err(meta_err)?;
    tracing::info!(raft_id = id, %rpc_addr, ?bootstrap, "metadata raft member started");
    Ok(MetaApi::new(Arc::new(node), HealthTracker::default()))
}

/// Waits (bounded) until the single-voter group has elected this member and
/// applied its log, so the first queries see the persisted catalogue.
pub async fn wait_for_leadership(api: &MetaApi, config: &NodeConfig) {
    if !config.peers.is_empty() && config.node_id.unwrap_or(0) != 0 {
        return;
    }
    let node = api.node();
    match node.wait_for_leader(LEADER_WAIT).await {
        Ok(leader) if leader == node.id() => {
            if let Err(e) = node.ensure_leader().await {
                tracing::warn!(error = %e, "cannot confirm metadata leadership");
            }
        }
        Ok(leader) => tracing::info!(leader, "metadata leader elected"),
        Err(e) => tracing::warn!(error = %e, "no metadata leader yet; serving anyway"),
    }
}

/// Serves gRPC on `listener` until `shutdown`: the metadata and Raft
/// services on a coordinator (`api` given), nothing yet on a worker.
pub fn serve_grpc(
    listener: TcpListener,
    api: Option<Arc<MetaApi>>,
    flight: Option<crate::dist::worker::WorkerFlight>,
    shutdown: ShutdownSignal,
) -> JoinHandle<Result<(), ServerError>> {
    // No Nagle: small request/response calls (router queries, 2PC) would wait
    // for delayed ACKs.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let mut builder = Server::builder();
        let mut routes = tonic::service::Routes::default();
        if let Some(api) = &api {
            routes = routes
                .add_service(api.grpc())
                .add_service(RaftGrpcService::server(api.node().raft().clone()));
        }
        if let Some(flight) = flight {
            routes = routes.add_service(flight.server());
        }
        let router = builder.add_routes(routes);
        router
            .serve_with_incoming_shutdown(incoming, shutdown.wait_owned())
            .await
            .map_err(|e| ServerError::Grpc(e.to_string()))
    })
}

/// What a worker tells the coordinator about itself.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub coordinator: String,
    pub host: String,
    pub port: u16,
    pub group: String,
}

impl WorkerIdentity {
    /// The identity of this worker, whose rpc listener got `rpc_port`.
    pub fn new(config: &NodeConfig, rpc_port: u16) -> Self {
        Self {
            coordinator: config.coordinator_address.clone().unwrap_or_default(),
            host: advertised_host(config),
            port: rpc_port,
            group: config.worker_group.clone().unwrap_or_default(),
        }
    }
}

fn client(addr: &str) -> Result<MetadataServiceClient<Channel>, String> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad coordinator address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(MetadataServiceClient::new(channel))
}

/// Sleeps `d` unless shutdown comes first; `false` on shutdown.
async fn pause(d: Duration, shutdown: &ShutdownSignal) -> bool {
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// A status that names another leader: where to go instead.
fn redirect(status: &tonic::Status) -> Option<String> {
    quiver_proto::leader_hint(status)
        .map(|h| h.leader_address)
        .filter(|a| !a.is_empty())
}

/// Registers the worker (retrying with backoff), marks it ready, then
/// heartbeats every second until shutdown.
pub async fn worker_loop(me: WorkerIdentity, readiness: Arc<Readiness>, shutdown: ShutdownSignal) {
    let mut target = me.coordinator.clone();
    readiness.set_not_ready(format!("registering with coordinator {target}"));
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    let (node_id, mut rpc) = loop {
        attempt += 1;
        let mut rpc = match client(&target) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot register with the coordinator");
                readiness.set_not_ready(e);
                return;
            }
        };
        let req = RegisterWorkerRequest {
            host: me.host.clone(),
            port: u32::from(me.port),
            group: me.group.clone(),
        };
        match rpc.register_worker(req).await {
            Ok(resp) => {
                let r = resp.into_inner();
                tracing::info!(
                    node_id = r.node_id,
                    coordinator = %target,
                    already_registered = r.already_registered,
                    host = %me.host,
                    port = me.port,
                    "registered with the coordinator"
                );
                break (r.node_id, rpc);
            }
            Err(status) => {
                if let Some(leader) = redirect(&status) {
                    tracing::info!(%leader, "coordinator is not the leader; following its hint");
                    target = leader;
                    continue;
                }
                tracing::warn!(
                    coordinator = %target,
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = %status.message(),
                    "coordinator not answering registration yet; retrying"
                );
                if !pause(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    readiness.set_ready();
    heartbeat_loop(node_id, &mut rpc, &mut target, &readiness, &shutdown).await;
}

async fn heartbeat_loop(
    node_id: u64,
    rpc: &mut MetadataServiceClient<Channel>,
    target: &mut String,
    readiness: &Readiness,
    shutdown: &ShutdownSignal,
) {
    let mut failing = false;
    let mut draining = false;
    loop {
        if !pause(HEARTBEAT_INTERVAL, shutdown).await {
            return;
        }
        match rpc.heartbeat(HeartbeatRequest { node_id }).await {
            Ok(resp) => {
                let r = resp.into_inner();
                if failing {
                    tracing::info!(coordinator = %target, "heartbeats reach the coordinator again");
                    failing = false;
                }
                if r.draining != draining {
                    draining = r.draining;
                    tracing::info!(draining, "coordinator changed this worker's drain state");
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                tracing::warn!(
                    node_id,
                    "this worker was removed from the cluster metadata; stopping heartbeats \
                     (restart it to register again)"
                );
                readiness.set_not_ready("removed from the cluster");
                return;
            }
            Err(status) => {
                if let Some(leader) = redirect(&status) {
                    if let Ok(c) = client(&leader) {
                        tracing::info!(%leader, "following the metadata leader");
                        *rpc = c;
                        *target = leader;
                        continue;
                    }
                }
                if !failing {
                    tracing::warn!(
                        coordinator = %target,
                        error = %status.message(),
                        "heartbeat failed; will keep trying every second"
                    );
                    failing = true;
                }
            }
        }
    }
}
