//! How metadata Raft members reach each other.
//!
//! Step in the flow: openraft asks a [`RaftNetworkFactory`] for a client per
//! peer and sends `AppendEntries`, `Vote` and (chunked) `InstallSnapshot`
//! through it. The state machine and log store know nothing of this.
//!
//! Two implementations, which map errors the same way:
//! - [`GrpcRaftNetworkFactory`] talks to the peer's
//!   `quiver.raft.v1.RaftService` ([`super::RaftGrpcService`]) over a lazy
//!   tonic channel per peer; each message is the JSON of the openraft type.
//! - [`InProcessRaftRouter`] connects [`MetaRaft`] instances of one process
//!   by calling their RPC handlers directly: tests run a 3-member cluster
//!   without sockets, and "killing" a member is shutting it down and
//!   removing it from the router.
//!
//! Errors:
//! - the peer is absent, or has stopped: [`RPCError::Unreachable`], so
//!   openraft backs off before retrying;
//! - the peer answered with an error: [`RPCError::RemoteError`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use quiver_proto::raft::v1::raft_service_client::RaftServiceClient;
use quiver_proto::raft::v1::RaftRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::types::{CoordinatorNode, MetaRaft, RaftId, TypeConfig};

/// The error a peer RPC returns.
type RpcError<E = openraft::error::Infallible> =
    RPCError<RaftId, CoordinatorNode, RaftError<RaftId, E>>;

/// A registry of the Raft members living in this process.
#[derive(Clone, Default)]
pub struct InProcessRaftRouter {
    members: Arc<Mutex<BTreeMap<RaftId, MetaRaft>>>,
}

impl fmt::Debug for InProcessRaftRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<RaftId> = self.members.lock().keys().copied().collect();
        f.debug_struct("InProcessRaftRouter")
            .field("members", &ids)
            .finish()
    }
}

impl InProcessRaftRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `raft` reachable as member `id`.
    pub fn register(&self, id: RaftId, raft: MetaRaft) {
        self.members.lock().insert(id, raft);
    }

    /// Makes member `id` unreachable; returns it if it was registered.
    pub fn unregister(&self, id: RaftId) -> Option<MetaRaft> {
        self.members.lock().remove(&id)
    }

    fn get(&self, id: RaftId) -> Option<MetaRaft> {
        self.members.lock().get(&id).cloned()
    }
}

/// A client of one peer through an [`InProcessRaftRouter`].
pub struct InProcessConnection {
    target: RaftId,
    node: CoordinatorNode,
    router: InProcessRaftRouter,
}

/// Raised when the target is not registered with the router.
#[derive(Debug, thiserror::Error)]
#[error("raft member {0} is not reachable in this process")]
struct NotRegistered(RaftId);

impl InProcessConnection {
    fn peer(&self) -> Option<MetaRaft> {
        self.router.get(self.target)
    }

    fn unreachable<E: std::error::Error>(&self) -> RpcError<E> {
        RPCError::Unreachable(Unreachable::new(&NotRegistered(self.target)))
    }

    /// Maps a peer's answer: a stopped peer is unreachable, any other error
    /// is the remote's.
    fn map_err<E: std::error::Error>(&self, e: RaftError<RaftId, E>) -> RpcError<E> {
        match e {
            RaftError::Fatal(fatal) => RPCError::Unreachable(Unreachable::new(&fatal)),
            other => RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                other,
            )),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for InProcessRaftRouter {
    type Network = InProcessConnection;

    async fn new_client(&mut self, target: RaftId, node: &CoordinatorNode) -> Self::Network {
        InProcessConnection {
            target,
            node: node.clone(),
            router: self.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for InProcessConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RpcError> {
        let peer = self.peer().ok_or_else(|| self.unreachable())?;
        peer.append_entries(rpc).await.map_err(|e| self.map_err(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RpcError<InstallSnapshotError>> {
        let peer = self.peer().ok_or_else(|| self.unreachable())?;
        peer.install_snapshot(rpc)
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RpcError> {
        let peer = self.peer().ok_or_else(|| self.unreachable())?;
        peer.vote(rpc).await.map_err(|e| self.map_err(e))
    }
}

/// Creates gRPC clients of peers, one lazy channel per peer address.
#[derive(Clone, Default)]
pub struct GrpcRaftNetworkFactory {
    channels: Arc<Mutex<BTreeMap<RaftId, (String, Channel)>>>,
}

impl fmt::Debug for GrpcRaftNetworkFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers: Vec<RaftId> = self.channels.lock().keys().copied().collect();
        f.debug_struct("GrpcRaftNetworkFactory")
            .field("peers", &peers)
            .finish()
    }
}

impl GrpcRaftNetworkFactory {
    /// A factory with no channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `target` at `addr`, reused while the address stays.
    fn channel(&self, target: RaftId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock();
        if let Some((known, channel)) = channels.get(&target) {
            if known == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect_lazy();
        channels.insert(target, (addr.to_owned(), channel.clone()));
        Ok(channel)
    }
}

/// A gRPC client of one peer.
pub struct GrpcConnection {
    target: RaftId,
    node: CoordinatorNode,
    /// `None` when the peer's address is not a valid URI.
    client: Option<RaftServiceClient<Channel>>,
}

/// Raised when a peer's address cannot be turned into a channel.
#[derive(Debug, thiserror::Error)]
#[error("raft member {target} has an invalid address {addr:?}")]
struct BadAddress {
    target: RaftId,
    addr: String,
}

/// Raised when a gRPC call or its payload fails.
#[derive(Debug, thiserror::Error)]
#[error("raft rpc to member {target}: {reason}")]
struct TransportError {
    target: RaftId,
    reason: String,
}

/// Which RPC of the service to call.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcConnection {
    fn unreachable<E: std::error::Error>(&self, reason: String) -> RpcError<E> {
        RPCError::Unreachable(Unreachable::new(&TransportError {
            target: self.target,
            reason,
        }))
    }

    /// Sends one request and decodes the peer's `Result`.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = serde_json::to_vec(req).map_err(|e| self.unreachable(e.to_string()))?;
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&BadAddress {
                target: self.target,
                addr: self.node.rpc_addr.clone(),
            })));
        };
        let mut request = tonic::Request::new(RaftRequest { payload });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| self.unreachable(status.to_string()))?;
        let result: Result<Resp, RaftError<RaftId, E>> =
            serde_json::from_slice(&reply.into_inner().payload)
                .map_err(|e| self.unreachable(format!("undecodable reply: {e}")))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcRaftNetworkFactory {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: RaftId, node: &CoordinatorNode) -> Self::Network {
        let client = match self.channel(target, &node.rpc_addr) {
            Ok(channel) => Some(RaftServiceClient::new(channel)),
            Err(e) => {
                tracing::warn!(target, addr = %node.rpc_addr, error = %e, "bad raft peer address");
                None
            }
        };
        GrpcConnection {
            target,
            node: node.clone(),
            client,
        }
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RpcError> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RpcError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RpcError> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
