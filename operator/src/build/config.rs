//! Step 3 of reconcile (builders): the node configuration files.
//!
//! One TOML file per role (and per worker group) in the `NAME-config`
//! ConfigMap, mounted as `/etc/quiver/quiver.toml`. The keys are the node's
//! contract: `bind_address`, `port`, `data_dir`, `http_port`,
//! `[cluster] rpc_port, coordinator_address, peers`. What differs per pod
//! (`node_id`, `advertise_address`) and the password come from environment
//! variables (`QUIVER_*`) set in the pod template, because a ConfigMap is
//! shared by every pod of a StatefulSet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{config_map_name, coordinator_name, coordinator_rpc_address, object_meta};
use super::{HTTP_PORT, PGWIRE_PORT, RPC_PORT};
use crate::validate::ValidDatabase;

/// Directory the persistent volume is mounted at.
pub const DATA_MOUNT: &str = "/var/lib/quiver";
/// `data_dir` inside the volume (a subdirectory, so `lost+found` is not in it).
pub const DATA_DIR: &str = "/var/lib/quiver/data";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_MOUNT: &str = "/etc/quiver";
/// The file the node reads (`--config`).
pub const CONFIG_FILE: &str = "/etc/quiver/quiver.toml";
/// Directory the TLS Secret is mounted at.
pub const TLS_MOUNT: &str = "/etc/quiver/tls";
/// ConfigMap key of the coordinators' file.
pub const COORDINATOR_KEY: &str = "coordinator.toml";

/// ConfigMap key of a worker group's file (`worker-GROUP.toml`).
pub fn worker_key(group: &str) -> String {
    format!("worker-{group}.toml")
}

/// The ConfigMap with every role's file.
pub fn build_config_map(db: &ValidDatabase) -> ConfigMap {
    let mut data = BTreeMap::from([(COORDINATOR_KEY.to_owned(), render_coordinator_toml(db))]);
    for group in &db.spec.worker_groups {
        data.insert(worker_key(&group.name), render_worker_toml(db, &group.name));
    }
    ConfigMap {
        metadata: object_meta(db, config_map_name(db), BTreeMap::new()),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// `quiver.toml` of the coordinators.
pub fn render_coordinator_toml(db: &ValidDatabase) -> String {
    let mut out = header(db, "coordinator");
    push_line(&mut out, "bind_address", &quote("0.0.0.0"));
    push_line(&mut out, "port", &PGWIRE_PORT.to_string());
    push_line(&mut out, "data_dir", &quote(DATA_DIR));
    push_line(&mut out, "http_port", &HTTP_PORT.to_string());
    push_tls(&mut out, db);
    out.push_str("\n[cluster]\n");
    out.push_str(
        "# node_id and advertise_address are per pod: QUIVER_NODE_ID, QUIVER_ADVERTISE_ADDRESS\n",
    );
    push_line(&mut out, "rpc_port", &RPC_PORT.to_string());
    push_line(&mut out, "peers", &peers(db));
    push_settings(&mut out, db);
    out
}

/// `quiver.toml` of one worker group.
pub fn render_worker_toml(db: &ValidDatabase, group: &str) -> String {
    let mut out = header(db, &format!("worker group {group}"));
    push_line(&mut out, "bind_address", &quote("0.0.0.0"));
    push_line(&mut out, "data_dir", &quote(DATA_DIR));
    push_line(&mut out, "http_port", &HTTP_PORT.to_string());
    out.push_str("\n[cluster]\n");
    out.push_str("# advertise_address is per pod: QUIVER_ADVERTISE_ADDRESS\n");
    push_line(&mut out, "rpc_port", &RPC_PORT.to_string());
    push_line(
        &mut out,
        "coordinator_address",
        &quote(&format!("{}:{RPC_PORT}", coordinator_name(db))),
    );
    push_line(&mut out, "peers", &peers(db));
    push_line(&mut out, "group", &quote(group));
    push_settings(&mut out, db);
    out
}

fn header(db: &ValidDatabase, what: &str) -> String {
    format!(
        "# Quiver {what} of DistributedDatabase {}/{}.\n# Rendered by quiver-operator; edits are overwritten.\n",
        db.namespace, db.name
    )
}

fn push_tls(out: &mut String, db: &ValidDatabase) {
    if db.spec.tls.as_ref().is_some_and(|t| t.enabled) {
        push_line(out, "tls_cert", &quote(&format!("{TLS_MOUNT}/tls.crt")));
        push_line(out, "tls_key", &quote(&format!("{TLS_MOUNT}/tls.key")));
    }
}

fn push_settings(out: &mut String, db: &ValidDatabase) {
    out.push_str("\n[sharding]\n");
    push_line(
        out,
        "shard_count",
        &db.spec.sharding.shard_count.to_string(),
    );
    push_line(
        out,
        "replication_factor",
        &db.spec.sharding.replication_factor.to_string(),
    );
    out.push_str("\n[failover]\n");
    push_line(
        out,
        "worker_failure_timeout_seconds",
        &db.spec.failover.worker_failure_timeout_seconds.to_string(),
    );
}

/// Every coordinator's gRPC address, as a TOML array.
fn peers(db: &ValidDatabase) -> String {
    let items: Vec<String> = (0..db.spec.coordinator.replicas)
        .map(|i| quote(&coordinator_rpc_address(db, i)))
        .collect();
    format!("[{}]", items.join(", "))
}

fn push_line(out: &mut String, key: &str, value: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} = {value}");
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_specials() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote("\u{1}"), r#""\u0001""#);
    }
}
