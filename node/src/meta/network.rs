//! How metadata Raft members reach each other.
//!
//! Step in the flow: openraft asks a [`RaftNetworkFactory`] for a client per
//! peer and sends `AppendEntries`, `Vote` and (chunked) `InstallSnapshot`
//! through it. The state machine and log store know nothing of this.
//!
//! [`InProcessRaftRouter`] connects [`MetaRaft`] instances of one process
//! by calling their RPC handlers directly: tests run a 3-member cluster
//! without sockets, and "killing" a member is shutting it down and removing
//! it from the router. A gRPC transport (`quiver.raft.v1.RaftService`, ADR
//! 0005) implements the same trait and maps errors the same way:
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
