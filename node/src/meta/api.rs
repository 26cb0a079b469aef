//! The public metadata API: `quiver.meta.v1.MetadataService`.
//!
//! Step in the flow: the operator, admin tools and workers drive the cluster
//! through this service; the SQL functions (`quiver_add_node`, ...) call the
//! same [`MetaApi`] methods in-process. Every mutation is validated on the
//! leader against its catalogue, proposed as one [`MetaCommand`] and
//! answered only once committed, with its log index. A follower answers
//! FAILED_PRECONDITION "not leader" with the leader hint meta.proto documents
//! ([`quiver_proto::not_leader`]). Heartbeats only touch the leader's
//! in-memory [`HealthTracker`].
//!
//! [`MetadataGrpc`] is the tonic face of [`MetaApi`]; all proto conversions
//! live in `pb_impl.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use quiver_proto::meta::v1 as pb;
use quiver_proto::meta::v1::metadata_service_server::{MetadataService, MetadataServiceServer};
use thiserror::Error;
use tonic::{Request, Response, Status};

use super::command::{MetaCommand, MetaResponse, RebalanceOutcome};
use super::health::{Health, HealthTracker};
use super::state::{
    MetaState, NodeId, NodeInfo, NodeRole, PlacementId, PlacementState, RebalanceInfo,
    RebalanceState, ShardMove, TableKind,
};
use super::types::{CoordinatorNode, RaftId};
use super::{MetaError, MetaNode};

/// Why an API call failed; maps to a gRPC status and a SQLSTATE.
#[derive(Debug, Error)]
pub enum ApiError {
    /// This coordinator is not the leader; the leader, if known.
    #[error("not leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<RaftId>,
        leader_addr: Option<String>,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named node (or other object) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not implemented yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The metadata group cannot answer now (no quorum, timeout).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The PostgreSQL SQLSTATE for this error when it reaches a SQL client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ApiError::NotLeader { .. } | ApiError::FailedPrecondition(_) => "55000",
            ApiError::InvalidArgument(_) => "22023",
            ApiError::NotFound(_) => "42704",
            ApiError::Unimplemented(_) => "0A000",
            ApiError::Unavailable(_) => "57P03",
            ApiError::Internal(_) => "XX000",
        }
    }
}

/// A node named by id or by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    Id(NodeId),
    Addr { host: String, port: u16 },
}

/// Answer of [`MetaApi::register_worker`] and [`MetaApi::add_node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub node_id: NodeId,
    /// The address was known; nothing was written.
    pub already_registered: bool,
    /// Index of the committed entry (the applied index when nothing was written).
    pub log_index: u64,
}

/// One member of the coordinator Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorMember {
    pub id: RaftId,
    pub address: String,
    pub voter: bool,
}

/// One row of `pg_dist_node` with the leader's health view.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: NodeId,
    pub info: NodeInfo,
    pub health: Health,
    pub placements: u64,
    pub last_heartbeat_unix_ms: i64,
}

/// Shard counts of [`ClusterView`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardTotals {
    pub total: u64,
    pub under_replicated: u64,
    /// Shards without any active placement on a live node.
    pub unavailable: u64,
}

/// Everything `GetClusterState` reports.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub leader: Option<(RaftId, String)>,
    pub term: u64,
    pub applied_index: u64,
    pub nodes: Vec<NodeView>,
    pub shards: ShardTotals,
    pub rebalance: Option<RebalanceInfo>,
    pub coordinators: Vec<CoordinatorMember>,
}

/// The metadata API over one [`MetaNode`].
#[derive(Debug)]
pub struct MetaApi {
    node: Arc<MetaNode>,
    health: HealthTracker,
}

impl MetaApi {
    /// The API over `node` with a fresh health tracker.
    pub fn new(node: Arc<MetaNode>, health: HealthTracker) -> Arc<Self> {
        Arc::new(Self { node, health })
    }

    /// The Raft member behind the API.
    pub fn node(&self) -> &Arc<MetaNode> {
        &self.node
    }

    /// The tonic service, ready to add to a `Server`.
    pub fn grpc(self: &Arc<Self>) -> MetadataServiceServer<MetadataGrpc> {
        MetadataServiceServer::new(MetadataGrpc { api: self.clone() })
    }

    fn leader_addr(&self, id: RaftId) -> Option<String> {
        self.node
            .leader()
            .filter(|(l, _)| *l == id)
            .map(|(_, n)| n.rpc_addr)
            .filter(|a| !a.is_empty())
            .or_else(|| {
                let metrics = self.node.raft().metrics();
                let m = metrics.borrow();
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.rpc_addr.clone())
            })
    }

    /// Maps a [`MetaError`], completing a leader hint that lacks the address.
    fn err(&self, e: MetaError) -> ApiError {
        match e {
            MetaError::NotLeader {
                leader_id,
                leader_addr,
            } => {
                let leader_addr =
                    leader_addr.or_else(|| leader_id.and_then(|id| self.leader_addr(id)));
                ApiError::NotLeader {
                    leader_id,
                    leader_addr,
                }
            }
            MetaError::Membership(m) => ApiError::FailedPrecondition(m),
            MetaError::NoQuorum(m) | MetaError::Timeout(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }

    /// Fails with the leader hint unless this member is the leader.
    fn require_leader(&self) -> Result<(), ApiError> {
        if self.node.is_leader() {
            return Ok(());
        }
        let leader = self.node.leader();
        Err(ApiError::NotLeader {
            leader_id: leader.as_ref().map(|(id, _)| *id),
            leader_addr: leader.map(|(_, n)| n.rpc_addr).filter(|a| !a.is_empty()),
        })
    }

    async fn write(&self, cmd: MetaCommand) -> Result<(u64, MetaResponse), ApiError> {
        let (index, resp) = self.node.write(cmd).await.map_err(|e| self.err(e))?;
        match resp {
            MetaResponse::Rejected(reason) => Err(ApiError::FailedPrecondition(reason)),
            resp => Ok((index, resp)),
        }
    }

    fn applied_index(state: &MetaState) -> u64 {
        state.last_applied.map_or(0, |l| l.index)
    }

    fn resolve(state: &MetaState, node: &NodeSelector) -> Result<NodeId, ApiError> {
        match node {
            NodeSelector::Id(id) if state.nodes.contains_key(id) => Ok(*id),
            NodeSelector::Id(id) => Err(ApiError::NotFound(format!("no node with id {id}"))),
            NodeSelector::Addr { host, port } => state
                .node_by_addr(host, *port)
                .ok_or_else(|| ApiError::NotFound(format!("no node at {host}:{port}"))),
        }
    }

    async fn register(
        &self,
        host: &str,
        port: u16,
        group: &str,
        worker_call: bool,
    ) -> Result<Registered, ApiError> {
        if host.trim().is_empty() || port == 0 {
            return Err(ApiError::InvalidArgument(
                "a node needs a host and a non-zero port".into(),
            ));
        }
        self.require_leader()?;
        let snap = self.node.snapshot();
        if let Some(node_id) = snap.node_by_addr(host, port) {
            if worker_call {
                self.health.beat(node_id);
            }
            return Ok(Registered {
                node_id,
                already_registered: true,
                log_index: Self::applied_index(&snap),
            });
        }
        let cmd = if worker_call {
            MetaCommand::RegisterWorker {
                host: host.to_owned(),
                port,
                group: group.to_owned(),
            }
        } else {
            MetaCommand::AddNode {
                host: host.to_owned(),
                port,
                group: group.to_owned(),
                role: NodeRole::Worker,
            }
        };
        let (log_index, resp) = self.write(cmd).await?;
        match resp {
            MetaResponse::NodeRegistered {
                node_id,
                already_registered,
            } => {
                if worker_call {
                    self.health.beat(node_id);
                }
                Ok(Registered {
                    node_id,
                    already_registered,
                    log_index,
                })
            }
            other => Err(ApiError::Internal(format!(
                "unexpected answer to a registration: {other:?}"
            ))),
        }
    }

    /// A worker announces itself (idempotent). Counts as a heartbeat.
    pub async fn register_worker(
        &self,
        host: &str,
        port: u16,
        group: &str,
    ) -> Result<Registered, ApiError> {
        self.register(host, port, group, true).await
    }

    /// An admin adds a worker by address (idempotent).
    pub async fn add_node(
        &self,
        host: &str,
        port: u16,
        group: &str,
    ) -> Result<Registered, ApiError> {
        self.register(host, port, group, false).await
    }

    /// Records a heartbeat of `node_id`; answers its health and whether it
    /// is being drained.
    pub fn heartbeat(&self, node_id: NodeId) -> Result<(Health, bool), ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        let info = snap
            .nodes
            .get(&node_id)
            .ok_or_else(|| ApiError::NotFound(format!("node {node_id} is not registered")))?;
        self.health.beat(node_id);
        Ok((self.health.health(node_id, info), info.draining))
    }

    /// Removes a node that holds no placements. Returns the log index.
    pub async fn remove_node(&self, node: &NodeSelector) -> Result<u64, ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        let node_id = Self::resolve(&snap, node)?;
        let held = snap.data_placements_on(node_id);
        if held > 0 {
            let addr = snap
                .nodes
                .get(&node_id)
                .map_or_else(String::new, |n| format!(" ({}:{})", n.host, n.port));
            return Err(ApiError::FailedPrecondition(format!(
                "node {node_id}{addr} holds {held} shard placement(s); drain it first"
            )));
        }
        let (index, _) = self.write(MetaCommand::RemoveNode { node_id }).await?;
        self.health.forget(node_id);
        Ok(index)
    }

    /// Drains a node: it takes no new placements from now on, and a
    /// rebalance moves its shard groups to the other workers (reference
    /// table copies go when the node is removed). Returns the rebalance
    /// (`None` when nothing had to move) and the log index.
    pub async fn drain_node(
        &self,
        node: &NodeSelector,
    ) -> Result<(Option<RebalanceInfo>, u64), ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        let node_id = Self::resolve(&snap, node)?;
        no_running_rebalance(&snap, "drain the node once it ends")?;
        let (mut index, _) = self
            .write(MetaCommand::SetDraining {
                node_id,
                draining: true,
            })
            .await?;
        let (info, i) = self.start_rebalance(None).await?;
        index = index.max(i);
        Ok((info, index))
    }

    /// The moves a rebalance of `table` (every distributed table when
    /// `None`) would make now.
    pub fn plan_rebalance(&self, table: Option<&str>) -> Result<Vec<ShardMove>, ApiError> {
        let snap = self.node.snapshot();
        let only = match table {
            Some(name) => {
                let id = snap.table_by_name(name).ok_or_else(|| {
                    ApiError::NotFound(format!("table \"{name}\" is not distributed"))
                })?;
                Some(BTreeSet::from([id]))
            }
            None => None,
        };
        Ok(super::rebalance::plan(&snap, only.as_ref()))
    }

    /// Records a rebalance of `table` (all when `None`) in Raft; the
    /// leader's rebalancer runs it. `None` when there is nothing to move.
    pub async fn start_rebalance(
        &self,
        table: Option<&str>,
    ) -> Result<(Option<RebalanceInfo>, u64), ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        no_running_rebalance(&snap, "a second one cannot start")?;
        let moves = self.plan_rebalance(table)?;
        if moves.is_empty() {
            return Ok((None, Self::applied_index(&snap)));
        }
        let id = format!(
            "r{}x{:08x}",
            Self::applied_index(&snap),
            rand::random::<u32>()
        );
        let (index, _) = self
            .write(MetaCommand::StartRebalance {
                id: id.clone(),
                moves,
            })
            .await?;
        Ok((self.node.snapshot().rebalance.clone(), index))
    }

    /// Declares a node failed and promotes an inactive surviving placement
    /// of every shard that is left without an active one. Returns the number
    /// of promoted shards and the log index. Re-replication is not scheduled
    /// yet.
    pub async fn mark_node_failed(
        &self,
        node: &NodeSelector,
        reason: &str,
    ) -> Result<(u64, u64), ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        let node_id = Self::resolve(&snap, node)?;
        let promotions = promotions(&snap, node_id);
        let reason = if reason.trim().is_empty() {
            "marked failed by an administrator"
        } else {
            reason
        };
        let (index, resp) = self
            .write(MetaCommand::MarkNodeFailed {
                node_id,
                reason: reason.to_owned(),
                promotions,
            })
            .await?;
        let promoted = match resp {
            MetaResponse::NodeFailed { promoted, .. } => promoted,
            _ => 0,
        };
        Ok((promoted, index))
    }

    /// Cancels the running rebalance. Returns it and the log index.
    pub async fn cancel_rebalance(&self) -> Result<(RebalanceInfo, u64), ApiError> {
        self.require_leader()?;
        let snap = self.node.snapshot();
        let id = match &snap.rebalance {
            Some(r) if r.state == RebalanceState::Running => r.id.clone(),
            _ => {
                return Err(ApiError::FailedPrecondition(
                    "no rebalance is running".into(),
                ))
            }
        };
        let (index, _) = self
            .write(MetaCommand::FinishRebalance {
                id,
                outcome: RebalanceOutcome::Cancelled,
            })
            .await?;
        let info = self
            .node
            .snapshot()
            .rebalance
            .clone()
            .ok_or_else(|| ApiError::Internal("the cancelled rebalance vanished".into()))?;
        Ok((info, index))
    }

    /// The current or last rebalance (leader's view).
    pub async fn rebalance_progress(&self) -> Result<Option<RebalanceInfo>, ApiError> {
        self.node.ensure_leader().await.map_err(|e| self.err(e))?;
        Ok(self.node.snapshot().rebalance.clone())
    }

    /// Adds a coordinator to the Raft group: as a learner, then (unless
    /// `learner_only`) as a voter once caught up.
    pub async fn add_coordinator(
        &self,
        id: RaftId,
        address: &str,
        learner_only: bool,
    ) -> Result<(Vec<CoordinatorMember>, u64), ApiError> {
        if address.trim().is_empty() {
            return Err(ApiError::InvalidArgument(
                "a coordinator needs an address (host:port)".into(),
            ));
        }
        self.require_leader()?;
        let node = CoordinatorNode::new(address);
        let index = if learner_only {
            self.node.add_learner(id, node).await
        } else {
            self.node.add_voter(id, node).await
        }
        .map_err(|e| self.err(e))?;
        Ok((self.coordinators(), index))
    }

    /// Removes a coordinator from the Raft group.
    pub async fn remove_coordinator(
        &self,
        id: RaftId,
    ) -> Result<(Vec<CoordinatorMember>, u64), ApiError> {
        self.require_leader()?;
        if !self.coordinators().iter().any(|m| m.id == id) {
            return Err(ApiError::NotFound(format!("no coordinator with id {id}")));
        }
        let index = self.node.remove_member(id).await.map_err(|e| self.err(e))?;
        Ok((self.coordinators(), index))
    }

    /// Members of the coordinator group, by id.
    pub fn coordinators(&self) -> Vec<CoordinatorMember> {
        let metrics = self.node.raft().metrics();
        let membership = metrics.borrow().membership_config.clone();
        let membership = membership.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| CoordinatorMember {
                id: *id,
                address: n.rpc_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// The nodes of the local catalogue with this member's health view
    /// (`pg_dist_node`). Does not check leadership.
    pub fn nodes(&self) -> Vec<NodeView> {
        let snap = self.node.snapshot();
        self.node_views(&snap)
    }

    /// Nodes whose heartbeats are late or that were declared failed: reads
    /// prefer other copies of their shards.
    pub fn unhealthy_nodes(&self, snap: &MetaState) -> std::collections::BTreeSet<NodeId> {
        snap.nodes
            .iter()
            .filter(|(id, info)| self.health.health(**id, info) != Health::Healthy)
            .map(|(id, _)| *id)
            .collect()
    }

    fn node_views(&self, snap: &MetaState) -> Vec<NodeView> {
        snap.nodes
            .iter()
            .map(|(id, info)| NodeView {
                id: *id,
                info: info.clone(),
                health: self.health.health(*id, info),
                placements: snap.data_placements_on(*id) as u64,
                last_heartbeat_unix_ms: self.health.last_heartbeat_unix_ms(*id),
            })
            .collect()
    }

    /// The whole cluster. Unless `allow_stale`, confirms leadership first.
    pub async fn cluster_state(&self, allow_stale: bool) -> Result<ClusterView, ApiError> {
        if !allow_stale {
            self.node.ensure_leader().await.map_err(|e| self.err(e))?;
        }
        let snap = self.node.snapshot();
        let term = self.node.raft().metrics().borrow().current_term;
        Ok(ClusterView {
            leader: self.node.leader().map(|(id, n)| (id, n.rpc_addr)),
            term,
            applied_index: Self::applied_index(&snap),
            nodes: self.node_views(&snap),
            shards: shard_totals(&snap),
            rebalance: snap.rebalance.clone(),
            coordinators: self.coordinators(),
        })
    }
}

/// Placements to activate when `failed` goes: for every shard with an
/// active placement there and no other active placement on a live node, an
/// inactive placement on a live node, if any.
fn promotions(s: &MetaState, failed: NodeId) -> Vec<PlacementId> {
    let live = |n: NodeId| n != failed && s.nodes.get(&n).is_some_and(|i| i.failed.is_none());
    let mut out = Vec::new();
    for p in s.placements.values() {
        if p.node_id != failed || p.state != PlacementState::Active {
            continue;
        }
        let others = s.placements_of(p.shard_id);
        if others
            .iter()
            .any(|(_, q)| live(q.node_id) && q.state == PlacementState::Active)
        {
            continue;
        }
        if let Some((id, _)) = others
            .iter()
            .find(|(_, q)| live(q.node_id) && q.state == PlacementState::Inactive)
        {
            out.push(*id);
        }
    }
    out
}

/// Refuses while a rebalance runs (`then`: what the caller may do).
fn no_running_rebalance(s: &MetaState, then: &str) -> Result<(), ApiError> {
    match s
        .rebalance
        .as_ref()
        .filter(|r| r.state == RebalanceState::Running)
    {
        Some(r) => Err(ApiError::FailedPrecondition(format!(
            "rebalance {} is already running; {then}",
            r.id
        ))),
        None => Ok(()),
    }
}

fn shard_totals(s: &MetaState) -> ShardTotals {
    let mut totals = ShardTotals::default();
    for (shard_id, shard) in &s.shards {
        totals.total += 1;
        let wanted = match s.tables.get(&shard.table_id).map(|t| &t.kind) {
            Some(TableKind::Hash { colocation_id, .. }) => s
                .colocations
                .get(colocation_id)
                .map_or(1, |c| u64::from(c.replication_factor)),
            _ => 1,
        };
        let healthy = s
            .placements_of(*shard_id)
            .iter()
            .filter(|(_, p)| {
                p.state == PlacementState::Active
                    && s.nodes.get(&p.node_id).is_some_and(|n| n.failed.is_none())
            })
            .count() as u64;
        if healthy < wanted {
            totals.under_replicated += 1;
        }
        if healthy == 0 {
            totals.unavailable += 1;
        }
    }
    totals
}

/// The tonic service: decodes requests, calls [`MetaApi`], encodes answers.
#[derive(Debug, Clone)]
pub struct MetadataGrpc {
    api: Arc<MetaApi>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MetadataService for MetadataGrpc {
    async fn get_cluster_state(
        &self,
        request: Request<pb::GetClusterStateRequest>,
    ) -> Reply<pb::GetClusterStateResponse> {
        let view = self
            .api
            .cluster_state(request.into_inner().allow_stale)
            .await?;
        Ok(Response::new(pb::GetClusterStateResponse {
            state: Some(view.into()),
        }))
    }

    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Reply<pb::RegisterWorkerResponse> {
        let r = request.into_inner();
        let port = super::pb_impl::port(r.port)?;
        let done = self.api.register_worker(&r.host, port, &r.group).await?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            node_id: done.node_id,
            already_registered: done.already_registered,
            log_index: done.log_index,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        let (health, draining) = self.api.heartbeat(request.into_inner().node_id)?;
        Ok(Response::new(pb::HeartbeatResponse {
            health: pb::NodeHealth::from(health).into(),
            draining,
        }))
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Reply<pb::AddNodeResponse> {
        let r = request.into_inner();
        let port = super::pb_impl::port(r.port)?;
        let done = self.api.add_node(&r.host, port, &r.group).await?;
        Ok(Response::new(pb::AddNodeResponse {
            node_id: done.node_id,
            already_present: done.already_registered,
            log_index: done.log_index,
        }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Reply<pb::DrainNodeResponse> {
        let node = super::pb_impl::selector(request.into_inner().node)?;
        let (info, log_index) = self.api.drain_node(&node).await?;
        Ok(Response::new(pb::DrainNodeResponse {
            rebalance_id: info.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
            moves_total: info.as_ref().map_or(0, |r| r.moves.len() as u64),
            log_index,
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Reply<pb::RemoveNodeResponse> {
        let node = super::pb_impl::selector(request.into_inner().node)?;
        let log_index = self.api.remove_node(&node).await?;
        Ok(Response::new(pb::RemoveNodeResponse { log_index }))
    }

    async fn rebalance(
        &self,
        request: Request<pb::RebalanceRequest>,
    ) -> Reply<pb::RebalanceResponse> {
        let r = request.into_inner();
        match pb::RebalanceAction::try_from(r.action).unwrap_or_default() {
            pb::RebalanceAction::Cancel => {
                let (info, log_index) = self.api.cancel_rebalance().await?;
                Ok(Response::new(pb::RebalanceResponse {
                    moves: Vec::new(),
                    rebalance_id: info.id.clone(),
                    progress: Some(super::pb_impl::progress(Some(&info))),
                    log_index,
                }))
            }
            pb::RebalanceAction::Unspecified => Err(Status::invalid_argument(
                "rebalance needs an action: PLAN, DRY_RUN, START or CANCEL",
            )),
            pb::RebalanceAction::Plan | pb::RebalanceAction::DryRun => {
                let table = (!r.table.is_empty()).then_some(r.table.as_str());
                let snap = self.api.node().snapshot();
                let moves = self.api.plan_rebalance(table)?;
                Ok(Response::new(pb::RebalanceResponse {
                    moves: super::pb_impl::planned_moves(&snap, &moves),
                    rebalance_id: String::new(),
                    progress: Some(super::pb_impl::progress(snap.rebalance.as_ref())),
                    log_index: 0,
                }))
            }
            pb::RebalanceAction::Start => {
                let table = (!r.table.is_empty()).then_some(r.table.as_str());
                let (info, log_index) = self.api.start_rebalance(table).await?;
                let snap = self.api.node().snapshot();
                Ok(Response::new(pb::RebalanceResponse {
                    moves: info
                        .as_ref()
                        .map(|i| super::pb_impl::planned_moves(&snap, &i.moves))
                        .unwrap_or_default(),
                    rebalance_id: info.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
                    progress: Some(super::pb_impl::progress(info.as_ref())),
                    log_index,
                }))
            }
        }
    }

    async fn get_rebalance_progress(
        &self,
        _request: Request<pb::GetRebalanceProgressRequest>,
    ) -> Reply<pb::GetRebalanceProgressResponse> {
        let info = self.api.rebalance_progress().await?;
        Ok(Response::new(pb::GetRebalanceProgressResponse {
            progress: Some(super::pb_impl::progress(info.as_ref())),
        }))
    }

    async fn mark_node_failed(
        &self,
        request: Request<pb::MarkNodeFailedRequest>,
    ) -> Reply<pb::MarkNodeFailedResponse> {
        let r = request.into_inner();
        let node = super::pb_impl::selector(r.node)?;
        let (promoted_shards, log_index) = self.api.mark_node_failed(&node, &r.reason).await?;
        Ok(Response::new(pb::MarkNodeFailedResponse {
            promoted_shards,
            rereplications_scheduled: 0,
            log_index,
        }))
    }

    async fn add_coordinator(
        &self,
        request: Request<pb::AddCoordinatorRequest>,
    ) -> Reply<pb::AddCoordinatorResponse> {
        let r = request.into_inner();
        let (members, log_index) = self
            .api
            .add_coordinator(r.node_id, &r.address, r.learner_only)
            .await?;
        Ok(Response::new(pb::AddCoordinatorResponse {
            members: members.into_iter().map(Into::into).collect(),
            log_index,
        }))
    }

    async fn remove_coordinator(
        &self,
        request: Request<pb::RemoveCoordinatorRequest>,
    ) -> Reply<pb::RemoveCoordinatorResponse> {
        let (members, log_index) = self
            .api
            .remove_coordinator(request.into_inner().node_id)
            .await?;
        Ok(Response::new(pb::RemoveCoordinatorResponse {
            members: members.into_iter().map(Into::into).collect(),
            log_index,
        }))
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
