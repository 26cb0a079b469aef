//! Helpers shared by the real-process tests: free ports, the `quiver`
//! command with a clean environment, a child process that is killed when a
//! test ends early, readiness through `/readyz`, and a tokio-postgres
//! client.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// The working directory of every process a test starts: a node started
/// without `--data-dir` writes `./quiver-data` here, never into the source
/// tree.
pub fn scratch_cwd() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The `quiver` binary, without the caller's `QUIVER_*` settings and log
/// filter, with no stdin, run in [`scratch_cwd`].
pub fn quiver() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QUIVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.stdin(Stdio::null()).current_dir(scratch_cwd());
    cmd
}

/// A minimal HTTP/1.1 GET: status and whole response; `None` when nothing
/// listens yet.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp))
}

/// A running node, killed if the test ends early.
pub struct Proc {
    pub child: Child,
    pub args: Vec<String>,
    pub http: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `quiver` with `args`; `http` is its `--http-port`.
    pub fn start(args: Vec<String>, http: u16) -> Proc {
        Proc::spawn(quiver().args(&args), http)
    }

    /// Starts a prepared command (see [`quiver`]); `http` is its
    /// `--http-port`.
    pub fn spawn(cmd: &mut Command, http: u16) -> Proc {
        let args = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Proc { child, args, http }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    /// Polls `GET path` until it answers, failing if the process exits or
    /// the deadline passes.
    pub fn wait_http(&mut self, path: &str) -> (u16, String) {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(resp) = http_get(self.http, path) {
                return resp;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self.stderr();
                panic!("quiver {:?} exited with {status}: {err}", self.args);
            }
            assert!(Instant::now() < end, "{:?}: no answer in time", self.args);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&mut self) {
        let end = Instant::now() + DEADLINE;
        loop {
            if http_get(self.http, "/readyz").map(|r| r.0) == Some(200) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self.stderr();
                panic!("quiver {:?} exited with {status}: {err}", self.args);
            }
            assert!(Instant::now() < end, "{:?} never became ready", self.args);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit: its status and stderr.
    pub fn terminate(&mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "quiver did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr())
    }

    /// [`Proc::terminate`], asserting a clean exit.
    pub fn terminate_ok(&mut self) {
        let (status, err) = self.terminate();
        assert!(status.success(), "exit {status}: {err}");
    }
}

pub fn s(v: impl ToString) -> String {
    v.to_string()
}

/// A node's data directory and ports as flags.
pub fn node_args(dir: &Path, pg: u16, http: u16, rpc: u16) -> Vec<String> {
    vec![
        s("--data-dir"),
        s(dir.display()),
        s("--port"),
        s(pg),
        s("--http-port"),
        s(http),
        s("--rpc-port"),
        s(rpc),
    ]
}

/// A standalone node on free ports with its data in `dir`: the process and
/// its pgwire port.
pub fn start_standalone(dir: &Path) -> (Proc, u16) {
    let (pg, http, rpc) = (free_port(), free_port(), free_port());
    (Proc::start(node_args(dir, pg, http, rpc), http), pg)
}

/// A tokio-postgres client of the node on `port`.
pub async fn connect(port: u16) -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=quiver dbname=quiver"),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
