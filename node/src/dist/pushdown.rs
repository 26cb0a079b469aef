//! Pushing co-located work into the shard fragments.
//!
//! Step in the flow: [`FragmentPushdown`] is a DataFusion optimizer rule on
//! a coordinator, run after DataFusion's own rules. It looks for maximal
//! subtrees of the logical plan that every shard can answer alone:
//! - scans of distributed tables of one co-location group, and of
//!   reference tables (a copy on every worker);
//! - filters and projections over them (no subqueries);
//! - joins of co-located tables on their distribution columns (any join
//!   type), and joins with a reference table that never emit the reference
//!   side's unmatched rows;
//! - aggregates grouped by a distribution column.
//!
//! Two more split between the shards and the coordinator: other aggregates
//! (partial aggregates in the fragments, final ones on the coordinator;
//! DISTINCT is a grouping without aggregates), and `ORDER BY ... LIMIT n`
//! (top-k: each shard returns its first `n` rows).
//!
//! A range table counts as a co-location group of its own (its range column
//! is its distribution column). Over a single sharded table, the filters
//! pushed into its scan prune the fragments' shards.
//!
//! Such a subtree that holds a join or an aggregate is replaced by a scan
//! of a [`FragmentTable`]: its SQL (DataFusion's unparser) runs once per
//! shard index on the worker holding that index of every table in it, each
//! table name mapped to that shard's table by the worker. A projection on
//! top gives the fragment's columns back their original names, so the rest
//! of the plan (merging on the coordinator) is untouched.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError, Result, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider, TableType};
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, Cast, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, Sort, TableScan,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;

use super::coord::Cluster;
use super::read_point::ReadPoint;
use super::route::TableLayout;
use super::scan::{Fragment, ShardScanExec};
use super::shard_table_name;
use super::table::DistributedTable;
use crate::meta::state::TableKind;

/// Where a subtree can run.
#[derive(Debug, Clone)]
pub(super) struct Local {
    /// Co-location group of the sharded tables; `None`: reference tables only.
    pub(super) group: Option<u64>,
    /// Columns (qualifier, name) holding the distribution column value.
    pub(super) dist_cols: BTreeSet<(Option<String>, String)>,
    /// Tables scanned (distributed and reference).
    pub(super) tables: BTreeSet<String>,
    /// Holds a join or an aggregate (worth pushing down).
    pub(super) heavy: bool,
}

/// The optimizer rule (see the module docs).
#[derive(Debug)]
pub struct FragmentPushdown {
    cluster: Arc<Cluster>,
}

impl FragmentPushdown {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        FragmentPushdown { cluster }
    }

    pub(super) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn scan_locality(&self, scan: &TableScan) -> Option<Local> {
        if scan.fetch.is_some() {
            return None;
        }
        let provider = source_as_provider(&scan.source).ok()?;
        let table = provider.downcast_ref::<DistributedTable>()?;
        let layout = self.cluster.layout(table.name())?;
        let qualifier = Some(scan.table_name.to_string());
        let (group, dist_cols) = match &layout.info.kind {
            TableKind::Hash {
                column,
                colocation_id,
            } => (
                Some(*colocation_id),
                [(qualifier, column.clone())].into_iter().collect(),
            ),
            TableKind::Reference => (None, BTreeSet::new()),
            // A range table is co-located with itself only: a group of its
            // own, which no hash group id reaches.
            TableKind::Range { column, .. } => (
                Some(u64::MAX - layout.table_id),
                [(qualifier, column.clone())].into_iter().collect(),
            ),
        };
        Some(Local {
            group,
            dist_cols,
            tables: [layout.info.name.clone()].into_iter().collect(),
            heavy: false,
        })
    }

    pub(super) fn locality(&self, plan: &LogicalPlan) -> Option<Local> {
        match plan {
            LogicalPlan::TableScan(scan) => self.scan_locality(scan),
            LogicalPlan::Filter(f) if !has_subquery(&f.predicate) => self.locality(&f.input),
            LogicalPlan::Projection(p) if !p.expr.iter().any(has_subquery) => {
                let mut l = self.locality(&p.input)?;
                // Distribution columns passed through (possibly renamed).
                let mut kept = BTreeSet::new();
                for (e, (q, f)) in p.expr.iter().zip(p.schema.iter()) {
                    if let Some(c) = column_of(e) {
                        if is_dist(&l, &c) {
                            kept.insert((q.map(|q| q.to_string()), f.name().clone()));
                        }
                    }
                }
                l.dist_cols = kept;
                Some(l)
            }
            LogicalPlan::SubqueryAlias(a) => {
                let mut l = self.locality(&a.input)?;
                let alias = a.alias.to_string();
                l.dist_cols = l
                    .dist_cols
                    .into_iter()
                    .map(|(_, n)| (Some(alias.clone()), n))
                    .collect();
                Some(l)
            }
            LogicalPlan::Join(j) => {
                if j.filter.as_ref().is_some_and(has_subquery) {
                    return None;
                }
                let l = self.locality(&j.left)?;
                let r = self.locality(&j.right)?;
                let group = match (l.group, r.group) {
                    (Some(a), Some(b)) => {
                        let paired = a == b
                            && j.on.iter().any(|(le, re)| {
                                column_of(le).is_some_and(|c| is_dist(&l, &c))
                                    && column_of(re).is_some_and(|c| is_dist(&r, &c))
                            });
                        if !paired {
                            return None;
                        }
                        Some(a)
                    }
                    // The reference side must never emit unmatched rows.
                    (Some(a), None) => {
                        let ok = matches!(
                            j.join_type,
                            JoinType::Inner
                                | JoinType::Left
                                | JoinType::LeftSemi
                                | JoinType::LeftAnti
                        );
                        if !ok {
                            return None;
                        }
                        Some(a)
                    }
                    (None, Some(b)) => {
                        let ok = matches!(
                            j.join_type,
                            JoinType::Inner
                                | JoinType::Right
                                | JoinType::RightSemi
                                | JoinType::RightAnti
                        );
                        if !ok {
                            return None;
                        }
                        Some(b)
                    }
                    (None, None) => None,
                };
                let mut dist_cols = l.dist_cols;
                dist_cols.extend(r.dist_cols);
                let mut tables = l.tables;
                tables.extend(r.tables);
                Some(Local {
                    group,
                    dist_cols,
                    tables,
                    heavy: true,
                })
            }
            LogicalPlan::Aggregate(a) => {
                let l = self.locality(&a.input)?;
                if a.aggr_expr.iter().any(has_subquery) {
                    return None;
                }
                let grouped_by_dist = a
                    .group_expr
                    .iter()
                    .any(|g| column_of(g).is_some_and(|c| is_dist(&l, &c)));
                if l.group.is_none() || !grouped_by_dist {
                    return None;
                }
                let mut kept = BTreeSet::new();
                for (e, (q, f)) in a.group_expr.iter().zip(a.schema.iter()) {
                    if column_of(e).is_some_and(|c| is_dist(&l, &c)) {
                        kept.insert((q.map(|q| q.to_string()), f.name().clone()));
                    }
                }
                Some(Local {
                    dist_cols: kept,
                    heavy: true,
                    ..l
                })
            }
            _ => None,
        }
    }

    /// Replaces `plan` (a local subtree) by a fragment scan, or `None` when
    /// its SQL cannot be written.
    fn fragment(&self, plan: &LogicalPlan, local: &Local) -> Option<LogicalPlan> {
        // Name every output column c0, c1, ... in order: the worker's result
        // is then read by position.
        let named: Vec<Expr> = plan
            .schema()
            .iter()
            .enumerate()
            .map(|(i, (q, f))| {
                Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("c{i}"))
            })
            .collect();
        let wrapped = Projection::try_new(named, Arc::new(plan.clone())).ok()?;
        let sql = unparse(&LogicalPlan::Projection(wrapped))?;
        let fragments = self.shard_fragments(plan, local, &sql)?;
        let df_schema = plan.schema();
        let fields: Vec<Field> = df_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
            .collect();
        let name = format!(
            "fragment_{}",
            local.tables.iter().cloned().collect::<Vec<_>>().join("_")
        );
        let table = Arc::new(FragmentTable {
            cluster: self.cluster.clone(),
            name: name.clone(),
            schema: Arc::new(Schema::new(fields)),
            fragments,
        });
        rename_back(&name, provider_as_source(table), df_schema)
    }

    /// The fragments running `sql` (over subtree `plan`) once per shard
    /// index; `None` when a shard index has no node holding every table, or
    /// when no shard can match.
    pub(super) fn shard_fragments(
        &self,
        plan: &LogicalPlan,
        local: &Local,
        sql: &str,
    ) -> Option<Vec<Fragment>> {
        let state = self.cluster.snapshot();
        let unhealthy = self.cluster.api().unhealthy_nodes(&state);
        let layouts: Vec<TableLayout> = local
            .tables
            .iter()
            .map(|t| TableLayout::of_with(&state, t, &unhealthy))
            .collect::<Option<_>>()?;
        let count = layouts
            .iter()
            .filter(|l| !l.is_reference())
            .map(|l| l.shards.len())
            .max()?;
        let keep = prune_single(plan, &layouts).unwrap_or_else(|| (0..count).collect());
        if keep.is_empty() {
            // No shard can match: the plain scans answer (aggregates without
            // GROUP BY still give their one row).
            return None;
        }
        // Shard index i of every sharded table lives on the same node (co-location);
        // reference tables have a copy there too.
        let mut fragments = Vec::with_capacity(keep.len());
        for i in keep {
            let anchor = layouts.iter().find(|l| !l.is_reference())?;
            let (node, addr) = anchor.read_placement(&anchor.shards[i]).ok()?;
            let mut tables = Vec::new();
            for l in &layouts {
                let shard = if l.is_reference() {
                    l.shards.first()?
                } else {
                    l.shards.get(i)?
                };
                if !shard.placements.iter().any(|(n, _)| *n == node) {
                    return None;
                }
                tables.push((
                    l.info.name.clone(),
                    shard_table_name(&l.info.name, shard.shard_id),
                ));
            }
            fragments.push(Fragment {
                shard_id: anchor.shards[i].shard_id,
                node,
                addr,
                sql: sql.to_owned(),
                tables,
            });
        }
        Some(fragments)
    }

    fn rewrite_down(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        if let Some(local) = self.locality(&plan) {
            if local.heavy && local.group.is_some() {
                if let Some(p) = self.fragment(&plan, &local) {
                    return Ok(Transformed::yes(p));
                }
            }
        }
        if let LogicalPlan::Aggregate(a) = &plan {
            if let Some(p) = self.split_aggregate(a) {
                return Ok(Transformed::yes(p));
            }
        }
        if let LogicalPlan::Sort(s) = &plan {
            if let Some(p) = self.split_topk(s) {
                return Ok(Transformed::yes(p));
            }
        }
        if let LogicalPlan::Join(j) = &plan {
            if let Some(p) = self.shuffle_join(j) {
                return Ok(Transformed::yes(p));
            }
        }
        plan.map_children(|c| self.rewrite_down(c))
    }

    /// `ORDER BY ... LIMIT n` over a shard-local input: every shard returns
    /// its own first `n` rows, the coordinator sorts those and keeps `n`.
    fn split_topk(&self, s: &Sort) -> Option<LogicalPlan> {
        let fetch = s.fetch?;
        if s.expr.iter().any(|e| has_subquery(&e.expr)) {
            return None;
        }
        let local = self.locality(&s.input)?;
        local.group?;
        let lower = LogicalPlan::Sort(s.clone());
        let frag = self.fragment(
            &lower,
            &Local {
                heavy: true,
                ..local
            },
        )?;
        Some(LogicalPlan::Sort(Sort {
            expr: s.expr.clone(),
            input: Arc::new(frag),
            fetch: Some(fetch),
        }))
    }

    /// An aggregate over a shard-local input, not grouped by the
    /// distribution column: partial aggregates run in the fragments, the
    /// final ones on the coordinator. `None` when an aggregate cannot be
    /// split (DISTINCT, FILTER, ORDER BY, or a function other than sum,
    /// count, min, max and avg).
    fn split_aggregate(&self, a: &Aggregate) -> Option<LogicalPlan> {
        let local = self.locality(&a.input)?;
        local.group?;
        if a.group_expr
            .iter()
            .any(|g| matches!(g, Expr::GroupingSet(_)))
        {
            return None;
        }
        let ng = a.group_expr.len();
        let mut partial = Vec::new();
        // Per original aggregate: the final expression's parts.
        let mut finals: Vec<(String, Vec<usize>)> = Vec::new();
        for e in &a.aggr_expr {
            let inner = match e {
                Expr::Alias(al) => al.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(f) = inner else {
                return None;
            };
            let p = &f.params;
            if p.distinct || p.filter.is_some() || !p.order_by.is_empty() || p.args.len() != 1 {
                return None;
            }
            let arg = p.args[0].clone();
            let name = f.func.name().to_ascii_lowercase();
            let first = partial.len();
            match name.as_str() {
                "sum" => partial.push(agg::sum(arg)),
                "count" => partial.push(agg::count(arg)),
                "min" => partial.push(agg::min(arg)),
                "max" => partial.push(agg::max(arg)),
                "avg" => {
                    // avg of an integer is taken over it as numeric
                    // (`sql::int_literals`): the shards sum the integers
                    // as bigint, written as the query's own `sum(x)` is
                    // (a `sum(CAST(x AS numeric))` beside it would share
                    // its name in the fragment, which the worker refuses),
                    // and `quiver_avg_merge` divides in numeric.
                    match arg {
                        Expr::Cast(c) if integer_under_decimal(&c, a.input.schema()) => {
                            partial.push(agg::sum(bigint(*c.expr.clone(), a.input.schema())));
                            partial.push(agg::count(*c.expr));
                        }
                        arg => {
                            partial.push(agg::sum(arg.clone()));
                            partial.push(agg::count(arg));
                        }
                    }
                }
                _ => return None,
            }
            finals.push((name, (first..partial.len()).collect()));
        }
        let partial: Vec<Expr> = partial
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.alias(format!("p{i}")))
            .collect();
        let lower = LogicalPlan::Aggregate(
            Aggregate::try_new(a.input.clone(), a.group_expr.clone(), partial).ok()?,
        );
        let lower_local = Local {
            heavy: true,
            ..local
        };
        let group_cols: Vec<Expr> = lower
            .schema()
            .iter()
            .take(ng)
            .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
            .collect();
        let pcol = |i: usize| Expr::Column(Column::new_unqualified(format!("p{i}")));
        let mut upper_aggs = Vec::new();
        // The final function and partial column (position in `lower`) of each.
        let mut reduce: Vec<(&'static str, usize)> = Vec::new();
        for (name, parts) in &finals {
            let (e, f) = match name.as_str() {
                "min" => (agg::min(pcol(parts[0])), "min"),
                "max" => (agg::max(pcol(parts[0])), "max"),
                // sum of sums, sum of counts; avg from both
                _ => (agg::sum(pcol(parts[0])), "sum"),
            };
            upper_aggs.push(e.alias(format!("f{}", parts[0])));
            reduce.push((f, ng + parts[0]));
            if name == "avg" {
                upper_aggs.push(agg::sum(pcol(parts[1])).alias(format!("f{}", parts[1])));
                reduce.push(("sum", ng + parts[1]));
            }
        }
        // Grouped by other columns: the partials are shuffled by the group
        // and finished on the workers; otherwise on the coordinator.
        let over_lower = LogicalPlan::Aggregate(
            Aggregate::try_new(
                Arc::new(lower.clone()),
                group_cols.clone(),
                upper_aggs.clone(),
            )
            .ok()?,
        );
        let upper = match self.shuffle_aggregate(lower.clone(), &lower_local, &over_lower, reduce) {
            Some(shuffled) => shuffled,
            None => {
                let frag = self.fragment(&lower, &lower_local)?;
                LogicalPlan::Aggregate(
                    Aggregate::try_new(Arc::new(frag), group_cols, upper_aggs).ok()?,
                )
            }
        };
        let us = upper.schema().clone();
        let fcol = |i: usize| Expr::Column(Column::new_unqualified(format!("f{i}")));
        let mut out = Vec::new();
        for (i, (q, f)) in a.schema.iter().enumerate() {
            let e = if i < ng {
                let (uq, uf) = us.qualified_field(i);
                Expr::Column(Column::new(uq.cloned(), uf.name()))
            } else {
                let (name, parts) = &finals[i - ng];
                if name == "avg" {
                    // Divided in the average's own type: exact for numeric.
                    let ty = ScalarValue::try_from(f.data_type()).ok()?;
                    Expr::ScalarFunction(ScalarFunction::new_udf(
                        Arc::new(crate::sql::avg_merge::avg_merge_udf()),
                        vec![fcol(parts[0]), fcol(parts[1]), Expr::Literal(ty, None)],
                    ))
                } else {
                    Expr::Cast(Cast::new(Box::new(fcol(parts[0])), f.data_type().clone()))
                }
            };
            out.push(e.alias_qualified(q.cloned(), f.name()));
        }
        Projection::try_new(out, Arc::new(upper))
            .ok()
            .map(LogicalPlan::Projection)
    }
}

/// The SQL of `plan`. Under an alias, a filter right above a scan loses
/// its table qualifier, and the scan its pushed filters (the filter above
/// repeats them: every pushdown is inexact): the unparser would write them
/// with the table's name (`FROM t AS a WHERE t.x = 1`), which does not
/// resolve.
pub(super) fn unparse(plan: &LogicalPlan) -> Option<String> {
    use datafusion::logical_expr::{Filter, SubqueryAlias};
    let fixed = plan
        .clone()
        .transform_up(|p| {
            let LogicalPlan::SubqueryAlias(a) = &p else {
                return Ok(Transformed::no(p));
            };
            let input = match a.input.as_ref() {
                LogicalPlan::Filter(f) => match f.input.as_ref() {
                    LogicalPlan::TableScan(scan) => {
                        let mut scan = scan.clone();
                        scan.filters.clear();
                        LogicalPlan::Filter(Filter::try_new(
                            crate::sql::fast_dml::unqualified(f.predicate.clone())?,
                            Arc::new(LogicalPlan::TableScan(scan)),
                        )?)
                    }
                    _ => return Ok(Transformed::no(p)),
                },
                _ => return Ok(Transformed::no(p)),
            };
            let alias = SubqueryAlias::try_new(Arc::new(input), a.alias.clone())?;
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(alias)))
        })
        .ok()?
        .data;
    super::unparse::plan_to_sql(&fixed)
        .ok()
        .map(|s| s.to_string())
}

/// A scan of `source` (columns `c0..cN`) under `name`, with a projection
/// that gives the columns back the qualified names of `schema`.
pub(super) fn rename_back(
    name: &str,
    source: Arc<dyn datafusion::logical_expr::TableSource>,
    schema: &datafusion::common::DFSchemaRef,
) -> Option<LogicalPlan> {
    let scan = LogicalPlanBuilder::scan(name.to_owned(), source, None)
        .ok()?
        .build()
        .ok()?;
    let exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let c = Expr::Column(Column::new(
                Some(TableReference::bare(name.to_owned())),
                format!("c{i}"),
            ));
            c.alias_qualified(q.cloned(), f.name())
        })
        .collect();
    Projection::try_new(exprs, Arc::new(scan))
        .ok()
        .map(LogicalPlan::Projection)
}

/// The shard positions a subtree over one sharded table (and reference
/// tables) must read, pruned by the filters pushed into that table's scan;
/// `None` when it scans sharded tables more than once.
fn prune_single(plan: &LogicalPlan, layouts: &[TableLayout]) -> Option<Vec<usize>> {
    let mut sharded = layouts.iter().filter(|l| !l.is_reference());
    let layout = sharded.next()?;
    if sharded.next().is_some() {
        return None;
    }
    let mut scans = Vec::new();
    plan.apply(|p| {
        if let LogicalPlan::TableScan(s) = p {
            if s.table_name.table() == layout.info.name {
                scans.push(s.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let [scan] = scans.as_slice() else {
        return None;
    };
    let provider = source_as_provider(&scan.source).ok()?;
    let table = provider.downcast_ref::<DistributedTable>()?;
    Some(layout.prune(&scan.filters, table.column_type(layout).as_ref()))
}

pub(super) fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::OuterReferenceColumn(..)
        ))
    })
    .unwrap_or(true)
}

fn column_of(e: &Expr) -> Option<Column> {
    match e {
        Expr::Column(c) => Some(c.clone()),
        Expr::Alias(a) => column_of(&a.expr),
        Expr::Cast(c) => column_of(&c.expr),
        _ => None,
    }
}

fn is_dist(l: &Local, c: &Column) -> bool {
    let q = c.relation.as_ref().map(|r| r.to_string());
    l.dist_cols.contains(&(q.clone(), c.name.clone()))
        || (q.is_none() && l.dist_cols.iter().any(|(_, n)| *n == c.name))
}

impl OptimizerRule for FragmentPushdown {
    fn name(&self) -> &str {
        "quiver_fragment_pushdown"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        self.rewrite_down(plan)
    }
}

/// The result of one pushed-down subtree, as a table of positional columns.
#[derive(Debug)]
pub struct FragmentTable {
    cluster: Arc<Cluster>,
    name: String,
    schema: SchemaRef,
    fragments: Vec<Fragment>,
}

#[async_trait]
impl TableProvider for FragmentTable {
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
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        if self.fragments.is_empty() {
            return Err(DataFusionError::Internal(
                "a fragment table without shards".into(),
            ));
        }
        Ok(Arc::new(
            ShardScanExec::new(
                self.name.clone(),
                schema,
                self.fragments.clone(),
                gid,
                false,
                self.cluster.clients.clone(),
            )
            .with_projection(projection.cloned())
            .with_read_point(ReadPoint::of_statement(state, &self.cluster))
            .with_session_limits(state),
        ))
    }
}

/// `x` as `bigint`, cast only when it is not one already (as type coercion
/// writes the argument of `sum`).
fn bigint(x: Expr, schema: &datafusion::common::DFSchema) -> Expr {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::ExprSchemable;
    if matches!(x.get_type(schema), Ok(DataType::Int64)) {
        x
    } else {
        Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(x),
            DataType::Int64,
        ))
    }
}

/// `CAST(x AS decimal)` of an integer `x`.
fn integer_under_decimal(
    c: &datafusion::logical_expr::Cast,
    schema: &datafusion::common::DFSchema,
) -> bool {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::ExprSchemable;
    matches!(
        c.field.data_type(),
        DataType::Decimal128(..) | DataType::Decimal256(..)
    ) && c.expr.get_type(schema).is_ok_and(|t| t.is_integer())
}
