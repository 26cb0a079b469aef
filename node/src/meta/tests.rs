//! Tests of the Raft pieces together: the storage conformance suite of
//! openraft, snapshots, restarts, and a 3-member in-process cluster.

use std::path::Path;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};

use super::types::{Entry, StorageError};
use super::*;

const WAIT: Duration = Duration::from_secs(20);

struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let log = LogStore::open(dir.path())
            .await
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let sm = StateMachineStore::open(dir.path())
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

/// openraft's own conformance tests for log stores and state machines.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStores).unwrap();
}

fn fast_config(id: RaftId, dir: &Path) -> MetaNodeConfig {
    let mut c = MetaNodeConfig::new(id, format!("c-{id}:9090"), dir);
    c.heartbeat_interval = Duration::from_millis(100);
    c.election_timeout_min = Duration::from_millis(500);
    c.election_timeout_max = Duration::from_millis(1000);
    c
}

fn worker(i: usize) -> MetaCommand {
    MetaCommand::RegisterWorker {
        host: format!("w-{i}"),
        port: 9090,
        group: "g".into(),
    }
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload,
    }
}

fn snap_files(raft_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(raft_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn snapshot_build_and_install() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = StateMachineStore::open(leader_dir.path()).unwrap();
    let membership = Membership::new(vec![[0u64].into()], None);
    let mut entries = vec![entry(0, EntryPayload::Membership(membership))];
    entries.extend((1..=5).map(|i| entry(i, EntryPayload::Normal(worker(i as usize)))));
    let responses = leader.apply(entries).await.unwrap();
    assert_eq!(responses.len(), 6);
    assert_eq!(leader.snapshot().nodes.len(), 5);

    let first = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(first.meta.last_log_id.map(|l| l.index), Some(5));
    leader
        .apply([entry(6, EntryPayload::Normal(worker(6)))])
        .await
        .unwrap();
    let second = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    // Only the newest snapshot is kept.
    assert_eq!(snap_files(leader_dir.path()).len(), 1);
    let current = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, second.meta);

    // Ship it to a follower.
    let mut follower = StateMachineStore::open(follower_dir.path()).unwrap();
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    *data = *current.snapshot;
    follower
        .install_snapshot(&current.meta, data)
        .await
        .unwrap();
    assert_eq!(*follower.snapshot(), *leader.snapshot());
    let (applied, members) = follower.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(6));
    assert_eq!(members.voter_ids().collect::<Vec<_>>(), vec![0]);

    // The installed snapshot survives a restart of the follower.
    drop(follower);
    let reopened = StateMachineStore::open(follower_dir.path()).unwrap();
    assert_eq!(*reopened.snapshot(), *leader.snapshot());
    assert_eq!(snap_files(follower_dir.path()).len(), 1);
}

#[tokio::test]
async fn node_restarts_from_snapshot_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(0, dir.path());
    config.snapshot_every = 5;
    config.keep_logs = 2;
    let node = MetaNode::start(config.clone(), InProcessRaftRouter::new())
        .await
        .unwrap();
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), 0);
    assert!(node.is_leader());
    assert_eq!(
        node.leader().map(|(id, n)| (id, n.rpc_addr)),
        Some((0, "c-0:9090".into()))
    );
    let mut last = 0;
    for i in 0..12 {
        let (index, resp) = node.write(worker(i)).await.unwrap();
        assert!(matches!(
            resp,
            MetaResponse::NodeRegistered {
                already_registered: false,
                ..
            }
        ));
        assert!(index > last);
        last = index;
    }
    // Wait for a snapshot and a purge, then write past them.
    node.raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 5) && m.purged.is_some(),
            "snapshot and purge",
        )
        .await
        .unwrap();
    let (index, _) = node.write(worker(100)).await.unwrap();
    let (newest, again) = node.write(worker(3)).await.unwrap();
    assert_eq!(
        again,
        MetaResponse::NodeRegistered {
            node_id: 4,
            already_registered: true
        }
    );
    let before = node.snapshot();
    assert_eq!(before.nodes.len(), 13);
    // A snapshot of everything, so none is still being written when the
    // node stops (the policy may have started one for the last writes).
    // A trigger during a build is ignored, so trigger until one covers it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        node.raft().trigger().snapshot().await.unwrap();
        let covered = node
            .raft()
            .wait(Some(Duration::from_millis(200)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= newest),
                "a snapshot of the last write",
            )
            .await;
        if covered.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot of the last write"
        );
    }
    node.shutdown().await.unwrap();
    drop(node);
    assert_eq!(snap_files(&dir.path().join("raft")).len(), 1);

    let node = MetaNode::start(config, InProcessRaftRouter::new())
        .await
        .unwrap();
    node.wait_applied(index, WAIT).await.unwrap();
    let after = node.snapshot();
    assert_eq!(after.nodes, before.nodes);
    assert_eq!(after.next_node_id, before.next_node_id);
    assert_eq!(after.last_membership, before.last_membership);
    // And it leads again and takes writes.
    node.wait_for_leader(WAIT).await.unwrap();
    let (_, resp) = node.write(worker(200)).await.unwrap();
    assert_eq!(
        resp,
        MetaResponse::NodeRegistered {
            node_id: 14,
            already_registered: false
        }
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_the_loss_of_the_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router = InProcessRaftRouter::new();
    let mut nodes = Vec::new();
    for (id, dir) in dirs.iter().enumerate() {
        let mut config = fast_config(id as RaftId, dir.path());
        if id > 0 {
            config.bootstrap = Bootstrap::Join;
        }
        let node = MetaNode::start(config, router.clone()).await.unwrap();
        router.register(id as RaftId, node.raft().clone());
        nodes.push(node);
    }
    assert_eq!(nodes[0].wait_for_leader(WAIT).await.unwrap(), 0);
    // Grow {0} -> {0,1} -> {0,1,2}, as the operator does.
    for id in 1..3u64 {
        nodes[0]
            .add_voter(id, CoordinatorNode::new(format!("c-{id}:9090")))
            .await
            .unwrap();
    }
    let voters: Vec<RaftId> = nodes[0]
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![0, 1, 2]);

    let (first_index, resp) = nodes[0].write(worker(1)).await.unwrap();
    assert!(matches!(
        resp,
        MetaResponse::NodeRegistered { node_id: 1, .. }
    ));
    for node in &nodes {
        node.wait_applied(first_index, WAIT).await.unwrap();
        assert_eq!(node.snapshot().nodes.len(), 1);
    }
    // A follower refuses writes and names the leader.
    match nodes[1].write(worker(2)).await {
        Err(MetaError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(0));
            assert_eq!(leader_addr.as_deref(), Some("c-0:9090"));
        }
        other => panic!("a follower accepted a write: {other:?}"),
    }

    // Kill the leader.
    nodes[0].shutdown().await.unwrap();
    router.unregister(0);
    let new_leader = nodes[1]
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some_and(|l| l != 0), "a new leader")
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let (leader, other) = if new_leader == 1 {
        (&nodes[1], &nodes[2])
    } else {
        (&nodes[2], &nodes[1])
    };
    // The new leader may still be committing its first entry; retry the
    // write only on NotLeader, with metrics as the readiness signal.
    let (index, resp) = loop {
        match leader.write(worker(2)).await {
            Err(MetaError::NotLeader { .. }) => {
                leader
                    .raft()
                    .wait(Some(WAIT))
                    .metrics(|m| m.current_leader == Some(leader.id()), "leadership")
                    .await
                    .unwrap();
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(
        resp,
        MetaResponse::NodeRegistered {
            node_id: 2,
            already_registered: false
        }
    );
    other.wait_applied(index, WAIT).await.unwrap();
    let state = other.snapshot();
    assert_eq!(state.nodes.len(), 2);
    assert_eq!(state.nodes[&1].host, "w-1");
    assert_eq!(state.nodes[&2].host, "w-2");
    for node in &nodes[1..] {
        node.shutdown().await.unwrap();
    }
}

/// A member serving its Raft over gRPC on a loopback port.
struct GrpcMember {
    node: MetaNode,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcMember {
    async fn kill(&mut self) {
        self.node.shutdown().await.unwrap();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_replicate_over_grpc() {
    use tonic::transport::server::TcpIncoming;

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let incomings: Vec<TcpIncoming> = (0..3)
        .map(|_| TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap())
        .collect();
    let addrs: Vec<String> = incomings
        .iter()
        .map(|i| i.local_addr().unwrap().to_string())
        .collect();
    let mut members = Vec::new();
    for (id, (dir, incoming)) in dirs.iter().zip(incomings).enumerate() {
        let mut config = fast_config(id as RaftId, dir.path());
        config.rpc_addr = addrs[id].clone();
        if id > 0 {
            config.bootstrap = Bootstrap::Join;
        }
        let node = MetaNode::start(config, GrpcRaftNetworkFactory::new())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = RaftGrpcService::server(node.raft().clone());
        let server = tokio::spawn(
            tonic::transport::Server::builder().serve_with_incoming_shutdown(
                service,
                incoming,
                async {
                    let _ = stopped.await;
                },
            ),
        );
        members.push(GrpcMember {
            node,
            stop: Some(stop),
            server,
        });
    }
    assert_eq!(members[0].node.wait_for_leader(WAIT).await.unwrap(), 0);
    for id in 1..3u64 {
        members[0]
            .node
            .add_voter(id, CoordinatorNode::new(addrs[id as usize].clone()))
            .await
            .unwrap();
    }
    let (index, _) = members[0].node.write(worker(1)).await.unwrap();
    for m in &members {
        m.node.wait_applied(index, WAIT).await.unwrap();
        assert_eq!(m.node.snapshot().nodes[&1].host, "w-1");
    }

    // Stop the leader's process (Raft and server); the others carry on.
    members[0].kill().await;
    let new_leader = members[1]
        .node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some_and(|l| l != 0), "a new leader")
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let leader = &members[new_leader as usize].node;
    let (index, resp) = loop {
        match leader.write(worker(2)).await {
            Err(MetaError::NotLeader { .. }) => {
                leader
                    .raft()
                    .wait(Some(WAIT))
                    .metrics(|m| m.current_leader == Some(leader.id()), "leadership")
                    .await
                    .unwrap();
            }
            other => break other.unwrap(),
        }
    };
    assert!(matches!(
        resp,
        MetaResponse::NodeRegistered { node_id: 2, .. }
    ));
    for m in &members[1..] {
        m.node.wait_applied(index, WAIT).await.unwrap();
        assert_eq!(m.node.snapshot().nodes.len(), 2);
    }
    for m in &mut members[1..] {
        m.kill().await;
    }
}
