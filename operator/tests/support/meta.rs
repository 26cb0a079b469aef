//! In-process tonic fakes of coordinators serving `quiver.meta.v1`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quiver_proto::meta::v1::metadata_service_server::{MetadataService, MetadataServiceServer};
use quiver_proto::meta::v1::*;
use quiver_proto::not_leader;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How a fake coordinator answers.
#[derive(Clone)]
pub enum Behaviour {
    Leader(Box<ClusterState>),
    /// Follower pointing at this address (empty: no leader known).
    Follower(String),
}

#[derive(Clone)]
pub struct FakeCoordinator {
    pub behaviour: Behaviour,
    pub calls: Arc<AtomicUsize>,
    pub registered: Arc<std::sync::Mutex<Vec<RegisterWorkerRequest>>>,
}

impl FakeCoordinator {
    fn check_leader(&self) -> Result<ClusterState, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::Leader(state) => Ok(state.as_ref().clone()),
            Behaviour::Follower(address) => Err(not_leader(&NotLeader {
                leader_id: if address.is_empty() { 0 } else { 1 },
                leader_address: address.clone(),
            })),
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MetadataService for FakeCoordinator {
    async fn get_cluster_state(
        &self,
        _: Request<GetClusterStateRequest>,
    ) -> Rpc<GetClusterStateResponse> {
        let state = self.check_leader()?;
        Ok(Response::new(GetClusterStateResponse {
            state: Some(state),
        }))
    }
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Rpc<RegisterWorkerResponse> {
        self.check_leader()?;
        let request = request.into_inner();
        let mut registered = self
            .registered
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        registered.push(request);
        Ok(Response::new(RegisterWorkerResponse {
            node_id: u64::try_from(registered.len()).unwrap_or(0) + 10,
            already_registered: false,
            log_index: 42,
        }))
    }
    async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Rpc<HeartbeatResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_node(&self, _: Request<AddNodeRequest>) -> Rpc<AddNodeResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn drain_node(&self, _: Request<DrainNodeRequest>) -> Rpc<DrainNodeResponse> {
        self.check_leader()?;
        Err(Status::failed_precondition("node 9 does not exist"))
    }
    async fn remove_node(&self, _: Request<RemoveNodeRequest>) -> Rpc<RemoveNodeResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn rebalance(&self, _: Request<RebalanceRequest>) -> Rpc<RebalanceResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_rebalance_progress(
        &self,
        _: Request<GetRebalanceProgressRequest>,
    ) -> Rpc<GetRebalanceProgressResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn mark_node_failed(
        &self,
        _: Request<MarkNodeFailedRequest>,
    ) -> Rpc<MarkNodeFailedResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_coordinator(
        &self,
        _: Request<AddCoordinatorRequest>,
    ) -> Rpc<AddCoordinatorResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_coordinator(
        &self,
        _: Request<RemoveCoordinatorRequest>,
    ) -> Rpc<RemoveCoordinatorResponse> {
        Err(Status::unimplemented("fake"))
    }
}

/// Binds a port first, so a follower's hint can name the leader.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

pub fn serve(listener: TcpListener, fake: FakeCoordinator) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MetadataServiceServer::new(fake))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .expect("fake server runs");
    });
}

pub fn fake(behaviour: Behaviour) -> FakeCoordinator {
    FakeCoordinator {
        behaviour,
        calls: Arc::new(AtomicUsize::new(0)),
        registered: Arc::default(),
    }
}
