//! Node configuration: the plain library struct every other part of the node
//! reads, the TOML file format, and the checks that run before anything binds
//! a port or touches the data directory.
//!
//! This module parses no flags and reads no environment variables: the
//! `quiver` binary turns its flags and `QUIVER_*` variables into a
//! [`ConfigOverrides`] and resolves `defaults < TOML file < overrides` with
//! [`NodeConfig::resolve`]. Every error renders as one line that names the
//! file or key at fault.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Errors from loading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file \"{path}\": {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file \"{path}\"{location}: {message}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// ` at line L, column C`, or empty when unknown.
        location: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value was given that cannot be used.
    #[error("invalid {key} \"{value}\": {reason}")]
    InvalidValue {
        /// The config key (also the flag name without `--`).
        key: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Bound to a non-loopback address without a password.
    #[error(
        "refusing to listen on {bind_address} without a password: set --password or QUIVER_PASSWORD"
    )]
    PasswordRequired {
        /// The configured bind address.
        bind_address: String,
    },
    /// Only one of `tls_cert` and `tls_key` was given.
    #[error("{given} is set but {missing} is not: give both or neither")]
    TlsIncomplete {
        /// The key that was set.
        given: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// Two listeners were configured on the same port.
    #[error("{first} and {second} are both set to {port}: ports must be distinct")]
    PortConflict {
        /// One key.
        first: &'static str,
        /// The other key.
        second: &'static str,
        /// The shared port.
        port: u16,
    },
    /// A role-specific key is missing.
    #[error("role {role} requires {key} (--{flag} or QUIVER_{env})")]
    RoleRequires {
        /// The configured role.
        role: Role,
        /// The missing config key.
        key: &'static str,
        /// Its flag, without `--`.
        flag: &'static str,
        /// Its env var, without `QUIVER_`.
        env: &'static str,
    },
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Coordinator and worker in one process (the default).
    #[default]
    Standalone,
    /// Plans queries and holds the cluster metadata; serves pgwire.
    Coordinator,
    /// Holds shards and executes plan fragments; no pgwire, no web UI.
    Worker,
}

impl Role {
    /// The lowercase name used in flags and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }

    /// Whether this role serves the PostgreSQL wire protocol.
    pub fn serves_pgwire(self) -> bool {
        !matches!(self, Role::Worker)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standalone" => Ok(Role::Standalone),
            "coordinator" => Ok(Role::Coordinator),
            "worker" => Ok(Role::Worker),
            _ => Err(ConfigError::InvalidValue {
                key: "role",
                value: s.to_owned(),
                reason: "expected standalone, coordinator or worker",
            }),
        }
    }
}

/// File format of an external table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
}

/// An external table from `[[tables]]`, read in place.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTableConfig {
    /// The SQL name of the table.
    pub name: String,
    /// A file or directory of files.
    pub path: PathBuf,
    /// How the files are encoded.
    pub format: TableFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How pgwire clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No password asked (loopback only, no password configured).
    Trust,
    /// SCRAM-SHA-256 against the superuser password.
    Scram,
}

/// The resolved configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// What this node does.
    pub role: Role,
    /// Address every listener binds to.
    pub bind_address: String,
    /// pgwire port.
    pub port: u16,
    /// HTTP port (`/healthz`, `/readyz`, `/metrics`, admin REST).
    pub http_port: u16,
    /// gRPC port (Flight, Raft, metadata API).
    pub rpc_port: u16,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// This node's id in the cluster, if assigned.
    pub node_id: Option<u64>,
    /// `host:port` of a coordinator (for workers and joining coordinators).
    pub coordinator_address: Option<String>,
    /// Other coordinators, `host:port`.
    pub peers: Vec<String>,
    /// Address other nodes use to reach this one, if not `bind_address`.
    pub advertise_address: Option<String>,
    /// Password of the superuser `quiver`.
    pub password: Option<String>,
    /// PEM certificate chain for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// External tables read in place.
    pub tables: Vec<ExternalTableConfig>,
    /// A `tracing` filter, e.g. `info` or `quiver_node=debug,info`.
    pub log_level: String,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// Worker group (failure domain) of a worker, from `[cluster] group`.
    pub worker_group: Option<String>,
    /// Cluster defaults from `[sharding]` and `[failover]`, as the operator
    /// renders them (used by coordinators).
    pub sharding: ShardingConfig,
    /// `[executor]`: connections and streams to workers.
    pub executor: super::executor::ExecutorConfig,
}

/// `[sharding]` and `[failover]` settings of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardingConfig {
    pub shard_count: Option<u32>,
    pub replication_factor: Option<u32>,
    pub worker_failure_timeout_seconds: Option<u64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            role: Role::Standalone,
            bind_address: "127.0.0.1".to_owned(),
            port: 5432,
            http_port: 6432,
            rpc_port: 9090,
            data_dir: PathBuf::from("./quiver-data"),
            node_id: None,
            coordinator_address: None,
            peers: Vec::new(),
            advertise_address: None,
            password: None,
            tls_cert: None,
            tls_key: None,
            tables: Vec::new(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            worker_group: None,
            sharding: ShardingConfig::default(),
            executor: Default::default(),
        }
    }
}

/// Values given on the command line or in the environment. `None` (or an
/// absent list) means "not given": the file or default value stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// `--role`.
    pub role: Option<Role>,
    /// `--bind-address`.
    pub bind_address: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--http-port`.
    pub http_port: Option<u16>,
    /// `--rpc-port`.
    pub rpc_port: Option<u16>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--node-id`.
    pub node_id: Option<u64>,
    /// `--coordinator-address`.
    pub coordinator_address: Option<String>,
    /// `--peers`.
    pub peers: Option<Vec<String>>,
    /// `--advertise-address`.
    pub advertise_address: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// The TOML file, as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    role: Option<Role>,
    bind_address: Option<String>,
    port: Option<u16>,
    http_port: Option<u16>,
    data_dir: Option<PathBuf>,
    password: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    tables: Option<Vec<ExternalTableConfig>>,
    cluster: Option<ClusterSection>,
    sharding: Option<ShardingSection>,
    failover: Option<FailoverSection>,
    executor: Option<super::executor::ExecutorConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardingSection {
    shard_count: Option<u32>,
    replication_factor: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverSection {
    worker_failure_timeout_seconds: Option<u64>,
}

/// The `[cluster]` table of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    node_id: Option<u64>,
    rpc_port: Option<u16>,
    coordinator_address: Option<String>,
    peers: Option<Vec<String>>,
    advertise_address: Option<String>,
    group: Option<String>,
}

/// Sets `$dst` to the value inside `$src` when there is one.
macro_rules! set_if_some {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src {
            $dst = v;
        }
    };
    ($dst:expr, some $src:expr) => {
        if let Some(v) = $src {
            $dst = Some(v);
        }
    };
}

impl NodeConfig {
    /// Resolves `defaults < file < overrides` and validates the result.
    pub fn resolve(file: Option<&Path>, overrides: ConfigOverrides) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            config.merge_file(path)?;
        }
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file and lays its keys over `self`.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.merge_toml(&text, path)
    }

    /// Parses TOML text (named `path` in errors) and lays its keys over `self`.
    pub fn merge_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        set_if_some!(self.role, file.role);
        set_if_some!(self.bind_address, file.bind_address);
        set_if_some!(self.port, file.port);
        set_if_some!(self.http_port, file.http_port);
        set_if_some!(self.data_dir, file.data_dir);
        set_if_some!(self.password, some file.password);
        set_if_some!(self.tls_cert, some file.tls_cert);
        set_if_some!(self.tls_key, some file.tls_key);
        set_if_some!(self.log_level, file.log_level);
        set_if_some!(self.log_format, file.log_format);
        set_if_some!(self.tables, file.tables);
        if let Some(cluster) = file.cluster {
            set_if_some!(self.node_id, some cluster.node_id);
            set_if_some!(self.rpc_port, cluster.rpc_port);
            set_if_some!(self.coordinator_address, some cluster.coordinator_address);
            set_if_some!(self.peers, cluster.peers);
            set_if_some!(self.advertise_address, some cluster.advertise_address);
            set_if_some!(self.worker_group, some cluster.group);
        }
        if let Some(sh) = file.sharding {
            set_if_some!(self.sharding.shard_count, some sh.shard_count);
            set_if_some!(self.sharding.replication_factor, some sh.replication_factor);
        }
        if let Some(e) = file.executor {
            self.executor = e;
        }
        if let Some(f) = file.failover {
            set_if_some!(
                self.sharding.worker_failure_timeout_seconds,
                some f.worker_failure_timeout_seconds
            );
        }
        Ok(())
    }

    /// Lays explicitly given flags and env values over `self`.
    pub fn apply(&mut self, o: ConfigOverrides) {
        set_if_some!(self.role, o.role);
        set_if_some!(self.bind_address, o.bind_address);
        set_if_some!(self.port, o.port);
        set_if_some!(self.http_port, o.http_port);
        set_if_some!(self.rpc_port, o.rpc_port);
        set_if_some!(self.data_dir, o.data_dir);
        set_if_some!(self.node_id, some o.node_id);
        set_if_some!(self.coordinator_address, some o.coordinator_address);
        set_if_some!(self.peers, o.peers);
        set_if_some!(self.advertise_address, some o.advertise_address);
        set_if_some!(self.password, some o.password);
        set_if_some!(self.tls_cert, some o.tls_cert);
        set_if_some!(self.tls_key, some o.tls_key);
        set_if_some!(self.log_level, o.log_level);
        set_if_some!(self.log_format, o.log_format);
    }

    /// Checks the combination of values; run before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.executor.check()?;
        let bind = self.bind_address.trim();
        if bind.is_empty() || bind.contains(char::is_whitespace) {
            return Err(ConfigError::InvalidValue {
                key: "bind_address",
                value: self.bind_address.clone(),
                reason: "expected an IP address or host name",
            });
        }
        if self.password.as_deref() == Some("") {
            return Err(ConfigError::InvalidValue {
                key: "password",
                value: String::new(),
                reason: "must not be empty",
            });
        }
        if self.password.is_none() && !self.is_loopback() {
            return Err(ConfigError::PasswordRequired {
                bind_address: self.bind_address.clone(),
            });
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::TlsIncomplete {
                    given: "tls_cert",
                    missing: "tls_key",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::TlsIncomplete {
                    given: "tls_key",
                    missing: "tls_cert",
                })
            }
            _ => {}
        }
        self.check_ports()?;
        if self.role == Role::Worker && self.coordinator_address.is_none() {
            return Err(ConfigError::RoleRequires {
                role: self.role,
                key: "coordinator_address",
                flag: "coordinator-address",
                env: "COORDINATOR_ADDRESS",
            });
        }
        for table in &self.tables {
            if table.name.trim().is_empty() {
                return Err(ConfigError::InvalidValue {
                    key: "tables.name",
                    value: table.name.clone(),
                    reason: "must not be empty",
                });
            }
        }
        Ok(())
    }

    /// Ports 0 (pick any free port) may repeat; others must be distinct.
    fn check_ports(&self) -> Result<(), ConfigError> {
        let mut ports = vec![("http_port", self.http_port), ("rpc_port", self.rpc_port)];
        if self.role.serves_pgwire() {
            ports.insert(0, ("port", self.port));
        }
        for (i, (first, a)) in ports.iter().enumerate() {
            for (second, b) in &ports[i + 1..] {
                if a == b && *a != 0 {
                    return Err(ConfigError::PortConflict {
                        first,
                        second,
                        port: *a,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `bind_address` is a loopback address (127.0.0.0/8, ::1,
    /// `localhost`).
    pub fn is_loopback(&self) -> bool {
        let addr = self.bind_address.trim();
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        if addr.eq_ignore_ascii_case("localhost") {
            return true;
        }
        addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// SCRAM when a password is set or the node is reachable from other
    /// hosts; trust otherwise.
    pub fn auth_mode(&self) -> AuthMode {
        if self.password.is_some() || !self.is_loopback() {
            AuthMode::Scram
        } else {
            AuthMode::Trust
        }
    }

    /// `host:port` for a listener on `port`, with IPv6 addresses bracketed.
    pub fn listen_addr(&self, port: u16) -> String {
        let host = self.bind_address.trim();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// Where the pgwire frontend listens.
    pub fn pgwire_addr(&self) -> String {
        self.listen_addr(self.port)
    }

    /// Where the HTTP server listens.
    pub fn http_addr(&self) -> String {
        self.listen_addr(self.http_port)
    }

    /// Where the gRPC server listens.
    pub fn rpc_addr(&self) -> String {
        self.listen_addr(self.rpc_port)
    }
}

/// Turns a TOML error into one line with the position, if known.
fn parse_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let location = err
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Parse {
        path: path.to_owned(),
        location,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_keys_the_operator_renders() {
        let mut c = NodeConfig::default();
        c.merge_toml(
            "role = \"worker\"\n[cluster]\ngroup = \"a\"\ncoordinator_address = \"db-coordinator-0.db-coordinator:9090\"\npeers = []\n[sharding]\nshard_count = 8\nreplication_factor = 2\n[failover]\nworker_failure_timeout_seconds = 30\n",
            Path::new("q.toml"),
        )
        .unwrap();
        assert_eq!(c.worker_group.as_deref(), Some("a"));
        assert_eq!(c.sharding.shard_count, Some(8));
        assert_eq!(c.sharding.replication_factor, Some(2));
        assert_eq!(c.sharding.worker_failure_timeout_seconds, Some(30));
        assert!(c
            .merge_toml("[sharding]\nbogus = 1\n", Path::new("q.toml"))
            .is_err());
    }

    fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        let mut c = NodeConfig::default();
        c.merge_toml(text, Path::new("test.toml"))?;
        Ok(c)
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = NodeConfig::default();
        assert_eq!(c.role, Role::Standalone);
        assert_eq!(c.pgwire_addr(), "127.0.0.1:5432");
        assert_eq!(c.http_addr(), "127.0.0.1:6432");
        assert_eq!(c.rpc_addr(), "127.0.0.1:9090");
        assert_eq!(c.data_dir, PathBuf::from("./quiver-data"));
        assert_eq!(c.auth_mode(), AuthMode::Trust);
        c.validate().unwrap();
        assert_eq!(
            NodeConfig::resolve(None, ConfigOverrides::default()).unwrap(),
            c
        );
    }

    #[test]
    fn full_file_is_read() {
        let c = from_toml(
            r#"
            role = "coordinator"
            bind_address = "10.0.0.5"
            port = 15432
            http_port = 16432
            data_dir = "/var/lib/quiver"
            password = "s3cret"
            tls_cert = "/etc/q/cert.pem"
            tls_key = "/etc/q/key.pem"
            log_level = "debug"
            log_format = "json"

            [[tables]]
            name = "trips"
            path = "/data/trips.parquet"
            format = "parquet"

            [[tables]]
            name = "zones"
            path = "/data/zones.csv"
            format = "csv"

            [cluster]
            node_id = 3
            rpc_port = 19090
            coordinator_address = "coord-0:9090"
            peers = ["coord-1:9090", "coord-2:9090"]
            advertise_address = "coord-0.quiver"
            "#,
        )
        .unwrap();
        assert_eq!(c.role, Role::Coordinator);
        assert_eq!(c.bind_address, "10.0.0.5");
        assert_eq!((c.port, c.http_port, c.rpc_port), (15432, 16432, 19090));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/quiver"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.tables.len(), 2);
        assert_eq!(c.tables[1].format, TableFormat::Csv);
        assert_eq!(c.node_id, Some(3));
        assert_eq!(c.peers, vec!["coord-1:9090", "coord-2:9090"]);
        assert_eq!(c.advertise_address.as_deref(), Some("coord-0.quiver"));
        assert_eq!(c.auth_mode(), AuthMode::Scram);
        c.validate().unwrap();
    }

    #[test]
    fn precedence_is_defaults_then_file_then_overrides() {
        let mut c =
            from_toml("port = 1111\nhttp_port = 2222\n[cluster]\npeers = [\"a:1\"]\n").unwrap();
        c.apply(ConfigOverrides {
            http_port: Some(3333),
            ..Default::default()
        });
        assert_eq!(c.port, 1111, "file beats default, untouched by overrides");
        assert_eq!(c.http_port, 3333, "override beats file");
        assert_eq!(c.rpc_port, 9090, "default stays when nothing is given");
        assert_eq!(c.peers, vec!["a:1"]);
        c.apply(ConfigOverrides {
            peers: Some(vec![]),
            ..Default::default()
        });
        assert!(c.peers.is_empty(), "an explicit empty list overrides");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = from_toml("colour = \"blue\"\n").unwrap_err().to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = from_toml("[cluster]\nnode_idd = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_idd") && err.contains("line 2"), "{err}");
        let err = from_toml("[[tables]]\nname = \"t\"\npath = \"p\"\nformat = \"orc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("orc"), "{err}");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let err = from_toml("port = [\n").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid config file \"test.toml\""),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = from_toml("port = 70000\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn non_loopback_requires_a_password() {
        let mut c = NodeConfig {
            bind_address: "0.0.0.0".into(),
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "refusing to listen on 0.0.0.0 without a password: set --password or QUIVER_PASSWORD"
        );
        assert_eq!(c.auth_mode(), AuthMode::Scram);
        c.password = Some("pw".into());
        c.validate().unwrap();
        for loopback in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
            let c = NodeConfig {
                bind_address: loopback.into(),
                ..Default::default()
            };
            assert!(c.is_loopback(), "{loopback}");
            c.validate().unwrap();
            assert_eq!(c.auth_mode(), AuthMode::Trust);
        }
        let c = NodeConfig {
            password: Some("pw".into()),
            ..Default::default()
        };
        assert_eq!(c.auth_mode(), AuthMode::Scram);
        let c = NodeConfig {
            password: Some(String::new()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("password"));
    }

    #[test]
    fn tls_needs_both_files() {
        let c = NodeConfig {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls_cert") && err.contains("tls_key"), "{err}");
        let c = NodeConfig {
            tls_key: Some("k.pem".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = NodeConfig {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn ports_must_be_distinct_except_zero() {
        let c = NodeConfig {
            http_port: 5432,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "port and http_port are both set to 5432: ports must be distinct"
        );
        let c = NodeConfig {
            port: 0,
            http_port: 0,
            rpc_port: 0,
            ..Default::default()
        };
        c.validate().unwrap();
        // A worker serves no pgwire, so its `port` may collide.
        let c = NodeConfig {
            role: Role::Worker,
            coordinator_address: Some("c:9090".into()),
            port: 9090,
            ..Default::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn worker_needs_a_coordinator() {
        let c = NodeConfig {
            role: Role::Worker,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "role worker requires coordinator_address (--coordinator-address or QUIVER_COORDINATOR_ADDRESS)"
        );
        assert_eq!("worker".parse::<Role>().unwrap(), Role::Worker);
        assert!("boss".parse::<Role>().is_err());
    }

    #[test]
    fn ipv6_listen_addresses_are_bracketed() {
        let c = NodeConfig {
            bind_address: "::1".into(),
            ..Default::default()
        };
        assert_eq!(c.http_addr(), "[::1]:6432");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = NodeConfig::resolve(
            Some(Path::new("/nonexistent/quiver.toml")),
            ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cannot read config file \"/nonexistent/quiver.toml\""),
            "{err}"
        );
    }
}
