//! Real-process cluster tests: one coordinator and three workers of the
//! `quiver` binary on free ports. Workers register over gRPC and heartbeat;
//! the coordinator shows them in `pg_dist_node`, keeps them across a restart
//! (the metadata is a persisted Raft log) and notices a killed worker.
//! Readiness is always awaited through `/readyz`, never by sleeping.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{connect, free_port, node_args, s, Proc};
use quiver_proto::meta::v1 as pb;
use quiver_proto::meta::v1::metadata_service_client::MetadataServiceClient;
use tokio_postgres::Client;

struct Coordinator {
    proc: Proc,
    pg: u16,
    rpc: u16,
}

fn coordinator_args(dir: &Path, pg: u16, http: u16, rpc: u16) -> Vec<String> {
    let mut args = vec![s("--role"), s("coordinator"), s("--node-id"), s(0)];
    args.extend(node_args(dir, pg, http, rpc));
    args
}

fn start_coordinator(dir: &Path) -> Coordinator {
    let (pg, http, rpc) = (free_port(), free_port(), free_port());
    Coordinator {
        proc: Proc::start(coordinator_args(dir, pg, http, rpc), http),
        pg,
        rpc,
    }
}

fn start_worker(dir: &Path, coordinator_rpc: u16) -> (Proc, u16) {
    let (http, rpc) = (free_port(), free_port());
    let args = vec![
        s("--role"),
        s("worker"),
        s("--data-dir"),
        s(dir.display()),
        s("--http-port"),
        s(http),
        s("--rpc-port"),
        s(rpc),
        s("--coordinator-address"),
        format!("127.0.0.1:{coordinator_rpc}"),
    ];
    (Proc::start(args, http), rpc)
}

type NodeRow = (String, i32, String, bool, String);

async fn dist_nodes(client: &Client) -> Vec<NodeRow> {
    client
        .query(
            "SELECT nodename, nodeport, noderole, isactive, health FROM pg_dist_node ORDER BY nodeport",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn healthy_worker(port: u16) -> NodeRow {
    (
        s("127.0.0.1"),
        i32::from(port),
        s("worker"),
        true,
        s("healthy"),
    )
}

/// Polls `pg_dist_node` until `want` holds or the deadline passes.
async fn wait_nodes(
    client: &Client,
    within: Duration,
    want: impl Fn(&[NodeRow]) -> bool,
) -> Vec<NodeRow> {
    let end = Instant::now() + within;
    loop {
        let rows = dist_nodes(client).await;
        if want(&rows) {
            return rows;
        }
        assert!(Instant::now() < end, "pg_dist_node never matched: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut coord = start_coordinator(&tmp.path().join("coordinator"));
    coord.proc.wait_ready().await;

    let mut workers = Vec::new();
    for i in 0..3 {
        let (mut w, rpc) = start_worker(&tmp.path().join(format!("worker-{i}")), coord.rpc);
        w.wait_ready().await;
        workers.push((w, rpc));
    }
    let mut ports: Vec<u16> = workers.iter().map(|(_, p)| *p).collect();
    ports.sort_unstable();
    let expected: Vec<NodeRow> = ports.iter().map(|p| healthy_worker(*p)).collect();

    let client = connect(coord.pg).await;
    let rows = wait_nodes(&client, Duration::from_secs(10), |r| {
        r == expected.as_slice()
    })
    .await;
    assert_eq!(rows, expected);

    // The same view over gRPC, from the metadata API on the rpc port.
    let mut meta = MetadataServiceClient::connect(format!("http://127.0.0.1:{}", coord.rpc))
        .await
        .unwrap();
    let state = meta
        .get_cluster_state(pb::GetClusterStateRequest { allow_stale: false })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(state.nodes.len(), 3);
    assert!(state
        .nodes
        .iter()
        .all(|n| n.health == pb::NodeHealth::Healthy as i32));
    assert_eq!(state.leader_address, format!("127.0.0.1:{}", coord.rpc));
    assert_eq!(state.coordinators.len(), 1);
    drop(meta);
    // Workers listen on their rpc port.
    for p in &ports {
        TcpStream::connect((Ipv4Addr::LOCALHOST, *p)).unwrap();
    }

    // quiver_add_node / quiver_remove_node go through the metadata API,
    // from the extended and the simple query protocol.
    let id: i64 = client
        .query_one("SELECT quiver_add_node('10.255.0.1', 65000)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(id > 3, "{id}");
    let again: i64 = client
        .query_one("SELECT quiver_add_node('10.255.0.1', 65000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, id);
    let rows = dist_nodes(&client).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[3],
        (s("10.255.0.1"), 65000, s("worker"), true, s("suspect"))
    );
    let removed: bool = client
        .query_one("SELECT quiver_remove_node('10.255.0.1', 65000)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(removed);
    assert_eq!(dist_nodes(&client).await.len(), 3);
    client
        .simple_query("SELECT quiver_add_node('10.255.0.2', 65001)")
        .await
        .unwrap();
    assert_eq!(dist_nodes(&client).await.len(), 4);
    client
        .simple_query("SELECT quiver_remove_node('10.255.0.2', 65001)")
        .await
        .unwrap();
    assert_eq!(dist_nodes(&client).await.len(), 3);
    let err = client
        .query_one("SELECT quiver_remove_node('10.255.0.1', 65000)", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42704", "{db:?}");
    assert!(
        db.message().contains("no node at 10.255.0.1:65000"),
        "{db:?}"
    );
    drop(client);

    // The catalogue survives a coordinator restart.
    coord.proc.terminate_ok();
    let args = coord.proc.args.clone();
    let http = coord.proc.http;
    drop(coord.proc);
    let mut restarted = Proc::start(args, http);
    restarted.wait_ready().await;
    let client = connect(coord.pg).await;
    let rows = wait_nodes(&client, Duration::from_secs(15), |r| {
        r == expected.as_slice()
    })
    .await;
    assert_eq!(rows, expected);

    // A killed worker stops being healthy within a few seconds.
    let (mut victim, victim_port) = workers.remove(1);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let rows = wait_nodes(&client, Duration::from_secs(10), |r| {
        r.iter()
            .any(|n| n.1 == i32::from(victim_port) && n.4 != "healthy")
    })
    .await;
    for n in &rows {
        let want = if n.1 == i32::from(victim_port) {
            "suspect"
        } else {
            "healthy"
        };
        assert_eq!(n.4, want, "{rows:?}");
    }

    for (mut w, _) in workers {
        w.terminate_ok();
    }
    restarted.terminate_ok();
}

#[tokio::test]
async fn node_functions_need_the_coordinator_role() {
    let tmp = tempfile::tempdir().unwrap();
    let (pg, http) = (free_port(), free_port());
    let args = vec![
        s("--data-dir"),
        s(tmp.path().display()),
        s("--port"),
        s(pg),
        s("--http-port"),
        s(http),
    ];
    let mut node = Proc::start(args, http);
    node.wait_ready().await;
    let client = connect(pg).await;
    for sql in [
        "SELECT quiver_add_node('w', 9090)",
        "SELECT quiver_remove_node('w', 9090)",
    ] {
        let err = client.query_one(sql, &[]).await.unwrap_err();
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), "55000", "{db:?}");
        assert!(
            db.message().contains("requires the coordinator role"),
            "{db:?}"
        );
    }
    node.terminate_ok();
}
