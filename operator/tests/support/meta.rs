//! In-process tonic fakes of coordinators serving `quiver.meta.v1`.
//!
//! A leader keeps its cluster state behind a mutex, so a test can change it
//! between passes, and answers drains, removals and rebalances the way the
//! node does (one rebalance at a time, no removal of a node that holds
//! placements); each of those calls is recorded, and a test can make the
//! next ones fail with a given status ([`Failures`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use quiver_proto::meta::v1::metadata_service_server::{MetadataService, MetadataServiceServer};
use quiver_proto::meta::v1::*;
use quiver_proto::not_leader;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How a fake coordinator answers.
#[derive(Clone)]
pub enum Behaviour {
    /// Leads, starting from this state.
    Leader(Box<ClusterState>),
    /// Follower pointing at this address (empty: no leader known).
    Follower(String),
}

/// Errors the leader answers instead of doing the call (`None`: it does it).
#[derive(Clone, Default)]
pub struct Failures {
    pub state: Option<Status>,
    pub drain: Option<Status>,
    pub remove: Option<Status>,
    pub rebalance: Option<Status>,
}

#[derive(Clone)]
pub struct FakeCoordinator {
    pub behaviour: Behaviour,
    pub calls: Arc<AtomicUsize>,
    pub registered: Arc<Mutex<Vec<RegisterWorkerRequest>>>,
    /// The leader's current state.
    pub state: Arc<Mutex<ClusterState>>,
    /// Moves a plan (and a START) finds.
    pub plan_moves: Arc<Mutex<usize>>,
    pub drains: Arc<Mutex<Vec<NodeRef>>>,
    pub removes: Arc<Mutex<Vec<NodeRef>>>,
    pub rebalances: Arc<Mutex<Vec<RebalanceAction>>>,
    pub failures: Arc<Mutex<Failures>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, Status> {
    m.lock().map_err(|_| Status::internal("poisoned"))
}

fn running(state: &ClusterState) -> Option<&RebalanceProgress> {
    state.rebalance.as_ref().filter(|r| {
        r.state == RebalanceState::Running as i32 || r.state == RebalanceState::Cancelling as i32
    })
}

fn find(state: &mut ClusterState, node: Option<&NodeRef>) -> Result<usize, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("no node"))?;
    state
        .nodes
        .iter()
        .position(|n| {
            if node.node_id != 0 {
                n.node_id == node.node_id
            } else {
                n.host == node.host && n.port == node.port
            }
        })
        .ok_or_else(|| Status::failed_precondition(format!("node {} does not exist", node.node_id)))
}

impl FakeCoordinator {
    fn check_leader(&self) -> Result<ClusterState, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::Leader(_) => Ok(lock(&self.state)?.clone()),
            Behaviour::Follower(address) => Err(not_leader(&NotLeader {
                leader_id: if address.is_empty() { 0 } else { 1 },
                leader_address: address.clone(),
            })),
        }
    }

    fn moves(&self) -> Result<Vec<ShardMove>, Status> {
        let n = *lock(&self.plan_moves)?;
        Ok((0..n)
            .map(|i| ShardMove {
                shard_id: u64::try_from(i).unwrap_or(0) + 1,
                table: "t".into(),
                from_node_id: 1,
                to_node_id: 2,
                bytes: 100,
            })
            .collect())
    }

    /// Ids the fake gives the rebalances START makes: `r1`, `r2`...
    fn next_id(&self) -> Result<String, Status> {
        let starts = lock(&self.rebalances)?
            .iter()
            .filter(|a| **a == RebalanceAction::Start)
            .count();
        Ok(format!("r{starts}"))
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
        if let Some(status) = lock(&self.failures)?.state.clone() {
            return Err(status);
        }
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
        let mut registered = lock(&self.registered)?;
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
    async fn drain_node(&self, request: Request<DrainNodeRequest>) -> Rpc<DrainNodeResponse> {
        self.check_leader()?;
        let node = request.into_inner().node;
        let mut state = lock(&self.state)?;
        let at = find(&mut state, node.as_ref())?;
        lock(&self.drains)?.push(node.unwrap_or_default());
        if let Some(status) = lock(&self.failures)?.drain.clone() {
            return Err(status);
        }
        if let Some(r) = running(&state) {
            return Err(Status::failed_precondition(format!(
                "rebalance {} is running; drain the node once it ends",
                r.rebalance_id
            )));
        }
        state.nodes[at].draining = true;
        let moves_total = state.nodes[at].placements;
        if moves_total == 0 {
            return Ok(Response::new(DrainNodeResponse::default()));
        }
        let rebalance_id = format!("d{}", state.nodes[at].node_id);
        state.rebalance = Some(RebalanceProgress {
            state: RebalanceState::Running.into(),
            rebalance_id: rebalance_id.clone(),
            moves_total,
            ..RebalanceProgress::default()
        });
        Ok(Response::new(DrainNodeResponse {
            rebalance_id,
            moves_total,
            log_index: 7,
        }))
    }
    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Rpc<RemoveNodeResponse> {
        self.check_leader()?;
        let node = request.into_inner().node;
        let mut state = lock(&self.state)?;
        let at = find(&mut state, node.as_ref())?;
        lock(&self.removes)?.push(node.unwrap_or_default());
        if let Some(status) = lock(&self.failures)?.remove.clone() {
            return Err(status);
        }
        let held = state.nodes[at].placements;
        if held > 0 {
            return Err(Status::failed_precondition(format!(
                "node holds {held} shard placement(s); drain it first"
            )));
        }
        state.nodes.remove(at);
        Ok(Response::new(RemoveNodeResponse { log_index: 8 }))
    }
    async fn rebalance(&self, request: Request<RebalanceRequest>) -> Rpc<RebalanceResponse> {
        self.check_leader()?;
        let action = RebalanceAction::try_from(request.into_inner().action).unwrap_or_default();
        lock(&self.rebalances)?.push(action);
        if let Some(status) = lock(&self.failures)?.rebalance.clone() {
            return Err(status);
        }
        let mut state = lock(&self.state)?;
        match action {
            RebalanceAction::Plan | RebalanceAction::DryRun => {
                Ok(Response::new(RebalanceResponse {
                    moves: self.moves()?,
                    progress: state.rebalance.clone(),
                    ..RebalanceResponse::default()
                }))
            }
            RebalanceAction::Start => {
                if let Some(r) = running(&state) {
                    return Err(Status::failed_precondition(format!(
                        "rebalance {} is already running",
                        r.rebalance_id
                    )));
                }
                let moves = self.moves()?;
                if moves.is_empty() {
                    return Ok(Response::new(RebalanceResponse::default()));
                }
                let progress = RebalanceProgress {
                    state: RebalanceState::Running.into(),
                    rebalance_id: self.next_id()?,
                    moves_total: u64::try_from(moves.len()).unwrap_or(0),
                    ..RebalanceProgress::default()
                };
                state.rebalance = Some(progress.clone());
                Ok(Response::new(RebalanceResponse {
                    moves,
                    rebalance_id: progress.rebalance_id.clone(),
                    progress: Some(progress),
                    log_index: 9,
                }))
            }
            _ => Err(Status::unimplemented("fake")),
        }
    }
    async fn get_rebalance_progress(
        &self,
        _: Request<GetRebalanceProgressRequest>,
    ) -> Rpc<GetRebalanceProgressResponse> {
        let state = self.check_leader()?;
        Ok(Response::new(GetRebalanceProgressResponse {
            progress: state.rebalance,
        }))
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
    let state = match &behaviour {
        Behaviour::Leader(state) => state.as_ref().clone(),
        Behaviour::Follower(_) => ClusterState::default(),
    };
    FakeCoordinator {
        behaviour,
        calls: Arc::new(AtomicUsize::new(0)),
        registered: Arc::default(),
        state: Arc::new(Mutex::new(state)),
        plan_moves: Arc::default(),
        drains: Arc::default(),
        removes: Arc::default(),
        rebalances: Arc::default(),
        failures: Arc::default(),
    }
}

/// Address of the Raft leader in the fixtures' cluster states.
pub const LEADER: &str = "demo-coordinator-0.demo-coordinator:9090";

/// Worker `ordinal` of group `group` of `demo`, registered and active, with
/// node id `10 * (group index + 1) + ordinal` (`a-1` is 11, `b-0` is 20).
pub fn worker(group: &str, ordinal: u64, placements: u64) -> Node {
    let base = match group {
        "a" => 10,
        "b" => 20,
        _ => 30,
    };
    Node {
        node_id: base + ordinal,
        host: format!("demo-worker-{group}-{ordinal}.demo-worker-{group}"),
        port: 9090,
        role: NodeRole::Worker.into(),
        group: group.into(),
        active: true,
        health: NodeHealth::Healthy.into(),
        placements,
        ..Node::default()
    }
}

/// A fake coordinator that leads with `nodes`: its address and handle.
pub async fn leader_with(nodes: Vec<Node>) -> (String, FakeCoordinator) {
    let (listener, address) = bind().await;
    let state = ClusterState {
        leader_address: LEADER.into(),
        nodes,
        ..ClusterState::default()
    };
    let leader = fake(Behaviour::Leader(Box::new(state)));
    serve(listener, leader.clone());
    (address.to_string(), leader)
}

/// A fake coordinator in an election (every call answers "no leader").
pub async fn leaderless() -> (String, FakeCoordinator) {
    let (listener, address) = bind().await;
    let follower = fake(Behaviour::Follower(String::new()));
    serve(listener, follower.clone());
    (address.to_string(), follower)
}

/// An address where nothing listens (a coordinator that is down).
pub async fn unreachable() -> String {
    let (listener, address) = bind().await;
    drop(listener);
    address.to_string()
}

impl FakeCoordinator {
    /// Node ids of the drain calls so far.
    pub fn drained(&self) -> Vec<u64> {
        self.drains
            .lock()
            .expect("lock")
            .iter()
            .map(|n| n.node_id)
            .collect()
    }

    /// Node ids of the remove calls so far.
    pub fn removed(&self) -> Vec<u64> {
        self.removes
            .lock()
            .expect("lock")
            .iter()
            .map(|n| n.node_id)
            .collect()
    }

    /// Rebalance actions so far.
    pub fn actions(&self) -> Vec<RebalanceAction> {
        self.rebalances.lock().expect("lock").clone()
    }

    /// Changes the leader's state.
    pub fn edit(&self, change: impl FnOnce(&mut ClusterState)) {
        change(&mut self.state.lock().expect("lock"));
    }
}
