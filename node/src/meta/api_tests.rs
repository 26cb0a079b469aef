//! Loopback tonic tests of the metadata API: two coordinators on real
//! sockets, every RPC on the leader, and the follower's "not leader" answer.

use std::time::Duration;

use quiver_proto::meta::v1 as pb;
use quiver_proto::meta::v1::metadata_service_client::MetadataServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use super::*;
use crate::meta::{GrpcRaftNetworkFactory, MetaNodeConfig};
use crate::server::cluster::serve_grpc;
use crate::server::ShutdownSignal;

const WAIT: Duration = Duration::from_secs(20);

struct Member {
    api: Arc<MetaApi>,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn member(id: u64, bootstrap: crate::meta::Bootstrap, shutdown: &ShutdownSignal) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = MetaNodeConfig::new(id, addr.clone(), dir.path());
    config.bootstrap = bootstrap;
    config.heartbeat_interval = Duration::from_millis(100);
    config.election_timeout_min = Duration::from_millis(400);
    config.election_timeout_max = Duration::from_millis(800);
    let node = MetaNode::start(config, GrpcRaftNetworkFactory::new())
        .await
        .unwrap();
    let api = MetaApi::new(Arc::new(node), HealthTracker::default());
    serve_grpc(listener, Some(api.clone()), None, shutdown.clone());
    Member {
        api,
        addr,
        _dir: dir,
    }
}

async fn client(addr: &str) -> MetadataServiceClient<Channel> {
    MetadataServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn by_addr(host: &str, port: u32) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node_id: 0,
        host: host.into(),
        port,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_on_the_leader_and_not_leader_on_a_follower() {
    let shutdown = ShutdownSignal::new();
    let leader = member(0, crate::meta::Bootstrap::SingleVoter, &shutdown).await;
    let follower = member(1, crate::meta::Bootstrap::Join, &shutdown).await;
    leader.api.node().wait_for_leader(WAIT).await.unwrap();
    let mut c = client(&leader.addr).await;

    // Coordinators: add the second one as a voter.
    let added = c
        .add_coordinator(pb::AddCoordinatorRequest {
            node_id: 1,
            address: follower.addr.clone(),
            learner_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(added.log_index > 0);
    let voters = added
        .members
        .iter()
        .filter(|m| m.suffrage == pb::CoordinatorSuffrage::Voter as i32)
        .count();
    assert_eq!(voters, 2, "{added:?}");

    // Workers.
    let reg = c
        .register_worker(pb::RegisterWorkerRequest {
            host: "w1".into(),
            port: 7001,
            group: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reg.already_registered && reg.log_index > 0);
    let again = c
        .register_worker(pb::RegisterWorkerRequest {
            host: "w1".into(),
            port: 7001,
            group: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_registered);
    assert_eq!(again.node_id, reg.node_id);
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            node_id: reg.node_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.health, pb::NodeHealth::Healthy as i32);
    assert!(!hb.draining);
    let missing = c
        .heartbeat(pb::HeartbeatRequest { node_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let added = c
        .add_node(pb::AddNodeRequest {
            host: "w2".into(),
            port: 7002,
            group: "b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!added.already_present && added.log_index > reg.log_index);

    // The follower refuses mutations with the leader's address.
    follower
        .api
        .node()
        .wait_applied(added.log_index, WAIT)
        .await
        .unwrap();
    let mut f = client(&follower.addr).await;
    let status = f
        .add_node(pb::AddNodeRequest {
            host: "w3".into(),
            port: 7003,
            group: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let hint = quiver_proto::leader_hint(&status).expect("a not-leader status");
    assert_eq!(hint.leader_id, 0);
    assert_eq!(hint.leader_address, leader.addr);
    let status = f
        .get_cluster_state(pb::GetClusterStateRequest { allow_stale: false })
        .await
        .unwrap_err();
    assert!(quiver_proto::leader_hint(&status).is_some(), "{status:?}");
    // A stale read is answered by the follower itself.
    let stale = f
        .get_cluster_state(pb::GetClusterStateRequest { allow_stale: true })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(stale.nodes.len(), 2);
    assert_eq!(stale.leader_address, leader.addr);

    // Cluster state on the leader.
    let state = c
        .get_cluster_state(pb::GetClusterStateRequest { allow_stale: false })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(state.leader_id, 0);
    assert_eq!(state.leader_address, leader.addr);
    assert!(state.term >= 1 && state.applied_index >= added.log_index);
    assert_eq!(state.coordinators.len(), 2);
    let w1 = state.nodes.iter().find(|n| n.host == "w1").unwrap();
    assert_eq!(w1.health, pb::NodeHealth::Healthy as i32);
    assert!(w1.last_heartbeat_unix_ms > 0);
    let w2 = state.nodes.iter().find(|n| n.host == "w2").unwrap();
    assert_eq!(w2.health, pb::NodeHealth::Suspect as i32);
    assert_eq!(state.shards.unwrap().total, 0);

    // Drain, fail, remove.
    let drained = c
        .drain_node(pb::DrainNodeRequest {
            node: by_addr("w2", 7002),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drained.moves_total, 0);
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            node_id: added.node_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.draining);
    let failed = c
        .mark_node_failed(pb::MarkNodeFailedRequest {
            node: by_addr("w2", 7002),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failed.log_index > drained.log_index);
    let removed = c
        .remove_node(pb::RemoveNodeRequest {
            node: Some(pb::NodeRef {
                node_id: added.node_id,
                host: String::new(),
                port: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.log_index > failed.log_index);
    let gone = c
        .remove_node(pb::RemoveNodeRequest {
            node: by_addr("w2", 7002),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Rebalance: no table, so nothing to plan or start, and nothing runs.
    for action in [pb::RebalanceAction::Plan, pb::RebalanceAction::Start] {
        let plan = c
            .rebalance(pb::RebalanceRequest {
                action: action as i32,
                table: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(plan.moves.is_empty() && plan.rebalance_id.is_empty());
    }
    let unknown = c
        .rebalance(pb::RebalanceRequest {
            action: pb::RebalanceAction::Plan as i32,
            table: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let cancel = c
        .rebalance(pb::RebalanceRequest {
            action: pb::RebalanceAction::Cancel as i32,
            table: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::FailedPrecondition);
    assert!(quiver_proto::leader_hint(&cancel).is_none());
    let progress = c
        .get_rebalance_progress(pb::GetRebalanceProgressRequest {})
        .await
        .unwrap()
        .into_inner()
        .progress
        .unwrap();
    assert_eq!(progress.state, pb::RebalanceState::Idle as i32);

    // Back to one coordinator.
    let left = c
        .remove_coordinator(pb::RemoveCoordinatorRequest { node_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.members.len(), 1, "{left:?}");

    shutdown.trigger();
    follower.api.node().shutdown().await.unwrap();
    leader.api.node().shutdown().await.unwrap();
}

#[test]
fn promotions_totals_and_error_mapping() {
    let mut s = MetaState::default();
    let cmd = MetaCommand::RegisterWorker {
        host: "w".into(),
        port: 1,
        group: String::new(),
    };
    crate::meta::apply(&mut s, &cmd);
    s.placements.insert(
        1,
        crate::meta::PlacementInfo {
            shard_id: 1,
            node_id: 1,
            state: PlacementState::Active,
            length: 0,
        },
    );
    assert_eq!(promotions(&s, 1), Vec::<PlacementId>::new());
    let totals = shard_totals(&s);
    assert_eq!(totals.total, 0);
    let e = ApiError::FailedPrecondition("x".into());
    assert_eq!(e.sqlstate(), "55000");
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(quiver_proto::leader_hint(&status).is_none());
}
