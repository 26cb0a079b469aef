//! The operator's client of the coordinators' metadata API
//! (`quiver.meta.v1.MetadataService`).
//!
//! Step in the reconcile flow: "drive the cluster" and the input of
//! [`crate::status`]. The operator changes the cluster only through this
//! API. Any coordinator can be asked; a follower answers a mutation with
//! "not leader" and a hint, which [`MetaClient`] follows (a bounded number of
//! hops) and remembers. Unreachable coordinators are skipped in favour of the
//! next one. The scale-in ([`crate::retire`]) drains and removes workers,
//! and the scale-out ([`crate::rebalance`]) plans and starts rebalances
//! through it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::leader_hint;
use quiver_proto::meta::v1::metadata_service_client::MetadataServiceClient;
use quiver_proto::meta::v1::{
    ClusterState, DrainNodeRequest, DrainNodeResponse, GetClusterStateRequest,
    MarkNodeFailedRequest, MarkNodeFailedResponse, NodeRef, RebalanceAction, RebalanceRequest,
    RebalanceResponse, RegisterWorkerRequest, RegisterWorkerResponse, RemoveNodeRequest,
    RemoveNodeResponse,
};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

/// Most "not leader" redirects followed by one call.
pub const MAX_REDIRECTS: usize = 3;

/// Why a metadata call failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The client was given no coordinator address.
    #[error("no coordinator address to call")]
    NoEndpoints,
    /// An address is not a valid URI.
    #[error("invalid coordinator address {address:?}: {source}")]
    InvalidAddress {
        /// The address.
        address: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// No coordinator answered.
    #[error("no coordinator reachable (tried {tried:?}): {last}")]
    Unreachable {
        /// Addresses tried, in order.
        tried: Vec<String>,
        /// The last failure.
        last: String,
    },
    /// The coordinators know no leader (an election is running).
    #[error("the coordinators have no leader (election in progress)")]
    NoLeader,
    /// Hints kept pointing elsewhere.
    #[error("gave up after {MAX_REDIRECTS} not-leader redirects (path {0:?})")]
    TooManyRedirects(Vec<String>),
    /// The leader answered with an error.
    #[error("metadata API error: {0}")]
    Rpc(#[from] Status),
}

/// Turns an address advertised by a node into one the operator can dial.
pub trait AddressResolver: Send + Sync {
    /// The dialable `host:port` for an advertised `host:port`.
    fn resolve(&self, advertised: &str) -> String;
}

/// Qualifies short in-cluster names (`pod.service:9090` or `service:9090`)
/// with a namespace, since the operator usually runs in another one.
#[derive(Clone, Debug)]
pub struct NamespaceResolver {
    /// Namespace of the database.
    pub namespace: String,
}

impl AddressResolver for NamespaceResolver {
    fn resolve(&self, advertised: &str) -> String {
        let (host, port) = match advertised.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (advertised, None),
        };
        let short = host.matches('.').count() <= 1 && host.parse::<std::net::IpAddr>().is_err();
        let host = if short {
            format!("{host}.{}.svc", self.namespace)
        } else {
            host.to_owned()
        };
        match port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// Dials addresses as given.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityResolver;

impl AddressResolver for IdentityResolver {
    fn resolve(&self, advertised: &str) -> String {
        advertised.to_owned()
    }
}

/// Client of one cluster's metadata API.
pub struct MetaClient {
    endpoints: Vec<String>,
    resolver: Arc<dyn AddressResolver>,
    timeout: Duration,
    /// The leader found by the last call, tried first next time.
    leader: Mutex<Option<String>>,
}

impl std::fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaClient")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MetaClient {
    /// A client that tries `endpoints` (`host:port`, already dialable) in
    /// order and dials leader hints through `resolver`.
    pub fn new(
        endpoints: Vec<String>,
        resolver: Arc<dyn AddressResolver>,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoints,
            resolver,
            timeout,
            leader: Mutex::new(None),
        }
    }

    /// The leader's dialable address found by the last successful call.
    pub async fn known_leader(&self) -> Option<String> {
        self.leader.lock().await.clone()
    }

    /// The whole cluster state, from the leader (linearizable).
    pub async fn cluster_state(&self) -> Result<ClusterState, MetaError> {
        let response = self
            .call(|mut c| async move {
                c.get_cluster_state(GetClusterStateRequest { allow_stale: false })
                    .await
            })
            .await?;
        Ok(response.state.unwrap_or_default())
    }

    /// Registers a worker (idempotent on the node's side).
    pub async fn register_worker(
        &self,
        host: &str,
        port: u32,
        group: &str,
    ) -> Result<RegisterWorkerResponse, MetaError> {
        let request = RegisterWorkerRequest {
            host: host.to_owned(),
            port,
            group: group.to_owned(),
        };
        self.call(|mut c| {
            let request = request.clone();
            async move { c.register_worker(request).await }
        })
        .await
    }

    /// Starts draining a node before it is scaled in.
    pub async fn drain_node(&self, node: NodeRef) -> Result<DrainNodeResponse, MetaError> {
        self.call(|mut c| {
            let node = node.clone();
            async move { c.drain_node(DrainNodeRequest { node: Some(node) }).await }
        })
        .await
    }

    /// Removes a node that holds no placements from the metadata.
    pub async fn remove_node(&self, node: NodeRef) -> Result<RemoveNodeResponse, MetaError> {
        self.call(|mut c| {
            let node = node.clone();
            async move { c.remove_node(RemoveNodeRequest { node: Some(node) }).await }
        })
        .await
    }

    /// Plans, dry-runs, starts or cancels a rebalance of all tables.
    pub async fn rebalance(&self, action: RebalanceAction) -> Result<RebalanceResponse, MetaError> {
        self.call(|mut c| async move {
            c.rebalance(RebalanceRequest {
                action: action.into(),
                table: String::new(),
            })
            .await
        })
        .await
    }

    /// Declares a worker failed.
    pub async fn mark_node_failed(
        &self,
        node: NodeRef,
        reason: &str,
    ) -> Result<MarkNodeFailedResponse, MetaError> {
        let reason = reason.to_owned();
        self.call(|mut c| {
            let request = MarkNodeFailedRequest {
                node: Some(node.clone()),
                reason: reason.clone(),
            };
            async move { c.mark_node_failed(request).await }
        })
        .await
    }

    /// Runs `rpc` against the known leader, then each endpoint, following
    /// "not leader" hints.
    async fn call<T, F, Fut>(&self, rpc: F) -> Result<T, MetaError>
    where
        F: Fn(MetadataServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(leader) = self.leader.lock().await.clone() {
            candidates.push(leader);
        }
        candidates.extend(self.endpoints.iter().cloned());
        if candidates.is_empty() {
            return Err(MetaError::NoEndpoints);
        }
        let mut tried = Vec::new();
        let mut last = String::new();
        let mut saw_no_leader = false;
        for start in candidates {
            if tried.contains(&start) {
                continue;
            }
            let mut address = start;
            let mut path = Vec::new();
            loop {
                path.push(address.clone());
                tried.push(address.clone());
                match self.call_once(&address, &rpc).await {
                    Ok(value) => {
                        *self.leader.lock().await = Some(address);
                        return Ok(value);
                    }
                    Err(Attempt::Redirect(hint)) => {
                        let next = self.resolver.resolve(&hint);
                        if path.len() > MAX_REDIRECTS {
                            return Err(MetaError::TooManyRedirects(path));
                        }
                        if path.contains(&next) {
                            // A stale hint pointing back: treat as no leader.
                            saw_no_leader = true;
                            break;
                        }
                        address = next;
                    }
                    Err(Attempt::NoLeader) => {
                        saw_no_leader = true;
                        break;
                    }
                    Err(Attempt::Unreachable(why)) => {
                        let mut leader = self.leader.lock().await;
                        if leader.as_deref() == Some(address.as_str()) {
                            *leader = None;
                        }
                        last = why;
                        break;
                    }
                    Err(Attempt::Failed(err)) => return Err(err),
                }
            }
        }
        if saw_no_leader {
            Err(MetaError::NoLeader)
        } else {
            Err(MetaError::Unreachable { tried, last })
        }
    }

    async fn call_once<T, F, Fut>(&self, address: &str, rpc: &F) -> Result<T, Attempt>
    where
        F: Fn(MetadataServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| {
                Attempt::Failed(MetaError::InvalidAddress {
                    address: address.to_owned(),
                    source,
                })
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Attempt::Unreachable(format!("{address}: {e}")))?;
        match rpc(MetadataServiceClient::new(channel)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(classify(address, status)),
        }
    }
}

/// Outcome of one call to one coordinator.
enum Attempt {
    Redirect(String),
    NoLeader,
    Unreachable(String),
    Failed(MetaError),
}

fn classify(address: &str, status: Status) -> Attempt {
    if let Some(hint) = leader_hint(&status) {
        return if hint.leader_address.is_empty() {
            Attempt::NoLeader
        } else {
            Attempt::Redirect(hint.leader_address)
        };
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            Attempt::Unreachable(format!("{address}: {}", status.message()))
        }
        _ => Attempt::Failed(MetaError::Rpc(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_resolver_qualifies_short_names_only() {
        let r = NamespaceResolver {
            namespace: "data".into(),
        };
        assert_eq!(
            r.resolve("db-coordinator-1.db-coordinator:9090"),
            "db-coordinator-1.db-coordinator.data.svc:9090"
        );
        assert_eq!(
            r.resolve("db-coordinator:9090"),
            "db-coordinator.data.svc:9090"
        );
        assert_eq!(
            r.resolve("a-0.a.other.svc.cluster.local:9090"),
            "a-0.a.other.svc.cluster.local:9090"
        );
        assert_eq!(r.resolve("10.0.0.7:9090"), "10.0.0.7:9090");
    }
}
