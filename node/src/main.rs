//! The `quiver` binary: the only place that parses flags and `QUIVER_*`
//! environment variables. It resolves them with the optional TOML file into a
//! plain [`NodeConfig`] (`defaults < file < env < flags`), sets up logging,
//! checks the data directory and hands over to [`quiver_node::server::run`].
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a bad command
//! line or configuration, 1 for anything else (port in use, unusable data
//! directory, runtime failure). Every failure is one line on stderr starting
//! `quiver: error:`; logs go to stdout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use quiver_node::server::config::{ConfigOverrides, LogFormat, NodeConfig, Role};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: under an OLTP load (many small,
/// short-lived allocations on several threads) glibc's allocator took about
/// a quarter of the node's CPU (ADR 0014).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad command line or configuration.
const EXIT_CONFIG: u8 = 2;
/// Any other failure.
const EXIT_FAILURE: u8 = 1;

/// Quiver: a distributed SQL database speaking the PostgreSQL wire protocol.
///
/// With no arguments, runs a standalone node with data in ./quiver-data and
/// pgwire on 127.0.0.1:5432. Every option can also be given as a QUIVER_*
/// environment variable or in the TOML file; flags win over the environment,
/// which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "quiver", version)]
struct Cli {
    /// What this node does in the cluster.
    #[arg(long, env = "QUIVER_ROLE", value_enum)]
    role: Option<CliRole>,
    /// TOML config file.
    #[arg(long, env = "QUIVER_CONFIG", value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Data directory (created if missing) [default: ./quiver-data].
    #[arg(long, env = "QUIVER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address every listener binds to [default: 127.0.0.1].
    #[arg(long, env = "QUIVER_BIND_ADDRESS", value_name = "ADDR")]
    bind_address: Option<String>,
    /// PostgreSQL wire protocol port [default: 5432].
    #[arg(long, env = "QUIVER_PORT")]
    port: Option<u16>,
    /// HTTP port for /healthz, /readyz, /metrics and admin [default: 6432].
    #[arg(long, env = "QUIVER_HTTP_PORT", value_name = "PORT")]
    http_port: Option<u16>,
    /// gRPC port for Flight, Raft and the metadata API [default: 9090].
    #[arg(long, env = "QUIVER_RPC_PORT", value_name = "PORT")]
    rpc_port: Option<u16>,
    /// This node's id in the cluster.
    #[arg(long, env = "QUIVER_NODE_ID", value_name = "ID")]
    node_id: Option<u64>,
    /// A coordinator's host:port (required for workers).
    #[arg(long, env = "QUIVER_COORDINATOR_ADDRESS", value_name = "HOST:PORT")]
    coordinator_address: Option<String>,
    /// Other coordinators, comma-separated host:port list.
    #[arg(
        long,
        env = "QUIVER_PEERS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    peers: Option<Vec<String>>,
    /// Address other nodes use to reach this one.
    #[arg(long, env = "QUIVER_ADVERTISE_ADDRESS", value_name = "HOST")]
    advertise_address: Option<String>,
    /// Password of the superuser `quiver` (required off loopback).
    #[arg(long, env = "QUIVER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM certificate chain; enables TLS together with --tls-key.
    #[arg(long, env = "QUIVER_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key; enables TLS together with --tls-cert.
    #[arg(long, env = "QUIVER_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Log filter, e.g. `info` or `quiver_node=debug` [default: RUST_LOG, else info].
    #[arg(long, env = "QUIVER_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, env = "QUIVER_LOG_FORMAT", value_enum)]
    log_format: Option<CliLogFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliRole {
    Standalone,
    Coordinator,
    Worker,
}

impl From<CliRole> for Role {
    fn from(r: CliRole) -> Self {
        match r {
            CliRole::Standalone => Role::Standalone,
            CliRole::Coordinator => Role::Coordinator,
            CliRole::Worker => Role::Worker,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

impl From<CliLogFormat> for LogFormat {
    fn from(f: CliLogFormat) -> Self {
        match f {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        }
    }
}

impl Cli {
    /// The explicitly given flags and env values.
    fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            role: self.role.map(Role::from),
            bind_address: self.bind_address.clone(),
            port: self.port,
            http_port: self.http_port,
            rpc_port: self.rpc_port,
            data_dir: self.data_dir.clone(),
            node_id: self.node_id,
            coordinator_address: self.coordinator_address.clone(),
            peers: self.peers.as_ref().map(|p| {
                p.iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            advertise_address: self.advertise_address.clone(),
            password: self.password.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.map(LogFormat::from),
        }
    }

    /// Defaults < file < env < flags, validated.
    fn resolve(&self) -> Result<NodeConfig, quiver_node::server::ConfigError> {
        NodeConfig::resolve(self.config.as_deref(), self.overrides())
    }
}

/// Prints one `quiver: error:` line on stderr.
fn fail(message: impl std::fmt::Display, code: u8) -> ExitCode {
    let line = message
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("quiver: error: {line}");
    ExitCode::from(code)
}

/// Sets up `tracing` on stdout: the explicit `--log-level` wins, then
/// `RUST_LOG`, then the file's `log_level`, then `info`.
fn init_tracing(cli: &Cli, config: &NodeConfig) -> Result<(), String> {
    let filter = match (&cli.log_level, std::env::var("RUST_LOG")) {
        (None, Ok(env)) if !env.trim().is_empty() => env,
        _ => config.log_level.clone(),
    };
    let env_filter =
        EnvFilter::try_new(&filter).map_err(|e| format!("invalid log_level \"{filter}\": {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stdout);
    let result = match config.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// Treats `QUIVER_X=` (set but empty, common in Kubernetes manifests) as
/// unset. Runs first in `main`, while the process has a single thread.
fn drop_empty_quiver_env_vars() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_string_lossy().starts_with("QUIVER_"))
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

fn main() -> ExitCode {
    drop_empty_quiver_env_vars();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    fail(format!("{first} (see quiver --help)"), EXIT_CONFIG)
                }
            };
        }
    };
    let config = match cli.resolve() {
        Ok(config) => config,
        Err(e) => return fail(e, EXIT_CONFIG),
    };
    if let Err(e) = init_tracing(&cli, &config) {
        return fail(e, EXIT_CONFIG);
    }
    if let Err(e) = quiver_node::server::prepare_data_dir(&config.data_dir) {
        return fail(e, EXIT_FAILURE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}"), EXIT_FAILURE),
    };
    let result = runtime.block_on(quiver_node::server::run(config));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(quiver_node::server::ServerError::Config(e)) => fail(e, EXIT_CONFIG),
        Err(e) => fail(e, EXIT_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_is_the_default_standalone_node() {
        let cli = Cli::try_parse_from(["quiver"]).unwrap();
        if std::env::vars().any(|(k, _)| k.starts_with("QUIVER_")) {
            return; // The environment of this test run sets options.
        }
        assert_eq!(cli.resolve().unwrap(), NodeConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.toml");
        std::fs::write(
            &file,
            "port = 1111\nhttp_port = 2222\ndata_dir = \"/from/file\"\n[cluster]\npeers = [\"f:1\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "quiver",
            "--config",
            file.to_str().unwrap(),
            "--http-port",
            "3333",
            "--role",
            "coordinator",
            "--peers",
            "a:1, b:2,",
            "--log-format",
            "json",
        ])
        .unwrap();
        let c = cli.resolve().unwrap();
        assert_eq!(c.port, 1111);
        assert_eq!(c.http_port, 3333);
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.role, Role::Coordinator);
        assert_eq!(c.peers, vec!["a:1", "b:2"]);
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
