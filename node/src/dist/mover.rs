//! The coordinator leader's shard mover and cleaner (ADR 0013).
//!
//! Step in the flow: `quiver_move_shard_placement(...)` records a move in
//! Raft (`StartMove`, with the cleanup record of the target) and drives it
//! here, as the leader's background loop also does for a move an earlier
//! leader left unfinished:
//! 1. the target pulls a full copy of every shard table of the shard group
//!    from the source ([`super::worker_move`]), then rounds of changes
//!    until a round is small;
//! 2. the write fence: `FenceMove` in Raft, then this coordinator holds
//!    new writes to the moving tables before they are planned
//!    ([`Cluster::write_permit`]), waits for the statements already
//!    sending, and fences the source, which answers once the transactions
//!    that wrote there have ended;
//! 3. the last round, then `SwitchMove` (placements to the target, epochs
//!    up) before the fence's deadline; the held writes go on, to the
//!    target, and the source's tables are retired. A fence that misses its
//!    deadline is lifted and tried again; a move that cannot finish fails
//!    (`FailMove`), and its target copies are cleaned up.
//!
//! The cleaner drops the copies of due cleanup records: a failed move's
//! target copies at once, a switched move's source copies after a grace
//! period for reads that started on them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::coord::Cluster;
use super::ddl::UtilityCall;
use super::shard_table_name;
use super::wire::{Action, MovePull};
use crate::meta::command::MetaCommand;
use crate::meta::moves::{now_ms, MoveJob, MoveState};
use crate::meta::state::{MetaState, NodeId, ShardId};
use crate::sql::txn::TxnContext;
use crate::sql::SqlError;

/// The SQL function that moves a shard group.
pub const MOVE_FN: &str = "quiver_move_shard_placement";
/// How long writes to moving shards may be held at the cut-over.
const FENCE: Duration = Duration::from_secs(2);
/// A source keeps its tables fenced this much longer than the coordinator
/// (so a switch committed near the deadline still finds them fenced).
const SOURCE_FENCE_SLACK: Duration = Duration::from_secs(5);
/// Catch-up rounds before the fence; a round under [`SMALL_ROUND`] bytes
/// ends them early.
const MAX_ROUNDS: u64 = 8;
const SMALL_ROUND: u64 = 1 << 20;
/// Fence attempts before a move fails.
const FENCE_ATTEMPTS: u32 = 4;
/// How long ended moves stay listed before they are forgotten.
const KEEP_ENDED: Duration = Duration::from_secs(3600);
/// How long a switched move's source copies stay for reads that began
/// before the switch.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// A fence this coordinator holds writes at.
#[derive(Debug, Clone)]
struct Fence {
    /// Distributed table names with a moving shard.
    tables: BTreeSet<String>,
    /// The moving shard tables.
    shard_tables: BTreeSet<String>,
    /// Safety net: the fence lifts by itself then.
    until: Instant,
}

/// Fences, and the writing statements in flight.
#[derive(Debug, Default)]
struct Gate {
    fences: HashMap<String, Fence>,
    next: u64,
    /// Statements planning or sending writes, with the tables they name.
    writing: HashMap<u64, Vec<String>>,
}

fn touches(relations: &[String], tables: &BTreeSet<String>) -> bool {
    relations.is_empty() || relations.iter().any(|r| tables.contains(r))
}

/// The coordinator's moves in progress.
#[derive(Debug, Default)]
pub struct Moves {
    gate: Mutex<Gate>,
    /// Jobs driven by this process.
    running: Mutex<HashSet<String>>,
    /// The rebalance run by this process ([`super::rebalancer`]).
    pub(super) rebalancing: Mutex<Option<String>>,
}

/// Held by a statement while it plans and sends writes (see
/// [`Cluster::write_permit`]).
pub struct WritePermit<'a> {
    moves: &'a Moves,
    id: u64,
}

impl Drop for WritePermit<'_> {
    fn drop(&mut self) {
        self.moves.gate.lock().writing.remove(&self.id);
    }
}

impl Moves {
    /// Registers a statement writing to `relations` unless a fence holds
    /// it: one on a table it names (any, when `relations` is empty), unless
    /// `txn` already wrote to a moving shard table (its writes there must
    /// be able to finish).
    ///
    /// `relations` is called only while a fence is up; without one the
    /// statement registers as touching every table (a fence that goes up
    /// meanwhile waits for it too), so the common path walks no syntax tree.
    fn try_permit(
        &self,
        txn: &TxnContext,
        relations: impl FnOnce() -> Vec<String>,
    ) -> Option<WritePermit<'_>> {
        let mut g = self.gate.lock();
        let now = Instant::now();
        g.fences.retain(|_, f| f.until > now);
        let names = if g.fences.is_empty() {
            Vec::new()
        } else {
            let names = relations();
            let held = g
                .fences
                .values()
                .any(|f| touches(&names, &f.tables) && !txn.dist_wrote_any(&f.shard_tables));
            if held {
                return None;
            }
            names
        };
        let id = g.next;
        g.next += 1;
        g.writing.insert(id, names);
        Some(WritePermit { moves: self, id })
    }

    /// Puts up fence `job`; the statements already writing to its tables.
    fn fence(&self, job: &str, fence: Fence) -> Vec<u64> {
        let mut g = self.gate.lock();
        let before = g
            .writing
            .iter()
            .filter(|(_, r)| touches(r, &fence.tables))
            .map(|(id, _)| *id)
            .collect();
        g.fences.insert(job.to_owned(), fence);
        before
    }

    fn unfence(&self, job: &str) {
        self.gate.lock().fences.remove(job);
    }

    /// Waits until the statements `ids` are done, up to `limit`.
    async fn drained(&self, ids: &[u64], limit: Duration) -> Result<(), SqlError> {
        let deadline = Instant::now() + limit;
        while ids
            .iter()
            .any(|id| self.gate.lock().writing.contains_key(id))
        {
            if Instant::now() >= deadline {
                return Err(SqlError::new("55P03", "writes in flight did not finish"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }
}

impl Cluster {
    /// Waits while a move's cut-over holds writes to `relations()` (the
    /// tables a statement names; empty: unknown), then returns the permit
    /// the statement holds while it plans and sends its writes.
    pub async fn write_permit(
        &self,
        txn: &TxnContext,
        relations: impl Fn() -> Vec<String>,
    ) -> WritePermit<'_> {
        loop {
            if let Some(p) = self.moves.try_permit(txn, &relations) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// True for a statement that writes rows (it takes a write permit).
pub fn writes_rows(stmt: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement;
    match stmt {
        Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) => true,
        Statement::Merge { .. } | Statement::Truncate { .. } => true,
        Statement::Copy { to, .. } => !*to,
        _ => false,
    }
}

/// The relations a statement names (read ones too). Empty: unknown.
pub fn relations(stmt: &datafusion::sql::sqlparser::ast::Statement) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{visit_relations, CopySource, Statement};
    let mut names = Vec::new();
    let _ = visit_relations(stmt, |r| {
        names.push(crate::sql::idents::relation(r));
        std::ops::ControlFlow::<()>::Continue(())
    });
    if let Statement::Copy {
        source: CopySource::Table { table_name, .. },
        ..
    } = stmt
    {
        names.push(crate::sql::idents::relation(table_name));
    }
    names
}

fn node_by_addr(s: &MetaState, host: &str, port: &str) -> Result<NodeId, SqlError> {
    let port: u16 = port
        .parse()
        .map_err(|_| SqlError::new("22023", format!("{MOVE_FN}: bad port {port:?}")))?;
    s.nodes
        .iter()
        .find(|(_, n)| n.host == host && n.port == port)
        .map(|(id, _)| *id)
        .ok_or_else(|| SqlError::new("42704", format!("node {host}:{port} does not exist")))
}

fn addr_of(s: &MetaState, node: NodeId) -> Result<String, SqlError> {
    s.nodes
        .get(&node)
        .map(|n| format!("{}:{}", n.host, n.port))
        .ok_or_else(|| SqlError::new("42704", format!("node {node} does not exist")))
}

/// `(distributed table, shard table)` of each of `shards` (ones dropped
/// meanwhile are left out).
fn shard_tables(s: &MetaState, shards: &[ShardId]) -> Vec<(String, String)> {
    shards
        .iter()
        .filter_map(|id| {
            let shard = s.shards.get(id)?;
            let t = s.tables.get(&shard.table_id)?;
            Some((t.name.clone(), shard_table_name(&t.name, *id)))
        })
        .collect()
}

/// Runs `quiver_move_shard_placement(shard_id, from_host, from_port,
/// to_host, to_port)` to the end; the text of its result (empty, as
/// Citus's `void`).
pub async fn run_call(call: &UtilityCall, cluster: &Arc<Cluster>) -> Result<String, SqlError> {
    let [shard, from_host, from_port, to_host, to_port] = call.args.as_slice() else {
        return Err(SqlError::new(
            "42883",
            format!(
                "{MOVE_FN}(shard_id, from_host, from_port, to_host, to_port) takes five arguments"
            ),
        ));
    };
    let shard: ShardId = shard
        .parse()
        .map_err(|_| SqlError::new("22023", format!("{MOVE_FN}: bad shard id {shard:?}")))?;
    let state = cluster.snapshot();
    if !state.shards.contains_key(&shard) {
        return Err(SqlError::new(
            "42704",
            format!("shard {shard} does not exist"),
        ));
    }
    let from = node_by_addr(&state, from_host, from_port)?;
    let to = node_by_addr(&state, to_host, to_port)?;
    if cluster.api().unhealthy_nodes(&state).contains(&to) {
        return Err(SqlError::new(
            "55000",
            format!("node {to_host}:{to_port} is not answering; a shard cannot move there"),
        ));
    }
    let id = cluster.next_id("m");
    start_move(cluster, &id, shard, (from, to), false).await?;
    Ok(String::new())
}

/// Records move `id` of `shard`'s group from `from` to `to` (a copy of a
/// reference table's shard when `copy`) and drives it to its end.
pub(super) async fn start_move(
    cluster: &Arc<Cluster>,
    id: &str,
    shard: ShardId,
    (from, to): (NodeId, NodeId),
    copy: bool,
) -> Result<(), SqlError> {
    // Claimed first, so the leader's pass never resumes it meanwhile.
    claim(cluster, id)?;
    let started = cluster
        .propose(
            MetaCommand::StartMove {
                id: id.to_owned(),
                shard_id: shard,
                from,
                to,
                started_ms: now_ms(),
                copy,
            },
            "55000",
        )
        .await;
    if let Err(e) = started {
        cluster.moves.running.lock().remove(id);
        return Err(e);
    }
    // In a task of its own: a caller that goes away (a client that
    // disconnects) must not stop the move half-way.
    let (c, job) = (cluster.clone(), id.to_owned());
    tokio::spawn(async move { finish(&c, &job).await })
        .await
        .map_err(|e| SqlError::new("XX000", format!("move {id}: {e}")))?
}

fn claim(cluster: &Cluster, id: &str) -> Result<(), SqlError> {
    if cluster.moves.running.lock().insert(id.to_owned()) {
        Ok(())
    } else {
        Err(SqlError::new(
            "55000",
            format!("move {id} is being run already"),
        ))
    }
}

/// Drives job `id` to its end unless this process drives it already.
async fn drive(cluster: &Arc<Cluster>, id: &str) -> Result<(), SqlError> {
    claim(cluster, id)?;
    finish(cluster, id).await
}

/// Runs claimed job `id`; a failure before the switch ends it as failed.
async fn finish(cluster: &Arc<Cluster>, id: &str) -> Result<(), SqlError> {
    let out = run(cluster, id).await;
    if let Err(e) = &out {
        tracing::warn!(job = id, error = %e.message, "shard move failed");
        let still_open = cluster
            .snapshot()
            .moves
            .get(id)
            .is_some_and(|j| !j.state.is_terminal());
        if still_open {
            let _ = cluster
                .propose(
                    MetaCommand::FailMove {
                        id: id.to_owned(),
                        reason: Some(e.message.clone()),
                        finished_ms: now_ms(),
                    },
                    "XX000",
                )
                .await;
        }
    }
    cluster.moves.running.lock().remove(id);
    out
}

/// A move being driven: where it copies from and to, and how far the
/// target has confirmed.
struct MoveRun<'a> {
    cluster: &'a Arc<Cluster>,
    id: String,
    job: MoveJob,
    /// `(distributed table, shard table)` of each moving shard.
    tables: Vec<(String, String)>,
    from: String,
    to: String,
    /// The number of the next round (each round has its own).
    next: u64,
    /// The last round the target applied in full: the base of the next.
    confirmed: Option<u64>,
    copied: u64,
    total: u64,
}

async fn run(cluster: &Arc<Cluster>, id: &str) -> Result<(), SqlError> {
    let state = cluster.snapshot();
    let job = state
        .moves
        .get(id)
        .cloned()
        .ok_or_else(|| SqlError::new("42704", format!("no move {id}")))?;
    match &job.state {
        MoveState::Switched | MoveState::Cancelled => return Ok(()),
        MoveState::Failed(why) => return Err(SqlError::new("55000", why.clone())),
        _ => {}
    }
    let mut m = MoveRun {
        cluster,
        id: id.to_owned(),
        tables: shard_tables(&state, &job.shards),
        from: addr_of(&state, job.from)?,
        to: addr_of(&state, job.to)?,
        job,
        next: 0,
        confirmed: None,
        copied: 0,
        total: 0,
    };
    crate::failpoint::hit("move_started").await?;
    m.copy().await?;
    m.cut_over().await
}

impl MoveRun<'_> {
    fn shard_tables(&self) -> Vec<String> {
        self.tables.iter().map(|(_, s)| s.clone()).collect()
    }

    /// One round on the target: the changes since the last confirmed round
    /// (everything, when there is none). Returns the bytes received.
    async fn pull(&mut self) -> Result<u64, SqlError> {
        let round = self.next;
        self.next += 1;
        let p = MovePull {
            job: self.id.clone(),
            source: self.from.clone(),
            tables: self.shard_tables(),
            round,
            base: self.confirmed,
        };
        let r = self
            .cluster
            .clients
            .control(&self.to, &Action::MovePull(p))
            .await?;
        self.confirmed = Some(round);
        self.copied += r.bytes;
        Ok(r.bytes)
    }

    async fn progress(&self, state: MoveState) -> Result<(), SqlError> {
        self.cluster
            .propose(
                MetaCommand::MoveProgress {
                    id: self.id.clone(),
                    state,
                    bytes_copied: self.copied,
                    bytes_total: self.total,
                },
                "55000",
            )
            .await
            .map(|_| ())
    }

    /// The full copy, then rounds of changes until one is small.
    async fn copy(&mut self) -> Result<(), SqlError> {
        self.progress(MoveState::Copying).await?;
        self.total = self.pull().await?;
        crate::failpoint::hit("move_after_copy").await?;
        self.progress(MoveState::CatchingUp).await?;
        for _ in 0..MAX_ROUNDS {
            if self.pull().await? < SMALL_ROUND {
                break;
            }
        }
        Ok(())
    }

    /// Fence, last round and switch, tried [`FENCE_ATTEMPTS`] times.
    async fn cut_over(&mut self) -> Result<(), SqlError> {
        let mut last = None;
        for attempt in 0..FENCE_ATTEMPTS {
            let deadline = now_ms() + FENCE.as_millis() as u64;
            self.cluster
                .propose(
                    MetaCommand::FenceMove {
                        id: self.id.clone(),
                        deadline_ms: deadline,
                    },
                    "55000",
                )
                .await?;
            let writing = self.cluster.moves.fence(
                &self.id,
                Fence {
                    tables: self.tables.iter().map(|(t, _)| t.clone()).collect(),
                    shard_tables: self.shard_tables().into_iter().collect(),
                    until: Instant::now() + FENCE + SOURCE_FENCE_SLACK,
                },
            );
            let out = self.switch(&writing, deadline).await;
            self.cluster.moves.unfence(&self.id);
            match out {
                Ok(()) => return self.switched().await,
                Err(e) => {
                    tracing::info!(job = %self.id, attempt, error = %e.message, "shard move cut-over missed; trying again");
                    let unfence = Action::MoveUnfence {
                        job: self.id.clone(),
                    };
                    let _ = self.cluster.clients.control(&self.from, &unfence).await;
                    self.progress(MoveState::CatchingUp).await?;
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    self.pull().await?;
                }
            }
        }
        Err(last.unwrap_or_else(|| SqlError::new("55P03", "the cut-over did not succeed")))
    }

    /// Under the fence: the writes in flight finish, the source quiesces,
    /// the last round, then `SwitchMove` if the deadline has not passed.
    async fn switch(&mut self, writing: &[u64], deadline: u64) -> Result<(), SqlError> {
        let started = Instant::now();
        let ms = |since: Instant| since.elapsed().as_millis() as u64;
        self.cluster.moves.drained(writing, FENCE).await?;
        let drained = ms(started);
        crate::failpoint::hit("move_fenced").await?;
        let fence = Action::MoveFence {
            job: self.id.clone(),
            tables: self.shard_tables(),
            deadline_ms: deadline + SOURCE_FENCE_SLACK.as_millis() as u64,
        };
        let t = Instant::now();
        self.cluster.clients.control(&self.from, &fence).await?;
        let quiesced = ms(t);
        let t = Instant::now();
        let bytes = self.pull().await?;
        let last_round = ms(t);
        if now_ms() >= deadline {
            return Err(SqlError::new(
                "55P03",
                "the last changes did not reach the target before the fence's deadline",
            ));
        }
        crate::failpoint::hit("move_before_switch").await?;
        // No read pins its snapshot while the placements change: one
        // planned before the switch pins before it or plans again.
        let t = Instant::now();
        let _pins = self.cluster.gate.pinning().await;
        let gate = ms(t);
        self.cluster
            .propose(
                MetaCommand::SwitchMove {
                    id: self.id.clone(),
                    finished_ms: now_ms(),
                },
                "55000",
            )
            .await?;
        tracing::info!(
            job = %self.id,
            fenced_ms = ms(started),
            drained_ms = drained,
            source_quiesced_ms = quiesced,
            last_round_ms = last_round,
            last_round_bytes = bytes,
            pin_gate_ms = gate,
            "shard move cut-over"
        );
        Ok(())
    }

    /// After the switch: a copy's source goes on serving; a move's takes
    /// no write again.
    async fn switched(&self) -> Result<(), SqlError> {
        let job = self.id.clone();
        let retire = if self.job.copy {
            Action::MoveUnfence { job }
        } else {
            Action::MoveRetire { job }
        };
        if let Err(e) = self.cluster.clients.control(&self.from, &retire).await {
            tracing::warn!(job = %self.id, error = %e.message, "cannot retire a moved shard's source copy");
        }
        tracing::info!(job = %self.id, bytes = self.copied, rounds = self.next, "shard move switched");
        crate::failpoint::hit("move_switched").await
    }
}

impl Cluster {
    /// One pass of the leader's move work: resumes moves no process drives
    /// (an earlier leader's) and drops the copies of due cleanup records.
    pub async fn move_pass(self: &Arc<Self>) {
        if !self.api().node().is_leader() {
            return;
        }
        let state = self.snapshot();
        for (id, job) in &state.moves {
            if job.state.is_terminal() || self.moves.running.lock().contains(id) {
                continue;
            }
            let (c, id) = (self.clone(), id.clone());
            tokio::spawn(async move {
                tracing::info!(job = %id, "resuming a shard move");
                let _ = drive(&c, &id).await;
            });
        }
        self.rebalance_pass(&state);
        self.copy_reference_tables(&state);
        for (record, r) in &state.cleanups {
            let node = state.nodes.get(&r.node);
            if node.is_some() && !r.is_due(&state) {
                continue;
            }
            let finished = state.moves.get(&r.job).and_then(|j| j.finished_ms);
            if node.is_some()
                && matches!(
                    state.moves.get(&r.job).map(|j| &j.state),
                    Some(MoveState::Switched)
                )
                && finished.is_some_and(|f| now_ms() < f + DROP_GRACE.as_millis() as u64)
            {
                continue;
            }
            if let Some(n) = node {
                let names: Vec<String> = shard_tables(&state, &r.shards)
                    .into_iter()
                    .map(|(_, shard)| shard)
                    .collect();
                let addr = format!("{}:{}", n.host, n.port);
                if let Err(e) = self
                    .clients
                    .control(&addr, &Action::DropShards { names })
                    .await
                {
                    tracing::warn!(record, error = %e.message, "cannot drop a moved shard's copy; trying again later");
                    continue;
                }
            }
            let _ = self
                .propose(MetaCommand::FinishCleanup { record: *record }, "XX000")
                .await;
        }
        let keep = KEEP_ENDED.as_millis() as u64;
        let ended: Vec<String> = state
            .moves
            .iter()
            .filter(|(_, j)| j.finished_ms.is_some_and(|f| now_ms() > f + keep))
            .filter(|(id, _)| crate::meta::moves::forgettable(&state, id))
            .map(|(id, _)| id.clone())
            .collect();
        if !ended.is_empty() {
            let _ = self
                .propose(MetaCommand::ForgetMoves { ids: ended }, "XX000")
                .await;
        }
    }

    /// Starts a copy of each reference table to each worker that may take
    /// shards and has none of it (a worker that just joined).
    fn copy_reference_tables(self: &Arc<Self>, state: &MetaState) {
        let unhealthy = self.api().unhealthy_nodes(state);
        let busy: BTreeSet<(ShardId, NodeId)> = state
            .moves
            .values()
            .filter(|j| !j.state.is_terminal())
            .flat_map(|j| j.shards.iter().map(move |s| (*s, j.to)))
            .chain(
                state
                    .cleanups
                    .values()
                    .flat_map(|r| r.shards.iter().map(move |s| (*s, r.node))),
            )
            .collect();
        for (shard_id, shard) in &state.shards {
            let reference = state
                .tables
                .get(&shard.table_id)
                .is_some_and(|t| matches!(t.kind, crate::meta::state::TableKind::Reference));
            if !reference {
                continue;
            }
            let holders: Vec<NodeId> = state
                .placements_of(*shard_id)
                .into_iter()
                .filter(|(_, p)| p.state == crate::meta::state::PlacementState::Active)
                .map(|(_, p)| p.node_id)
                .collect();
            let Some(source) = holders.iter().copied().find(|n| !unhealthy.contains(n)) else {
                continue;
            };
            for (node, info) in &state.nodes {
                if !info.is_placeable()
                    || unhealthy.contains(node)
                    || holders.contains(node)
                    || busy.contains(&(*shard_id, *node))
                {
                    continue;
                }
                let (c, shard, to) = (self.clone(), *shard_id, *node);
                let id = self.next_id("c");
                tokio::spawn(async move {
                    tracing::info!(
                        shard,
                        node = to,
                        "copying a reference table to a new worker"
                    );
                    if let Err(e) = start_move(&c, &id, shard, (source, to), true).await {
                        tracing::warn!(shard, node = to, error = %e.message, "reference table copy failed; trying again");
                    }
                });
            }
        }
    }

    /// Refuses a schema change or drop of `table` while one of its shards
    /// moves (the copy would not follow it).
    pub fn refuse_if_moving(&self, table: crate::meta::state::TableId) -> Result<(), SqlError> {
        let state = self.snapshot();
        let moving = state.moves.iter().find(|(_, j)| {
            !j.state.is_terminal()
                && j.shards
                    .iter()
                    .any(|s| state.shards.get(s).is_some_and(|i| i.table_id == table))
        });
        match moving {
            Some((id, _)) => Err(SqlError::new(
                "55006",
                format!("a shard of this table is being moved (move {id}); try again when it ends"),
            )),
            None => Ok(()),
        }
    }

    /// Is job `id` driven by this process now?
    pub(super) fn move_running(&self, id: &str) -> bool {
        self.moves.running.lock().contains(id)
    }

    /// Runs [`Cluster::move_pass`] every `every` until `shutdown`.
    pub async fn move_loop(
        self: Arc<Self>,
        every: Duration,
        shutdown: crate::server::shutdown::ShutdownSignal,
    ) {
        loop {
            self.move_pass().await;
            if !shutdown.sleep(every).await {
                return;
            }
        }
    }
}
