//! The coordinator's side of distributed tables: DDL fan-out and
//! distributed transactions.
//!
//! Step in the flow: one [`Cluster`] per coordinator, shared by sessions.
//! - A session's first write to a distributed table opens a [`DistTxn`]
//!   (a global id, `gid`) in its [`crate::sql::txn::TxnContext`]; rows and
//!   statements go to the workers at once, staged there under the gid.
//! - At commit, one worker: a one-phase commit. Several: prepare on all
//!   (durable on each), record `Commit` in Raft (`DecideTxn`), then commit
//!   on all; the decision is forgotten later, many in one Raft entry. A
//!   failed prepare aborts everywhere.
//! - [`Cluster::recover`] runs in the background: transactions left by an
//!   earlier coordinator process are committed if Raft holds a `Commit`
//!   decision for them, aborted otherwise; recorded decisions whose commits
//!   did not all get through are retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use super::client::{PoolSettings, WorkerClients};
use super::route::TableLayout;
use super::shard_table_name;
use super::wire::{Action, PutCommand};
use crate::meta::command::{MetaCommand, MetaResponse};
use crate::meta::state::{Decision, MetaState, NodeId, NodeRole};
use crate::meta::{MetaApi, MetaSnapshot};
use crate::sql::txn::TxnContext;
use crate::sql::SqlError;
use crate::storage::table::TableMeta;

/// A distributed transaction of one session.
#[derive(Debug, Clone, Default)]
pub struct DistTxn {
    pub gid: String,
    /// Workers holding writes of this transaction, with their address.
    pub nodes: BTreeMap<NodeId, String>,
    /// Writes sent so far (savepoints compare it).
    pub writes: u64,
    /// Shard tables written (a move's cut-over lets these writers finish).
    pub tables: BTreeSet<String>,
}

/// Decided transactions on their way out of the Raft state.
#[derive(Debug, Default)]
struct Forget {
    /// Not yet proposed.
    queued: Vec<String>,
    /// Every participant has the commit (queued or being proposed): a read
    /// need not wait for them (see [`Cluster::finished`]).
    finished: BTreeSet<String>,
    /// A task is proposing the queued gids.
    running: bool,
}

/// The coordinator's handle on the cluster's data path.
pub struct Cluster {
    api: Arc<MetaApi>,
    pub clients: Arc<WorkerClients>,
    /// Prefix of this process's gids; gids with another prefix belong to
    /// an earlier coordinator process.
    incarnation: String,
    next_gid: AtomicU64,
    /// Held while range shards are created, so writers never race for one.
    pub(crate) range_lock: tokio::sync::Mutex<()>,
    /// Second phases of commits against pins of reads (ADR 0011).
    pub(crate) gate: super::read_point::CommitGate,
    /// Decided transactions whose commits all got through, to be forgotten
    /// in Raft by one `ForgetTxns` entry for many (see
    /// [`Cluster::forget_later`]).
    forget: parking_lot::Mutex<Forget>,
    /// `QUIVER_BENCH_NO_READ_PINS=1`: statements outside repeatable read
    /// pin nothing (each shard is read at its newest version, as before
    /// ADR 0011). Only for measuring what consistent reads cost.
    pub(crate) no_read_pins: bool,
    /// Shard moves this coordinator runs, and their write fences
    /// ([`super::mover`]).
    pub(crate) moves: super::mover::Moves,
}

pub(crate) fn meta_err(e: impl std::fmt::Display) -> SqlError {
    SqlError::new("XX000", format!("cluster metadata: {e}"))
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.incarnation)
    }
}

impl Cluster {
    pub fn new(api: Arc<MetaApi>, pool: PoolSettings) -> Arc<Self> {
        let incarnation = format!("q{:016x}", rand::random::<u64>());
        Arc::new(Cluster {
            api,
            clients: WorkerClients::new(pool),
            incarnation,
            next_gid: AtomicU64::new(1),
            range_lock: tokio::sync::Mutex::new(()),
            gate: Default::default(),
            forget: Default::default(),
            moves: Default::default(),
            no_read_pins: std::env::var("QUIVER_BENCH_NO_READ_PINS").is_ok_and(|v| v == "1"),
        })
    }

    pub fn api(&self) -> &Arc<MetaApi> {
        &self.api
    }

    pub fn snapshot(&self) -> MetaSnapshot {
        self.api.node().snapshot()
    }

    /// The layout of table `name` if it is distributed.
    pub fn layout(&self, name: &str) -> Option<TableLayout> {
        let state = self.snapshot();
        TableLayout::of_with(&state, name, &self.api.unhealthy_nodes(&state))
    }

    /// Proposes `cmd` and returns the applied answer; a rejection becomes
    /// an error with `sqlstate`.
    pub async fn propose(
        &self,
        cmd: MetaCommand,
        sqlstate: &'static str,
    ) -> Result<MetaResponse, SqlError> {
        match self.api.node().write(cmd).await.map_err(meta_err)?.1 {
            MetaResponse::Rejected(reason) => Err(SqlError::new(sqlstate, reason)),
            other => Ok(other),
        }
    }

    fn new_gid(&self) -> String {
        self.next_id("")
    }

    /// The session's open distributed transaction (opened if needed), with
    /// `node` recorded as a participant.
    fn join(&self, txn: &TxnContext, node: NodeId, addr: &str, table: &str) -> String {
        txn.with_dist(|d| {
            if d.gid.is_empty() {
                d.gid = self.new_gid();
            }
            d.nodes.entry(node).or_insert_with(|| addr.to_owned());
            if !d.tables.contains(table) {
                d.tables.insert(table.to_owned());
            }
            d.writes += 1;
            d.gid.clone()
        })
    }

    /// Sends rows of table `layout` to their shards (every placement) in
    /// the session's transaction. `column` is the distribution column's
    /// position in the batches; `shell` is the table's local schema (a range
    /// table's new shards are created from it). Returns the rows written.
    pub async fn write_rows(
        &self,
        txn: &TxnContext,
        shell: &TableMeta,
        layout: &TableLayout,
        column: Option<usize>,
        batches: &[RecordBatch],
    ) -> Result<u64, SqlError> {
        let grown = match column {
            Some(c) => super::range::ensure_shards(self, shell, layout, c, batches).await?,
            None => None,
        };
        let layout = grown.as_ref().unwrap_or(layout);
        let mut per_target: BTreeMap<(NodeId, usize), (String, Vec<RecordBatch>)> = BTreeMap::new();
        let mut rows = 0u64;
        for b in batches {
            rows += b.num_rows() as u64;
            for (pos, part) in layout.route(b, column)? {
                let shard = &layout.shards[pos];
                if shard.placements.is_empty() {
                    return Err(layout
                        .read_placement(shard)
                        .err()
                        .unwrap_or_else(|| SqlError::new("XX000", "shard without placement")));
                }
                for (node, addr) in &shard.placements {
                    per_target
                        .entry((*node, pos))
                        .or_insert_with(|| (addr.clone(), Vec::new()))
                        .1
                        .push(part.clone());
                }
            }
        }
        let mut calls = Vec::new();
        for ((node, pos), (addr, parts)) in per_target {
            let table = shard_table_name(&layout.info.name, layout.shards[pos].shard_id);
            let gid = self.join(txn, node, &addr, &table);
            let cmd = PutCommand {
                gid,
                table,
                intermediate: false,
            };
            let clients = self.clients.clone();
            calls.push(async move { clients.put(&addr, &cmd, parts).await });
        }
        for r in futures::future::join_all(calls).await {
            r?;
        }
        Ok(rows)
    }

    /// Runs one statement per `(node, addr, shard table, sql)` in the
    /// session's transaction; returns the affected rows of each.
    ///
    /// The same statement on several nodes is one shard's placements (a
    /// reference table, a replicated shard): it runs on the lowest node
    /// first and on the others only then, so two writers of one row queue
    /// on its first copy instead of each locking a different copy and
    /// waiting for the other (a deadlock across workers), as Citus orders
    /// them too.
    ///
    /// In a repeatable-read block each worker's transaction reads the
    /// block's pinned snapshot (ADR 0011), so a row changed since fails
    /// with 40001 there, as in PostgreSQL.
    pub async fn exec_in_txn(
        self: &Arc<Self>,
        txn: &TxnContext,
        targets: Vec<(NodeId, String, String, String)>,
    ) -> Result<Vec<u64>, SqlError> {
        let block = super::read_point::ReadPoint::of_block(txn, self);
        let mut pins: BTreeMap<&str, Option<String>> = BTreeMap::new();
        for (_, addr, _, _) in &targets {
            if let (Some(rp), false) = (&block, pins.contains_key(addr.as_str())) {
                pins.insert(addr, rp.pin_for(addr).await?);
            }
        }
        let mut first: BTreeMap<&str, NodeId> = BTreeMap::new();
        for (node, _, _, sql) in &targets {
            let f = first.entry(sql.as_str()).or_insert(*node);
            *f = (*f).min(*node);
        }
        let lead: Vec<bool> = targets
            .iter()
            .map(|(node, _, _, sql)| first.get(sql.as_str()) == Some(node))
            .collect();
        let mut rows = vec![0u64; targets.len()];
        for leading in [true, false] {
            let mut calls = Vec::new();
            for (i, (node, addr, table, sql)) in targets.iter().enumerate() {
                if lead[i] != leading {
                    continue;
                }
                let gid = self.join(txn, *node, addr, table);
                let clients = self.clients.clone();
                let snapshot = pins.get(addr.as_str()).cloned().flatten();
                calls.push(async move {
                    let action = Action::Exec {
                        gid,
                        sql: sql.clone(),
                        snapshot,
                    };
                    clients.action(addr, &action).await.map(|r| (i, r.rows))
                });
            }
            for r in futures::future::join_all(calls).await {
                let (i, n) = r?;
                rows[i] = n;
            }
        }
        Ok(rows)
    }

    /// Commits a session's distributed transaction.
    pub async fn commit(self: &Arc<Self>, t: DistTxn) -> Result<(), SqlError> {
        if t.nodes.is_empty() {
            return Ok(());
        }
        let gid = t.gid.clone();
        if t.nodes.len() == 1 {
            let (_, addr) = t
                .nodes
                .iter()
                .next()
                .map(|(n, a)| (*n, a.clone()))
                .unwrap_or_default();
            return self
                .clients
                .action(&addr, &Action::Commit { gid })
                .await
                .map(|_| ());
        }
        let prepares = t.nodes.values().map(|addr| {
            let clients = self.clients.clone();
            let gid = gid.clone();
            async move { clients.action(addr, &Action::Prepare { gid }).await }
        });
        let results = futures::future::join_all(prepares).await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            self.abort(t).await;
            return Err(e);
        }
        let participants: Vec<NodeId> = t.nodes.keys().copied().collect();
        let decided = self
            .propose(
                MetaCommand::DecideTxn {
                    gid: gid.clone(),
                    decision: Decision::Commit,
                    participants,
                },
                "XX000",
            )
            .await;
        match decided {
            Ok(MetaResponse::TxnDecided {
                decision: Decision::Commit,
                ..
            }) => {}
            Ok(_) => {
                self.abort(t).await;
                return Err(SqlError::new(
                    "40001",
                    format!("transaction {gid} was aborted"),
                ));
            }
            Err(e) => {
                // The decision may or may not be in the log: recovery resolves it.
                return Err(SqlError::new(
                    "08007",
                    format!(
                        "transaction {gid}: outcome unknown, recovery will resolve it: {}",
                        e.message
                    ),
                ));
            }
        }
        self.finish(&gid, &t.nodes).await;
        Ok(())
    }

    /// A new id, unique in the cluster's lifetime: this process's
    /// incarnation and a counter (`prefix` tells kinds apart).
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.next_gid.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{}-{n}", self.incarnation)
    }

    /// The address of every worker that has not failed.
    pub fn worker_addrs(&self) -> Vec<String> {
        Self::workers(&self.snapshot())
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }

    /// Sends the commit of a decided transaction to every participant, and
    /// forgets the decision once all have it. Failures are left to recovery.
    /// Holds the commit gate's shared side throughout, so no read pins its
    /// snapshot while the transaction is on some participants only.
    async fn finish(self: &Arc<Self>, gid: &str, nodes: &BTreeMap<NodeId, String>) -> bool {
        let _gate = self.gate.committing().await;
        let commits = nodes.values().map(|addr| {
            let clients = self.clients.clone();
            let gid = gid.to_owned();
            async move { clients.action(addr, &Action::Commit { gid }).await }
        });
        let mut all = true;
        for r in futures::future::join_all(commits).await {
            if let Err(e) = r {
                tracing::warn!(%gid, error = %e.message, "commit not delivered; recovery will retry");
                all = false;
            }
        }
        if all {
            self.forget_later(gid.to_owned());
        }
        all
    }

    /// Forgets a decided transaction in Raft, off the committing client's
    /// path: gids queue while one task proposes them, so a busy coordinator
    /// writes one `ForgetTxns` entry for many commits. A gid not yet
    /// forgotten when the coordinator stops only makes recovery send its
    /// commit again, which a worker answers as done.
    fn forget_later(self: &Arc<Self>, gid: String) {
        {
            let mut f = self.forget.lock();
            f.finished.insert(gid.clone());
            f.queued.push(gid);
            if f.running {
                return;
            }
            f.running = true;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let gids = {
                    let mut f = me.forget.lock();
                    if f.queued.is_empty() {
                        f.running = false;
                        return;
                    }
                    std::mem::take(&mut f.queued)
                };
                let r = me
                    .propose(MetaCommand::ForgetTxns { gids: gids.clone() }, "XX000")
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e.message, "could not forget decided transactions; recovery will");
                }
                let mut f = me.forget.lock();
                for g in &gids {
                    f.finished.remove(g);
                }
            }
        });
    }

    /// True when every participant of decided transaction `gid` has its
    /// commit (its decision only waits to be forgotten).
    pub(crate) fn finished(&self, gid: &str) -> bool {
        self.forget.lock().finished.contains(gid)
    }

    /// Aborts a session's distributed transaction everywhere (best effort:
    /// recovery aborts what this cannot reach).
    pub async fn abort(&self, t: DistTxn) {
        let calls = t.nodes.values().map(|addr| {
            let clients = self.clients.clone();
            let gid = t.gid.clone();
            async move { clients.action(addr, &Action::Abort { gid }).await }
        });
        for r in futures::future::join_all(calls).await {
            if let Err(e) = r {
                tracing::warn!(gid = %t.gid, error = %e.message, "abort not delivered");
            }
        }
    }

    fn workers(state: &MetaState) -> Vec<(NodeId, String)> {
        state
            .nodes
            .iter()
            .filter(|(_, n)| n.role == NodeRole::Worker && n.failed.is_none())
            .map(|(id, n)| (*id, format!("{}:{}", n.host, n.port)))
            .collect()
    }

    /// One recovery pass (see the module docs). Only the Raft leader acts.
    pub async fn recover(self: &Arc<Self>) {
        if !self.api.node().is_leader() {
            return;
        }
        let state = self.snapshot();
        let workers = Self::workers(&state);
        // Recorded decisions: make sure every participant has the commit.
        for (gid, d) in &state.txns {
            let nodes: BTreeMap<NodeId, String> = workers
                .iter()
                .filter(|(id, _)| d.participants.contains(id))
                .cloned()
                .collect();
            match d.decision {
                Decision::Commit => {
                    self.finish(gid, &nodes).await;
                }
                Decision::Abort => {
                    self.abort(DistTxn {
                        gid: gid.clone(),
                        nodes: nodes.clone(),
                        writes: 0,
                        tables: Default::default(),
                    })
                    .await;
                    let _ = self
                        .propose(
                            MetaCommand::ForgetTxns {
                                gids: vec![gid.clone()],
                            },
                            "XX000",
                        )
                        .await;
                }
            }
        }
        // Leftovers of earlier coordinator processes on the workers.
        let mut seen = BTreeSet::new();
        for (node, addr) in &workers {
            let Ok(reply) = self.clients.action(addr, &Action::ListTxns).await else {
                continue;
            };
            for t in reply.txns {
                if t.gid.starts_with(&self.incarnation) || !seen.insert((t.gid.clone(), *node)) {
                    continue;
                }
                let decision = match state.txns.get(&t.gid) {
                    Some(d) => Some(d.decision),
                    None if t.prepared => {
                        // Presumed abort: record it so a late commit cannot win.
                        match self
                            .propose(
                                MetaCommand::DecideTxn {
                                    gid: t.gid.clone(),
                                    decision: Decision::Abort,
                                    participants: vec![*node],
                                },
                                "XX000",
                            )
                            .await
                        {
                            Ok(MetaResponse::TxnDecided { decision, .. }) => Some(decision),
                            _ => None,
                        }
                    }
                    None => Some(Decision::Abort),
                };
                let action = match decision {
                    Some(Decision::Commit) => Action::Commit { gid: t.gid.clone() },
                    Some(Decision::Abort) => Action::Abort { gid: t.gid.clone() },
                    None => continue,
                };
                tracing::info!(gid = %t.gid, node, action = action.kind(), "resolving a transaction left by an earlier coordinator");
                if let Err(e) = self.clients.action(addr, &action).await {
                    tracing::warn!(gid = %t.gid, error = %e.message, "could not resolve");
                }
            }
        }
    }

    /// Runs [`Cluster::recover`] every `every` until `shutdown`.
    pub async fn recovery_loop(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: crate::server::shutdown::ShutdownSignal,
    ) {
        loop {
            self.recover().await;
            if !shutdown.sleep(every).await {
                return;
            }
        }
    }
}
