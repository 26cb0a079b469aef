//! Repartition joins: joins of distributed tables that are not co-located
//! on the join key run on the workers after a shuffle, not on the
//! coordinator.
//!
//! Step in the flow: [`super::pushdown::FragmentPushdown`] meets a join
//! whose two inputs are each shard-local (a scan, or a co-located subtree)
//! but not co-located with each other. [`FragmentPushdown::shuffle_join`]
//! replaces it by a scan of a [`ShuffleTable`]:
//! 1. **map**: every shard of each input runs its subtree's SQL (columns
//!    `c0..`, join keys `k0..`) and sends each row to bucket
//!    `hash(keys) % W`, one bucket per healthy worker
//!    ([`super::worker_shuffle`]);
//! 2. **reduce**: bucket `b`'s worker joins its two intermediate tables,
//!    and the coordinator streams the joined rows, as it does for any
//!    fragment ([`super::scan::ShardScanExec`]).
//!
//! An aggregate grouped by other columns than the distribution column is
//! shuffled the same way, with one input: the shards compute partial
//! aggregates, send them by the hash of the grouping columns, and each
//! bucket's worker computes the final aggregates of its groups
//! ([`FragmentPushdown::shuffle_aggregate`]).
//!
//! The map stage runs once, when the first reduce fragment starts (so
//! `EXPLAIN` runs nothing), and the intermediates are dropped when the plan
//! is dropped. Equal keys hash alike on both sides because the planner has
//! already cast both to one type. Inner, left, right and full joins on
//! equality keys without another join condition are shuffled; the rest
//! still runs on the coordinator.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality, Result};
use datafusion::datasource::{provider_as_source, TableType};
use datafusion::logical_expr::{Expr, ExprSchemable, Join, JoinType, LogicalPlan, Projection};
use datafusion::physical_plan::ExecutionPlan;

use super::client::WorkerClients;
use super::coord::Cluster;
use super::pushdown::{has_subquery, rename_back, unparse, FragmentPushdown, Local};
use super::read_point::ReadPoint;
use super::scan::{Fragment, ShardScanExec};
use super::table::quote;
use super::wire::{Action, ShuffleMap};
use super::worker_shuffle::intermediate_name;
use crate::meta::state::NodeId;
use crate::sql::SqlError;

/// Where the rows of a shuffle's input come from.
#[derive(Debug, Clone)]
enum Source {
    /// One map fragment per shard.
    Shards(Vec<Fragment>),
    /// The joined buckets of an inner shuffle: on each of its buckets,
    /// `SELECT <select> FROM (<inner reduce>) AS q` is the map task.
    Nested {
        inner: Arc<ShuffleTable>,
        select: String,
    },
}

/// One input of a shuffle: its map tasks, key positions and schema.
#[derive(Debug, Clone)]
struct Side {
    name: &'static str,
    source: Source,
    columns: usize,
    keys: usize,
    schema_ipc: Vec<u8>,
}

/// Map tasks per step: a step's tasks run together, after the previous
/// step's (an inner shuffle's maps come before the maps that read its
/// buckets).
type Steps = Vec<Vec<(String, ShuffleMap)>>;

/// A map task before it is addressed: worker, SQL, table-name mapping.
type MapTask = (String, String, Vec<(String, String)>);

/// The map stage of one execution of a shuffle.
pub struct ShuffleStage {
    qid: String,
    steps: Steps,
    targets: Vec<String>,
    clients: Arc<WorkerClients>,
    started: AtomicBool,
    done: tokio::sync::OnceCell<Result<(), SqlError>>,
    /// The statement's snapshot, which the map tasks read.
    read_point: Option<Arc<ReadPoint>>,
    /// What each map task did, for `EXPLAIN ANALYZE`.
    ran: parking_lot::Mutex<Vec<MapRun>>,
}

/// One finished map task.
#[derive(Debug, Clone)]
struct MapRun {
    side: String,
    addr: String,
    rows: u64,
    took: std::time::Duration,
}

impl fmt::Debug for ShuffleStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShuffleStage({})", self.qid)
    }
}

impl ShuffleStage {
    /// Runs the map tasks once; later callers wait for the first run.
    pub async fn ensure(&self) -> Result<(), SqlError> {
        self.done
            .get_or_init(|| async {
                self.started.store(true, Ordering::Relaxed);
                for step in &self.steps {
                    let calls = step.iter().map(|(addr, task)| {
                        let mut task = task.clone();
                        async move {
                            if let Some(rp) = &self.read_point {
                                task.snapshot = rp.pin_for(addr).await?;
                            }
                            let action = Action::ShuffleMap(task.clone());
                            let started = std::time::Instant::now();
                            let reply = self.clients.action(addr, &action).await?;
                            Ok::<_, SqlError>(MapRun {
                                side: task.side.clone(),
                                addr: addr.clone(),
                                rows: reply.rows,
                                took: started.elapsed(),
                            })
                        }
                    });
                    for r in futures::future::join_all(calls).await {
                        let run = r?;
                        self.ran.lock().push(run);
                    }
                }
                Ok(())
            })
            .await
            .clone()
    }

    /// A line for `EXPLAIN`.
    pub fn describe(&self) -> String {
        let tasks = || self.steps.iter().flatten();
        let first = |side: &str| {
            tasks()
                .find(|(_, t)| t.side == side)
                .map_or(String::new(), |(_, t)| t.sql.clone())
        };
        let count = |side: &str| tasks().filter(|(_, t)| t.side == side).count();
        let mut out = format!(
            "shuffle into {} buckets of map fragments: left x{}: {}",
            self.targets.len(),
            count("l"),
            first("l"),
        );
        if count("r") > 0 {
            out.push_str(&format!("; right x{}: {}", count("r"), first("r")));
        }
        if self.steps.len() > 1 {
            out.push_str(&format!(
                " ({} steps: inputs that are themselves shuffled joins go first)",
                self.steps.len()
            ));
        }
        // After a run (EXPLAIN ANALYZE): rows and time of every map task.
        let ran = self.ran.lock();
        if !ran.is_empty() {
            let runs: Vec<String> = ran
                .iter()
                .map(|r| {
                    format!(
                        "{}@{} {} rows in {:.1} ms",
                        r.side,
                        r.addr,
                        r.rows,
                        r.took.as_secs_f64() * 1000.0
                    )
                })
                .collect();
            out.push_str(&format!("; map tasks ran: {}", runs.join(", ")));
        }
        out
    }
}

impl Drop for ShuffleStage {
    fn drop(&mut self) {
        if !self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (clients, targets, qid) = (
            self.clients.clone(),
            std::mem::take(&mut self.targets),
            self.qid.clone(),
        );
        handle.spawn(async move {
            for t in targets {
                let action = Action::DropIntermediates { qid: qid.clone() };
                if let Err(e) = clients.action(&t, &action).await {
                    tracing::warn!(worker = %t, error = %e.message, "could not drop shuffle results");
                }
            }
        });
    }
}

/// What each bucket's worker does with its intermediates.
#[derive(Debug, Clone)]
enum Reduce {
    /// Join side `l` with side `r` (`INNER JOIN`, `LEFT JOIN`, ...).
    Join(&'static str),
    /// Finish partial aggregates of side `l`: its first `groups` columns
    /// are the grouping, then one final aggregate per output column
    /// (`min`, `max` or `sum` of a partial column).
    Aggregate {
        groups: usize,
        finals: Vec<(&'static str, usize)>,
    },
}

/// The result of a shuffle, as a table of positional columns.
#[derive(Debug)]
pub struct ShuffleTable {
    name: String,
    schema: SchemaRef,
    sides: Vec<Side>,
    reduce: Reduce,
    /// `(node, host:port)` of each bucket.
    targets: Vec<(NodeId, String)>,
    cluster: Arc<Cluster>,
}

impl ShuffleTable {
    fn reduce_sql(&self, qid: &str, prefix: &str, bucket: usize) -> String {
        let name = |side: &Side| intermediate_name(qid, &format!("{prefix}{}", side.name), bucket);
        let c = |i: usize| quote(&format!("c{i}"));
        let (l, join) = match (&self.reduce, self.sides.as_slice()) {
            (Reduce::Join(join), [l, _]) => (l, *join),
            (Reduce::Aggregate { groups, finals }, [l, ..]) => {
                let keys: Vec<String> = (0..*groups).map(|i| format!("l.{}", c(i))).collect();
                let mut cols: Vec<String> = (0..*groups)
                    .map(|i| format!("l.{} AS {}", c(i), c(i)))
                    .collect();
                for (j, (f, part)) in finals.iter().enumerate() {
                    cols.push(format!("{f}(l.{}) AS {}", c(*part), c(groups + j)));
                }
                let group_by = if keys.is_empty() {
                    String::new()
                } else {
                    format!(" GROUP BY {}", keys.join(", "))
                };
                return format!(
                    "SELECT {} FROM {} AS l{group_by}",
                    cols.join(", "),
                    quote(&name(l)),
                );
            }
            (_, [l, ..]) => (l, "INNER JOIN"),
            (_, []) => return String::new(),
        };
        let Some(r) = self.sides.get(1) else {
            return String::new();
        };
        let mut cols = Vec::new();
        for i in 0..l.columns {
            cols.push(format!(
                "l.{} AS {}",
                quote(&format!("c{i}")),
                quote(&format!("c{i}"))
            ));
        }
        for i in 0..r.columns {
            let out = format!("c{}", l.columns + i);
            cols.push(format!("r.{} AS {}", quote(&format!("c{i}")), quote(&out)));
        }
        let on: Vec<String> = (0..l.keys)
            .map(|k| {
                let key = quote(&format!("k{k}"));
                format!("l.{key} = r.{key}")
            })
            .collect();
        format!(
            "SELECT {} FROM {} AS l {} {} AS r ON {}",
            cols.join(", "),
            quote(&name(l)),
            join,
            quote(&name(r)),
            on.join(" AND ")
        )
    }
}

impl ShuffleTable {
    /// Adds this shuffle's map tasks (and those of the shuffles it reads)
    /// to `steps`; returns the number of steps they take. `prefix` keeps
    /// the intermediates of nested shuffles apart.
    fn add_tasks(&self, qid: &str, prefix: &str, gid: &Option<String>, steps: &mut Steps) -> usize {
        let addrs: Vec<String> = self.targets.iter().map(|(_, a)| a.clone()).collect();
        let mut depth = 0;
        for side in &self.sides {
            let name = format!("{prefix}{}", side.name);
            let (step, maps): (usize, Vec<MapTask>) = match &side.source {
                Source::Shards(frs) => (
                    0,
                    frs.iter()
                        .map(|f| (f.addr.clone(), f.sql.clone(), f.tables.clone()))
                        .collect(),
                ),
                Source::Nested { inner, select } => {
                    let step = inner.add_tasks(qid, &name, gid, steps);
                    let maps = inner
                        .targets
                        .iter()
                        .enumerate()
                        .map(|(b, (_, addr))| {
                            let sql = format!(
                                "SELECT {select} FROM ({}) AS q",
                                inner.reduce_sql(qid, &name, b)
                            );
                            (addr.clone(), sql, vec![])
                        })
                        .collect();
                    (step, maps)
                }
            };
            if steps.len() <= step {
                steps.resize_with(step + 1, Vec::new);
            }
            for (addr, sql, tables) in maps {
                steps[step].push((
                    addr,
                    ShuffleMap {
                        qid: qid.to_owned(),
                        side: name.clone(),
                        sql,
                        tables,
                        gid: gid.clone(),
                        snapshot: None,
                        keys: (side.columns..side.columns + side.keys).collect(),
                        targets: addrs.clone(),
                        schema: side.schema_ipc.clone(),
                    },
                ));
            }
            depth = depth.max(step + 1);
        }
        depth
    }
}

#[async_trait]
impl TableProvider for ShuffleTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let gid = super::scan::session_gid(state);
        let qid = format!("{:016x}", rand::random::<u64>());
        let addrs: Vec<String> = self.targets.iter().map(|(_, a)| a.clone()).collect();
        let mut steps = Steps::new();
        self.add_tasks(&qid, "", &gid, &mut steps);
        let read_point = ReadPoint::of_statement(state, &self.cluster);
        if let Some(rp) = &read_point {
            let tasks = steps.iter().flatten();
            rp.plan(tasks.clone().map(|(a, _)| a.as_str()), tasks.count());
        }
        let stage = Arc::new(ShuffleStage {
            qid: qid.clone(),
            steps,
            targets: addrs,
            clients: self.cluster.clients.clone(),
            started: AtomicBool::new(false),
            done: tokio::sync::OnceCell::new(),
            ran: parking_lot::Mutex::new(Vec::new()),
            read_point,
        });
        let fragments: Vec<Fragment> = self
            .targets
            .iter()
            .enumerate()
            .map(|(b, (node, addr))| Fragment {
                shard_id: b as u64,
                node: *node,
                addr: addr.clone(),
                sql: self.reduce_sql(&qid, "", b),
                tables: vec![],
            })
            .collect();
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(
            ShardScanExec::new(
                self.name.clone(),
                schema,
                fragments,
                gid,
                false,
                self.cluster.clients.clone(),
            )
            .with_projection(projection.cloned())
            .with_stage(stage)
            .with_session_limits(state),
        ))
    }
}

/// `plan`'s columns as `c0..` followed by `keys` as `k0..`: what a map
/// task sends.
fn with_keys(plan: &Arc<LogicalPlan>, keys: &[Expr]) -> Option<Projection> {
    let mut exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("c{i}")))
        .collect();
    exprs.extend(
        keys.iter()
            .enumerate()
            .map(|(i, k)| k.clone().alias(format!("k{i}"))),
    );
    Projection::try_new(exprs, plan.clone()).ok()
}

/// `schema` with its columns named `c0..cN`.
fn positional(schema: &datafusion::common::DFSchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
        .collect();
    Arc::new(Schema::new(fields))
}

fn schema_ipc(schema: &Schema) -> Option<Vec<u8>> {
    let msg = arrow_flight::IpcMessage::try_from(arrow_flight::SchemaAsIpc::new(
        schema,
        &IpcWriteOptions::default(),
    ))
    .ok()?;
    Some(msg.0.to_vec())
}

impl FragmentPushdown {
    /// One input of a shuffle: SQL of `plan` with its columns as `c0..` and
    /// `keys` as `k0..`, and one map fragment per shard.
    fn side(
        &self,
        name: &'static str,
        plan: &Arc<LogicalPlan>,
        local: &Local,
        keys: &[Expr],
    ) -> Option<Side> {
        let projected = LogicalPlan::Projection(with_keys(plan, keys)?);
        let columns = plan.schema().fields().len();
        let sql = unparse(&projected)?;
        let fragments = self.shard_fragments(plan, local, &sql)?;
        if fragments.is_empty() {
            return None;
        }
        let schema = projected.schema().as_arrow().clone();
        Some(Side {
            name,
            source: Source::Shards(fragments),
            columns,
            keys: keys.len(),
            schema_ipc: schema_ipc(&schema)?,
        })
    }

    /// A join of two shard-local inputs that are not co-located, as a
    /// shuffle (see the module docs); `None` when it cannot be one.
    pub(super) fn shuffle_join(&self, j: &Join) -> Option<LogicalPlan> {
        let (table, _) = self.shuffle_join_table(j)?;
        let name = table.name.clone();
        rename_back(&name, provider_as_source(table), &j.schema)
    }

    /// An input of a shuffled join: shard-local (a map task per shard), or
    /// itself a shuffled join, maybe under a projection (a map task per
    /// bucket of that shuffle). Also the tables it reads.
    fn join_input(
        &self,
        name: &'static str,
        plan: &Arc<LogicalPlan>,
        keys: &[Expr],
    ) -> Option<(Side, Vec<String>)> {
        if let Some(local) = self.locality(plan).filter(|l| l.group.is_some()) {
            let side = self.side(name, plan, &local, keys)?;
            return Some((side, local.tables.into_iter().collect()));
        }
        let (join, projection) = match plan.as_ref() {
            LogicalPlan::Join(j) => (j, None),
            LogicalPlan::Projection(p) => match p.input.as_ref() {
                LogicalPlan::Join(j) => (j, Some(p)),
                _ => return None,
            },
            _ => return None,
        };
        let (inner, tables) = self.shuffle_join_table(join)?;
        // `plan`'s columns and the keys as SQL over the inner join's
        // positional columns `q.c0..`.
        let defs: Vec<(Column, Expr)> = match projection {
            Some(p) => p
                .schema
                .iter()
                .zip(&p.expr)
                .map(|((q, f), e)| (Column::new(q.cloned(), f.name()), e.clone().unalias()))
                .collect(),
            None => plan
                .schema()
                .columns()
                .into_iter()
                .map(|c| (c.clone(), Expr::Column(c)))
                .collect(),
        };
        let over_q = |e: Expr| -> Option<String> {
            let e = e
                .transform(|x| match x {
                    Expr::Column(c) => {
                        let i = join.schema.index_of_column(&c)?;
                        Ok(Transformed::yes(Expr::Column(Column::new(
                            Some("q"),
                            format!("c{i}"),
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })
                .ok()?
                .data;
            super::unparse::expr_to_sql(&e).ok().map(|s| s.to_string())
        };
        let mut select = Vec::new();
        for (i, (_, e)) in defs.iter().enumerate() {
            select.push(format!(
                "{} AS {}",
                over_q(e.clone())?,
                quote(&format!("c{i}"))
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            // A key names `plan`'s columns: put their definitions in.
            let k = k
                .clone()
                .transform(|x| match x {
                    Expr::Column(c) => Ok(defs
                        .iter()
                        .find(|(d, _)| *d == c || (c.relation.is_none() && d.name == c.name))
                        .map_or(Transformed::no(Expr::Column(c.clone())), |(_, e)| {
                            Transformed::yes(e.clone())
                        })),
                    other => Ok(Transformed::no(other)),
                })
                .ok()?
                .data;
            select.push(format!("{} AS {}", over_q(k)?, quote(&format!("k{i}"))));
        }
        let projected = with_keys(plan, keys)?;
        let side = Side {
            name,
            source: Source::Nested {
                inner,
                select: select.join(", "),
            },
            columns: defs.len(),
            keys: keys.len(),
            schema_ipc: schema_ipc(projected.schema.as_arrow())?,
        };
        Some((side, tables))
    }

    /// The shuffle of join `j` and the tables it reads.
    fn shuffle_join_table(&self, j: &Join) -> Option<(Arc<ShuffleTable>, Vec<String>)> {
        let join = match j.join_type {
            JoinType::Inner => "INNER JOIN",
            JoinType::Left => "LEFT JOIN",
            JoinType::Right => "RIGHT JOIN",
            JoinType::Full => "FULL JOIN",
            _ => return None,
        };
        if j.on.is_empty()
            || j.filter.is_some()
            || j.null_equality != NullEquality::NullEqualsNothing
            || j.on.iter().any(|(l, r)| has_subquery(l) || has_subquery(r))
        {
            return None;
        }
        for (l, r) in &j.on {
            if l.get_type(j.left.schema()).ok()? != r.get_type(j.right.schema()).ok()? {
                return None;
            }
        }
        let lkeys: Vec<Expr> = j.on.iter().map(|(l, _)| l.clone()).collect();
        let rkeys: Vec<Expr> = j.on.iter().map(|(_, r)| r.clone()).collect();
        let (left, lt) = self.join_input("l", &j.left, &lkeys)?;
        let (right, rt) = self.join_input("r", &j.right, &rkeys)?;
        let mut names: Vec<String> = lt.into_iter().chain(rt).collect();
        names.dedup();
        let table = Arc::new(ShuffleTable {
            name: format!("shuffle_{}", names.join("_")),
            schema: positional(&j.schema),
            sides: vec![left, right],
            reduce: Reduce::Join(join),
            targets: self.shuffle_targets()?,
            cluster: self.cluster().clone(),
        });
        Some((table, names))
    }

    /// The workers that take a bucket each: healthy and placeable.
    fn shuffle_targets(&self) -> Option<Vec<(NodeId, String)>> {
        let cluster = self.cluster();
        let state = cluster.snapshot();
        let unhealthy = cluster.api().unhealthy_nodes(&state);
        let targets: Vec<(NodeId, String)> = state
            .nodes
            .iter()
            .filter(|(id, n)| n.is_placeable() && !unhealthy.contains(id))
            .map(|(id, n)| (*id, format!("{}:{}", n.host, n.port)))
            .collect();
        (!targets.is_empty()).then_some(targets)
    }

    /// Partial aggregate `lower` (group columns first, then partials) with
    /// its final aggregate `upper` run per bucket on the workers, the
    /// partials shuffled by the group columns; `finals` names the final
    /// function and partial column of each of `upper`'s aggregates. `None`
    /// when it cannot be shuffled (no grouping: nothing to spread).
    pub(super) fn shuffle_aggregate(
        &self,
        lower: LogicalPlan,
        local: &Local,
        upper: &LogicalPlan,
        finals: Vec<(&'static str, usize)>,
    ) -> Option<LogicalPlan> {
        let LogicalPlan::Aggregate(agg) = &lower else {
            return None;
        };
        let groups = agg.group_expr.len();
        if groups == 0 {
            return None;
        }
        let keys: Vec<Expr> = lower
            .schema()
            .iter()
            .take(groups)
            .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
            .collect();
        let tables = local.tables.iter().cloned().collect::<Vec<_>>().join("_");
        let side = self.side("l", &Arc::new(lower), local, &keys)?;
        let name = format!("shuffle_agg_{tables}");
        let table = Arc::new(ShuffleTable {
            name: name.clone(),
            schema: positional(upper.schema()),
            sides: vec![side],
            reduce: Reduce::Aggregate { groups, finals },
            targets: self.shuffle_targets()?,
            cluster: self.cluster().clone(),
        });
        rename_back(&name, provider_as_source(table), upper.schema())
    }
}
