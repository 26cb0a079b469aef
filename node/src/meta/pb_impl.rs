//! Conversions between the metadata API's Rust types and `quiver.meta.v1`.
//!
//! Step in the flow: [`super::api::MetadataGrpc`] decodes requests and
//! encodes answers with these; nothing else in [`crate::meta`] knows the
//! proto. Errors become gRPC statuses here, including the "not leader"
//! status with its hint ([`quiver_proto::not_leader`]).

use quiver_proto::meta::v1 as pb;
use tonic::Status;

use super::api::{ApiError, ClusterView, CoordinatorMember, NodeSelector, NodeView};
use super::health::Health;
use super::state::{NodeRole, RebalanceInfo, RebalanceState};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotLeader {
                leader_id,
                leader_addr,
            } => quiver_proto::not_leader(&pb::NotLeader {
                leader_id: leader_id.unwrap_or(0),
                leader_address: leader_addr.unwrap_or_default(),
            }),
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unimplemented(m) => Status::unimplemented(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(m) => Status::internal(m),
        }
    }
}

/// A gRPC port as a `u16`.
pub(super) fn port(port: u32) -> Result<u16, Status> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("invalid port {port}")))
}

/// A `NodeRef`: by id when `node_id` is set, else by host and port.
pub(super) fn selector(node: Option<pb::NodeRef>) -> Result<NodeSelector, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("missing node"))?;
    if node.node_id != 0 {
        return Ok(NodeSelector::Id(node.node_id));
    }
    if node.host.trim().is_empty() {
        return Err(Status::invalid_argument(
            "name the node by node_id or by host and port",
        ));
    }
    Ok(NodeSelector::Addr {
        host: node.host,
        port: port(node.port)?,
    })
}

impl From<Health> for pb::NodeHealth {
    fn from(h: Health) -> Self {
        match h {
            Health::Healthy => pb::NodeHealth::Healthy,
            Health::Suspect => pb::NodeHealth::Suspect,
            Health::Failed => pb::NodeHealth::Failed,
        }
    }
}

impl From<NodeRole> for pb::NodeRole {
    fn from(r: NodeRole) -> Self {
        match r {
            NodeRole::Coordinator => pb::NodeRole::Coordinator,
            NodeRole::Worker => pb::NodeRole::Worker,
        }
    }
}

impl From<CoordinatorMember> for pb::CoordinatorMember {
    fn from(m: CoordinatorMember) -> Self {
        let suffrage = if m.voter {
            pb::CoordinatorSuffrage::Voter
        } else {
            pb::CoordinatorSuffrage::Learner
        };
        pb::CoordinatorMember {
            node_id: m.id,
            address: m.address,
            suffrage: suffrage.into(),
        }
    }
}

impl From<NodeView> for pb::Node {
    fn from(n: NodeView) -> Self {
        pb::Node {
            node_id: n.id,
            host: n.info.host,
            port: u32::from(n.info.port),
            role: pb::NodeRole::from(n.info.role).into(),
            group: n.info.group,
            active: n.info.active,
            health: pb::NodeHealth::from(n.health).into(),
            draining: n.info.draining,
            placements: n.placements,
            last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
        }
    }
}

/// Progress of `info`, or IDLE when no rebalance ran.
/// Planned moves as the API reports them (the bytes of the shard group's
/// placements, as last recorded).
pub(super) fn planned_moves(
    s: &crate::meta::state::MetaState,
    moves: &[crate::meta::state::ShardMove],
) -> Vec<pb::ShardMove> {
    moves
        .iter()
        .filter_map(|m| {
            let p = s.placements.get(&m.placement_id)?;
            let table = s
                .shards
                .get(&p.shard_id)
                .and_then(|sh| s.tables.get(&sh.table_id))
                .map(|t| t.name.clone())
                .unwrap_or_default();
            Some(pb::ShardMove {
                shard_id: p.shard_id,
                table,
                from_node_id: m.from,
                to_node_id: m.to,
                bytes: p.length,
            })
        })
        .collect()
}

pub(super) fn progress(info: Option<&RebalanceInfo>) -> pb::RebalanceProgress {
    let Some(r) = info else {
        return pb::RebalanceProgress {
            state: pb::RebalanceState::Idle.into(),
            ..Default::default()
        };
    };
    let (state, error) = match &r.state {
        RebalanceState::Running => (pb::RebalanceState::Running, String::new()),
        RebalanceState::Completed => (pb::RebalanceState::Completed, String::new()),
        RebalanceState::Cancelled => (pb::RebalanceState::Cancelled, String::new()),
        RebalanceState::Failed(e) => (pb::RebalanceState::Failed, e.clone()),
    };
    pb::RebalanceProgress {
        state: state.into(),
        rebalance_id: r.id.clone(),
        moves_done: r.moves_done,
        moves_total: r.moves.len() as u64,
        bytes_left: 0,
        error,
    }
}

impl From<ClusterView> for pb::ClusterState {
    fn from(v: ClusterView) -> Self {
        let (leader_id, leader_address) = v.leader.unwrap_or_default();
        let (read_only, read_only_reason) = if v.shards.unavailable > 0 {
            (
                true,
                format!(
                    "{} shard(s) have no active placement on a live node",
                    v.shards.unavailable
                ),
            )
        } else {
            (false, String::new())
        };
        pb::ClusterState {
            leader_id,
            leader_address,
            term: v.term,
            applied_index: v.applied_index,
            nodes: v.nodes.into_iter().map(Into::into).collect(),
            shards: Some(pb::ShardTotals {
                total: v.shards.total,
                under_replicated: v.shards.under_replicated,
                misplaced: 0,
            }),
            rebalance: Some(progress(v.rebalance.as_ref())),
            coordinators: v.coordinators.into_iter().map(Into::into).collect(),
            read_only,
            read_only_reason,
        }
    }
}
