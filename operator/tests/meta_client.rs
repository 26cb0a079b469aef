//! The metadata client against in-process tonic fakes of the coordinators:
//! a follower that answers "not leader" with a hint, a leader that serves
//! the state, and a follower that knows no leader.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use quiver_operator::meta_client::{IdentityResolver, MetaClient, MetaError};
use quiver_proto::meta::v1::*;
use support::meta::{bind, fake, serve, Behaviour};

fn state(leader: &str) -> ClusterState {
    ClusterState {
        leader_id: 1,
        leader_address: leader.to_owned(),
        term: 4,
        shards: Some(ShardTotals {
            total: 32,
            under_replicated: 1,
            misplaced: 0,
        }),
        nodes: vec![Node {
            node_id: 10,
            host: "db-worker-a-0.db-worker-a".into(),
            port: 9090,
            role: NodeRole::Worker.into(),
            group: "a".into(),
            active: true,
            health: NodeHealth::Healthy.into(),
            ..Node::default()
        }],
        ..ClusterState::default()
    }
}

fn client(endpoints: Vec<String>) -> MetaClient {
    MetaClient::new(
        endpoints,
        Arc::new(IdentityResolver),
        Duration::from_secs(2),
    )
}

#[tokio::test]
async fn follows_the_leader_hint_and_remembers_the_leader() {
    let (leader_listener, leader_addr) = bind().await;
    let (follower_listener, follower_addr) = bind().await;
    let leader = fake(Behaviour::Leader(Box::new(state(&leader_addr.to_string()))));
    let follower = fake(Behaviour::Follower(leader_addr.to_string()));
    let (leader_calls, follower_calls) = (leader.calls.clone(), follower.calls.clone());
    serve(leader_listener, leader);
    serve(follower_listener, follower);

    let meta = client(vec![follower_addr.to_string()]);
    let got = meta.cluster_state().await.expect("state via the hint");
    assert_eq!(got.leader_address, leader_addr.to_string());
    assert_eq!(got.shards.map(|s| s.under_replicated), Some(1));
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
    assert_eq!(leader_calls.load(Ordering::SeqCst), 1);
    assert_eq!(meta.known_leader().await, Some(leader_addr.to_string()));

    // The second call goes straight to the remembered leader.
    meta.register_worker("db-worker-a-1.db-worker-a", 9090, "a")
        .await
        .expect("registered");
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
    assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn skips_unreachable_coordinators() {
    let (leader_listener, leader_addr) = bind().await;
    let leader = fake(Behaviour::Leader(Box::new(state(&leader_addr.to_string()))));
    let registered = leader.registered.clone();
    serve(leader_listener, leader);
    // Nothing listens on a port we bound and dropped.
    let (gone, gone_addr) = bind().await;
    drop(gone);

    let meta = client(vec![gone_addr.to_string(), leader_addr.to_string()]);
    let response = meta
        .register_worker("db-worker-b-0.db-worker-b", 9090, "b")
        .await
        .expect("the second endpoint answers");
    assert_eq!(response.node_id, 11);
    let seen = registered.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, "db-worker-b-0.db-worker-b");
    assert_eq!(seen[0].group, "b");
}

#[tokio::test]
async fn no_leader_and_unreachable_are_distinct_errors() {
    let (listener, address) = bind().await;
    serve(listener, fake(Behaviour::Follower(String::new())));
    let err = client(vec![address.to_string()])
        .cluster_state()
        .await
        .expect_err("no leader");
    assert!(matches!(err, MetaError::NoLeader), "{err:?}");

    let (gone, gone_addr) = bind().await;
    drop(gone);
    let err = client(vec![gone_addr.to_string()])
        .cluster_state()
        .await
        .expect_err("unreachable");
    assert!(
        matches!(err, MetaError::Unreachable { ref tried, .. } if tried.len() == 1),
        "{err:?}"
    );

    let err = client(Vec::new())
        .cluster_state()
        .await
        .expect_err("no endpoints");
    assert!(matches!(err, MetaError::NoEndpoints), "{err:?}");
}

#[tokio::test]
async fn leader_errors_are_returned_not_retried() {
    let (listener, address) = bind().await;
    let leader = fake(Behaviour::Leader(Box::new(state(&address.to_string()))));
    let calls = leader.calls.clone();
    serve(listener, leader);
    let err = client(vec![address.to_string()])
        .drain_node(NodeRef {
            node_id: 9,
            ..NodeRef::default()
        })
        .await
        .expect_err("precondition");
    match err {
        MetaError::Rpc(status) => assert_eq!(status.message(), "node 9 does not exist"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_hint_loop_between_followers_ends() {
    let (a_listener, a_addr) = bind().await;
    let (b_listener, b_addr) = bind().await;
    serve(a_listener, fake(Behaviour::Follower(b_addr.to_string())));
    serve(b_listener, fake(Behaviour::Follower(a_addr.to_string())));
    let err = client(vec![a_addr.to_string()])
        .cluster_state()
        .await
        .expect_err("loop");
    assert!(matches!(err, MetaError::NoLeader), "{err:?}");
}
