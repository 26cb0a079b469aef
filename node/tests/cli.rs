//! Real-process tests of the `quiver` binary's process contract: it starts on
//! the ports it is given and answers `/healthz`, it refuses bad configuration,
//! ports in use and unusable data directories with exactly one line on stderr
//! and a non-zero exit, and it exits 0 on SIGTERM.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, quiver, Proc, DEADLINE};

/// Runs quiver to completion (it is expected to fail fast).
fn run_to_end(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("quiver kept running; expected it to fail");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts a failure with `code` and exactly one stderr line; returns it.
fn one_error_line(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("quiver: error: "), "{err}");
    lines[0].to_owned()
}

fn ports_args(cmd: &mut Command, data: &Path) -> (u16, u16) {
    let (http, pg) = (free_port(), free_port());
    cmd.args(["--http-port", &http.to_string()])
        .args(["--port", &pg.to_string()])
        .args(["--rpc-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(data);
    (http, pg)
}

#[test]
fn serves_health_ready_and_metrics_then_exits_zero_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cmd = quiver();
    let (http, _) = ports_args(&mut cmd, &data);
    // Set but empty counts as unset.
    cmd.env("QUIVER_NODE_ID", "").env("QUIVER_PORT", "");
    let mut node = Proc::spawn(&mut cmd, http);

    let (status, body) = node.wait_http("/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("ok\n"), "{body}");
    assert!(data.is_dir(), "data dir created");

    let end = Instant::now() + DEADLINE;
    loop {
        let (status, body) = node.wait_http("/readyz");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < end, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (status, body) = node.wait_http("/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{body}"
    );
    for family in [
        "# TYPE quiver_queries counter",
        "# TYPE quiver_query_errors counter",
        "# TYPE quiver_query_duration_seconds histogram",
        "# TYPE quiver_rows_written counter",
        "# TYPE quiver_wal_fsyncs counter",
        "# TYPE quiver_wal_bytes counter",
        "# TYPE quiver_storage_bytes gauge",
        "# TYPE quiver_connections gauge",
    ] {
        assert!(body.contains(family), "missing {family}: {body}");
    }
    assert!(
        body.contains("quiver_queries_total{kind=\"select\"} 0"),
        "{body}"
    );

    let (status, stderr) = node.terminate();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let tmp = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = tmp.path().join("quiver.toml");
    std::fs::write(
        &config,
        format!(
            "http_port = {file_port}\nport = {}\ndata_dir = \"{}\"\n[cluster]\nrpc_port = {}\n",
            free_port(),
            tmp.path().join("data").display(),
            free_port(),
        ),
    )
    .unwrap();

    let cases: [(Option<u16>, Option<u16>, u16); 3] = [
        (None, None, file_port),
        (Some(env_port), None, env_port),
        (Some(env_port), Some(flag_port), flag_port),
    ];
    for (env, flag, expect) in cases {
        let mut cmd = quiver();
        cmd.arg("--config").arg(&config);
        if let Some(p) = env {
            cmd.env("QUIVER_HTTP_PORT", p.to_string());
        }
        if let Some(p) = flag {
            cmd.args(["--http-port", &p.to_string()]);
        }
        let mut node = Proc::spawn(&mut cmd, expect);
        let (status, _) = node.wait_http("/healthz");
        assert_eq!(status, 200, "env {env:?} flag {flag:?}");
        let (status, stderr) = node.terminate();
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
}

#[test]
fn bad_toml_is_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broken.toml");
    std::fs::write(&config, "port = [\n").unwrap();
    let out = run_to_end(quiver().arg("--config").arg(&config));
    let line = one_error_line(&out, 2);
    assert!(line.contains(&config.display().to_string()), "{line}");
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("quiver.toml");
    std::fs::write(&config, "port = 5433\n\n[cluster]\nnode_idd = 1\n").unwrap();
    let out = run_to_end(quiver().arg("--config").arg(&config));
    let line = one_error_line(&out, 2);
    assert!(line.contains("quiver.toml"), "{line}");
    assert!(
        line.contains("node_idd") && line.contains("line 4"),
        "{line}"
    );
}

#[test]
fn bad_executor_setting_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("quiver.toml");
    std::fs::write(
        &config,
        "[executor]\nexecutor_slow_start_interval = \"soon\"\n",
    )
    .unwrap();
    let out = run_to_end(quiver().arg("--config").arg(&config));
    let line = one_error_line(&out, 2);
    assert!(
        line.contains("executor.executor_slow_start_interval") && line.contains("soon"),
        "{line}"
    );
}

#[test]
fn missing_config_file_is_one_line() {
    let out = run_to_end(quiver().args(["--config", "/nonexistent/quiver.toml"]));
    let line = one_error_line(&out, 2);
    assert!(line.contains("/nonexistent/quiver.toml"), "{line}");
}

/// Starts that are refused create no data directory: nothing appears in
/// the working directory (a node without `--data-dir` would use
/// `./quiver-data` there).
#[test]
fn refused_starts_create_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let tries: [&[&str]; 4] = [
        &["--port", "seventy"],
        &["--role", "worker"],
        &["--bind-address", "0.0.0.0"],
        &["--config", "/nonexistent/quiver.toml"],
    ];
    for args in tries {
        let out = run_to_end(quiver().current_dir(cwd.path()).args(args));
        one_error_line(&out, 2);
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

#[test]
fn bad_flag_is_one_line() {
    let out = run_to_end(quiver().args(["--port", "seventy"]));
    let line = one_error_line(&out, 2);
    assert!(line.contains("--port"), "{line}");
    let out = run_to_end(quiver().arg("--no-such-flag"));
    one_error_line(&out, 2);
}

#[test]
fn port_in_use_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = quiver();
    cmd.args(["--http-port", &port.to_string()])
        .args(["--port", &free_port().to_string()])
        .args(["--rpc-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = run_to_end(&mut cmd);
    let line = one_error_line(&out, 1);
    assert_eq!(
        line,
        format!("quiver: error: cannot listen on 127.0.0.1:{port}: address already in use")
    );
}

#[test]
fn non_loopback_without_password_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = quiver();
    ports_args(&mut cmd, &tmp.path().join("data"));
    cmd.args(["--bind-address", "0.0.0.0"]);
    let out = run_to_end(&mut cmd);
    let line = one_error_line(&out, 2);
    assert_eq!(
        line,
        "quiver: error: refusing to listen on 0.0.0.0 without a password: set --password or QUIVER_PASSWORD"
    );

    // With QUIVER_PASSWORD it starts.
    let mut cmd = quiver();
    let (http, _) = ports_args(&mut cmd, &tmp.path().join("data"));
    cmd.args(["--bind-address", "0.0.0.0"])
        .env("QUIVER_PASSWORD", "s3cret");
    let mut node = Proc::spawn(&mut cmd, http);
    assert_eq!(node.wait_http("/healthz").0, 200);
    let (status, stderr) = node.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn unwritable_data_dir_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let mut cmd = quiver();
    ports_args(&mut cmd, &data);
    let out = run_to_end(&mut cmd);
    let line = one_error_line(&out, 1);
    assert!(
        line.starts_with(&format!(
            "quiver: error: data directory \"{}\" is not writable: ",
            data.display()
        )),
        "{line}"
    );
}

#[test]
fn worker_without_coordinator_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = quiver();
    ports_args(&mut cmd, &tmp.path().join("data"));
    cmd.args(["--role", "worker"]);
    let out = run_to_end(&mut cmd);
    let line = one_error_line(&out, 2);
    assert!(line.contains("coordinator_address"), "{line}");
}
