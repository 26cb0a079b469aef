//! What travels between coordinator and workers over Arrow Flight.
//!
//! Step in the flow: the coordinator's [`super::client`] encodes, the
//! worker's [`super::worker`] decodes. Everything is JSON except row data,
//! which is Arrow IPC in Flight messages:
//! - `do_get` ticket: [`QueryTicket`] (a SQL fragment over shard tables);
//! - `do_put` descriptor command: [`PutCommand`] (rows for one shard table);
//! - `do_action` type + body: [`Action`], answered by [`ActionReply`].
//!
//! Errors cross as a `tonic::Status` whose message is a [`WireError`] in
//! JSON, so a unique violation on a shard still reaches the client as 23505.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::sql::SqlError;
use crate::storage::table::TableMeta;

/// A SQL fragment to run on a worker, inside transaction `gid` if given
/// (so it sees that transaction's own writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryTicket {
    pub sql: String,
    pub gid: Option<String>,
    /// Table names in `sql` to read as shard tables: `(table, shard table)`.
    #[serde(default)]
    pub tables: Vec<(String, String)>,
    /// The pinned snapshot to read ([`super::read_point`]).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// Points every reference to a table of `tables` at its shard table, keeping
/// the table's name as the alias (so qualified column names still resolve).
pub fn map_tables(
    stmt: &mut datafusion::sql::sqlparser::ast::Statement,
    tables: &[(String, String)],
) {
    use datafusion::sql::sqlparser::ast::{
        Ident, ObjectName, TableAlias, TableFactor, VisitMut, VisitorMut,
    };
    struct Mapper<'a>(&'a [(String, String)]);
    impl VisitorMut for Mapper<'_> {
        type Break = ();
        fn pre_visit_table_factor(
            &mut self,
            tf: &mut TableFactor,
        ) -> std::ops::ControlFlow<Self::Break> {
            if let TableFactor::Table { name, alias, .. } = tf {
                let bare = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone());
                if let Some((orig, shard)) = bare.and_then(|b| self.0.iter().find(|(t, _)| *t == b))
                {
                    *name = ObjectName::from(vec![Ident::new(shard.clone())]);
                    if alias.is_none() {
                        *alias = Some(TableAlias {
                            explicit: true,
                            name: Ident::new(orig.clone()),
                            columns: vec![],
                            at: None,
                        });
                    }
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    if tables.is_empty() {
        return;
    }
    let _ = stmt.visit(&mut Mapper(tables));
}

/// Rows for shard table `table`, staged in transaction `gid`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutCommand {
    pub gid: String,
    pub table: String,
    /// The rows are a shuffle's intermediate result, kept in memory under
    /// `table` (not a transaction's writes).
    #[serde(default)]
    pub intermediate: bool,
}

/// One map task of a shuffle: run `sql` (with `tables` mapped, inside
/// `gid` when open here) and send each row to bucket
/// `hash(key columns) % targets.len()`, as intermediate table
/// `__shuffle_<qid>_<side>_<bucket>` on `targets[bucket]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShuffleMap {
    pub qid: String,
    pub side: String,
    pub sql: String,
    pub tables: Vec<(String, String)>,
    pub gid: Option<String>,
    /// The pinned snapshot to read ([`super::read_point`]).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Positions of the key columns in the result.
    pub keys: Vec<usize>,
    /// `host:port` of each bucket's worker.
    pub targets: Vec<String>,
    /// The result's schema (Arrow IPC), so empty buckets have one too.
    pub schema: Vec<u8>,
}

/// A `do_action` request; the Flight action type is [`Action::kind`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Create a shard table (`meta.name` is the shard table's name).
    CreateShard { meta: TableMeta },
    /// Drop shard tables (missing ones are fine).
    DropShards { names: Vec<String> },
    /// Run DML or DDL statements inside transaction `gid`. `snapshot`: the
    /// pin of a repeatable-read block, which the transaction then reads
    /// throughout (and fails with 40001 on a row changed since).
    Exec {
        gid: String,
        sql: String,
        #[serde(default)]
        snapshot: Option<String>,
    },
    /// Make `gid`'s writes durable and promise to commit them on request.
    Prepare { gid: String },
    /// Commit `gid` (prepared, or still open: one-phase commit).
    Commit { gid: String },
    /// Forget `gid` and its writes.
    Abort { gid: String },
    /// The transactions the worker knows.
    ListTxns,
    /// Run a shuffle's map task.
    ShuffleMap(ShuffleMap),
    /// Forget the intermediate results of shuffle `qid`.
    DropIntermediates { qid: String },
    /// Keep the current version readable as snapshot `id`.
    Pin { id: String },
    /// Release snapshot `id`.
    Unpin { id: String },
    /// The row-lock waits between distributed transactions
    /// ([`crate::dist::deadlock`]).
    LockWaits,
    /// End `gid`'s lock wait with a deadlock error.
    BreakWait { gid: String },
    /// The definitions of shard tables (a move's target creates its copies
    /// from them).
    ShardMetas { names: Vec<String> },
    /// On a move's target: bring copies of `tables` up to date with
    /// `source` ([`super::worker_move`]).
    MovePull(MovePull),
    /// On a move's source: take no new writer into `tables` until
    /// `deadline_ms` (Unix ms), and answer once every transaction that
    /// wrote to them has ended.
    MoveFence {
        job: String,
        tables: Vec<String>,
        deadline_ms: u64,
    },
    /// On a move's source: lift job `job`'s fence (the move goes on or ends).
    MoveUnfence { job: String },
    /// On a move's source: job `job` switched; its tables take no write
    /// again, and what it shipped is forgotten.
    MoveRetire { job: String },
}

/// One round of a move's copy, asked of its target: for each shard table,
/// the changes on `source` since round `base` (a full copy when `None`, or
/// when the source no longer has that round) are fetched and applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovePull {
    pub job: String,
    /// `host:port` of the source worker.
    pub source: String,
    pub tables: Vec<String>,
    pub round: u64,
    pub base: Option<u64>,
}

/// A `do_get` ticket on a move's source: the changes of `table` between
/// the version shipped in round `base` and now, recorded as round `round`.
/// The first message's app metadata is a [`MoveHeader`] (JSON); each
/// following message carries, as its body, an Arrow IPC stream of stored
/// rows (row ids included) and, as its app metadata, the CRC32 of that body
/// (4 bytes, little-endian), which the target checks before it decodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveTicket {
    pub move_job: String,
    pub table: String,
    pub round: u64,
    pub base: Option<u64>,
}

/// What a move's changes carry besides their rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoveHeader {
    /// Not a diff: the target must start its copy again from nothing.
    pub full: bool,
    /// Row ids deleted since the base round.
    pub deleted: Vec<u64>,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreateShard { .. } => "create_shard",
            Action::DropShards { .. } => "drop_shards",
            Action::Exec { .. } => "exec",
            Action::Prepare { .. } => "prepare",
            Action::Commit { .. } => "commit",
            Action::Abort { .. } => "abort",
            Action::ListTxns => "list_txns",
            Action::ShuffleMap(_) => "shuffle_map",
            Action::DropIntermediates { .. } => "drop_intermediates",
            Action::Pin { .. } => "pin",
            Action::Unpin { .. } => "unpin",
            Action::LockWaits => "lock_waits",
            Action::BreakWait { .. } => "break_wait",
            Action::ShardMetas { .. } => "shard_metas",
            Action::MovePull(_) => "move_pull",
            Action::MoveFence { .. } => "move_fence",
            Action::MoveUnfence { .. } => "move_unfence",
            Action::MoveRetire { .. } => "move_retire",
        }
    }
}

/// A transaction as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnEntry {
    pub gid: String,
    pub prepared: bool,
}

/// The answer to an [`Action`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionReply {
    /// Rows affected (`Exec`), rows staged (`do_put`).
    pub rows: u64,
    /// `ListTxns`.
    pub txns: Vec<TxnEntry>,
    /// `LockWaits`: (waiting gid, gid it waits for).
    #[serde(default)]
    pub waits: Vec<(String, String)>,
    /// `ShardMetas`.
    #[serde(default)]
    pub metas: Vec<TableMeta>,
    /// `MovePull`: bytes (Arrow IPC) and rows moved in the round.
    #[serde(default)]
    pub bytes: u64,
}

/// A [`SqlError`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
}

impl From<&SqlError> for WireError {
    fn from(e: &SqlError) -> Self {
        WireError {
            sqlstate: e.sqlstate.to_string(),
            message: e.message.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// SQLSTATEs as `&'static str`: a 5-character code is interned once.
fn intern_sqlstate(code: &str) -> &'static str {
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return "XX000";
    }
    let set = CODES.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut set) = set.lock() else {
        return "XX000";
    };
    if let Some(c) = set.get(code) {
        return c;
    }
    let leaked: &'static str = Box::leak(code.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

impl WireError {
    pub fn into_sql(self) -> SqlError {
        let mut e = SqlError::new(intern_sqlstate(&self.sqlstate), self.message);
        e.detail = self.detail;
        e
    }
}

/// A `Status` carrying `e` (the worker side).
pub fn status_of(e: &SqlError) -> tonic::Status {
    let body = serde_json::to_string(&WireError::from(e)).unwrap_or_else(|_| e.message.clone());
    tonic::Status::aborted(body)
}

/// The [`SqlError`] in a `Status` from a worker, or `None` when the status
/// is a transport or protocol failure rather than a SQL error.
pub fn sql_of(status: &tonic::Status) -> Option<SqlError> {
    if status.code() != tonic::Code::Aborted {
        return None;
    }
    serde_json::from_str::<WireError>(status.message())
        .ok()
        .map(WireError::into_sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_errors_cross_with_their_sqlstate() {
        let e = SqlError::new("23505", "duplicate key").with_detail("Key (id)=(1)");
        let back = sql_of(&status_of(&e)).unwrap();
        assert_eq!(back.sqlstate, "23505");
        assert_eq!(back.message, "duplicate key");
        assert_eq!(back.detail.as_deref(), Some("Key (id)=(1)"));
        assert!(sql_of(&tonic::Status::unavailable("down")).is_none());
        assert_eq!(intern_sqlstate("bad"), "XX000");
        let a = serde_json::to_string(&Action::Prepare { gid: "g".into() }).unwrap();
        assert!(a.contains("\"kind\":\"prepare\""), "{a}");
    }
}
