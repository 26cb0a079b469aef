//! The DML fast path: `UPDATE t SET ... [WHERE ...]`, `DELETE FROM t
//! [WHERE ...]` and `INSERT INTO t [(cols)] VALUES ...` (a few rows) on one
//! table, without planning the statement as a query.
//!
//! Step in the flow: [`Session::dispatch`] tries it before the general path
//! (inside [`Session::write_locked`], so rows are locked and the statement
//! re-run exactly as on the general path). Planning a DML statement with
//! DataFusion (SQL to plan, analyzer, optimizer, physical planner) costs
//! many times what changing one row does, and single-row writes are most of
//! an OLTP workload (pgbench's TPC-B-like transaction is four of them).
//!
//! What DataFusion's planner would hand the table provider is built
//! directly: the SET expressions (each cast to its column's type), the
//! WHERE conjuncts and the VALUES rows are turned into logical expressions
//! against the table's columns, run through the session's analyzer in a
//! projection over an empty relation (type coercion, checked integer
//! arithmetic, PostgreSQL's typing: the rules of the general path),
//! simplified, and given to the table's own
//! [`TableProvider::update`] / [`TableProvider::delete_from`] /
//! [`TableProvider::insert_into`]. So the provider does the work as it
//! always does: a stored table finds a keyed row through its unique index,
//! a distributed table routes the write to the shard the key hashes to.
//!
//! A statement qualifies only when nothing in it needs more: one stored or
//! distributed table (not a view or an external table), no FROM / USING /
//! RETURNING / ORDER BY / LIMIT / ON CONFLICT, each column named once. When
//! the fast path cannot plan an expression (a subquery, an unknown column,
//! a constant that overflows), it steps aside and the general path runs the
//! statement, so errors are the general path's own.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ParamValues, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    EmptyRelation, Expr as DfExpr, ExprSchemable, Filter, LogicalPlan, Projection,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, ExprWithAlias, FromTable, Insert, ObjectName, ObjectNamePart,
    Query, SetExpr, Statement, TableObject, Update, Values,
};
use parking_lot::Mutex;

use super::session::{Outcome, Session};
use super::SqlError;

/// A session's state and task context as the fast path uses them, copied
/// from its `SessionContext` once rather than per statement: a copy clones
/// every function registry (hundreds of entries), which cost more than the
/// rest of a one-row UPDATE. `SET` forgets the copy (it may change the
/// configuration); nothing else changes a session's state after it starts.
#[derive(Default)]
pub struct FastState(Mutex<Option<(Arc<SessionState>, Arc<TaskContext>)>>);

impl FastState {
    fn get(&self, ctx: &SessionContext) -> (Arc<SessionState>, Arc<TaskContext>) {
        self.0
            .lock()
            .get_or_insert_with(|| {
                let state = ctx.state();
                let task = state.task_ctx();
                (Arc::new(state), task)
            })
            .clone()
    }

    pub fn forget(&self) {
        *self.0.lock() = None;
    }
}

/// An UPDATE's `(column, value)` pairs, as a table provider takes them.
type Assignments = Vec<(String, DfExpr)>;

/// A VALUES list longer than this takes the general path.
const MAX_VALUES_ROWS: usize = 16;

/// What a recognised statement does.
enum Op {
    /// `(column, value)` per SET item, and the WHERE clause.
    Update {
        set: Vec<(String, Expr)>,
        selection: Option<Expr>,
    },
    Delete {
        selection: Option<Expr>,
    },
    /// The target columns (empty: all, in order) and the VALUES rows.
    Insert {
        columns: Vec<String>,
        rows: Vec<Vec<Expr>>,
    },
}

/// A DML statement the fast path can run.
pub struct FastDml {
    /// The table's name in the catalog.
    table: String,
    /// The name or alias its columns may be qualified with.
    qualifier: String,
    op: Op,
}

/// A plain column name (`col`, not `t.col`).
fn column_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(super::idents::fold(i)),
        _ => None,
    }
}

/// The rows of a plain `VALUES` query.
fn plain_values(q: &Query) -> Option<&Values> {
    if !super::point::is_plain(q) {
        return None;
    }
    match q.body.as_ref() {
        SetExpr::Values(v) if !v.explicit_row && !v.value_keyword => Some(v),
        _ => None,
    }
}

/// Names listed once each.
fn distinct(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n))
}

impl FastDml {
    /// Recognises `stmt` by its shape alone (the catalog is asked later).
    pub fn recognize(stmt: &Statement) -> Option<FastDml> {
        match stmt {
            Statement::Update(Update {
                table,
                assignments,
                from: None,
                selection,
                returning: None,
                output: None,
                or: None,
                order_by,
                limit: None,
                optimizer_hints,
                ..
            }) if order_by.is_empty() && optimizer_hints.is_empty() => {
                let (table, qualifier) = super::point::single_table(table)?;
                let set = assignments
                    .iter()
                    .map(|a| match &a.target {
                        AssignmentTarget::ColumnName(c) => Some((column_name(c)?, a.value.clone())),
                        AssignmentTarget::Tuple(_) => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                let names: Vec<String> = set.iter().map(|(c, _)| c.clone()).collect();
                if set.is_empty() || !distinct(&names) {
                    return None;
                }
                Some(FastDml {
                    table,
                    qualifier,
                    op: Op::Update {
                        set,
                        selection: selection.clone(),
                    },
                })
            }
            Statement::Delete(Delete {
                tables,
                from: FromTable::WithFromKeyword(from),
                using: None,
                selection,
                returning: None,
                output: None,
                order_by,
                limit: None,
                optimizer_hints,
                ..
            }) if tables.is_empty() && order_by.is_empty() && optimizer_hints.is_empty() => {
                let [from] = from.as_slice() else {
                    return None;
                };
                let (table, qualifier) = super::point::single_table(from)?;
                Some(FastDml {
                    table,
                    qualifier,
                    op: Op::Delete {
                        selection: selection.clone(),
                    },
                })
            }
            Statement::Insert(Insert {
                or: None,
                ignore: false,
                table: TableObject::TableName(name),
                table_alias: None,
                columns,
                overwrite: false,
                source: Some(source),
                assignments,
                partitioned: None,
                after_columns,
                on: None,
                returning: None,
                output: None,
                replace_into: false,
                priority: None,
                insert_alias: None,
                settings: None,
                format_clause: None,
                multi_table_insert_type: None,
                multi_table_into_clauses,
                optimizer_hints,
                ..
            }) if assignments.is_empty()
                && after_columns.is_empty()
                && multi_table_into_clauses.is_empty()
                && optimizer_hints.is_empty() =>
            {
                let values = plain_values(source)?;
                if values.rows.is_empty() || values.rows.len() > MAX_VALUES_ROWS {
                    return None;
                }
                let columns = columns
                    .iter()
                    .map(column_name)
                    .collect::<Option<Vec<_>>>()?;
                if !distinct(&columns) {
                    return None;
                }
                // `DEFAULT` in a row parses as an identifier: the general
                // path answers it.
                let rows = values
                    .rows
                    .iter()
                    .map(|r| {
                        (!r.content.iter().any(|e| {
                            matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                        }))
                        .then(|| r.content.clone())
                    })
                    .collect::<Option<Vec<_>>>()?;
                let table = super::point::plain_table_name(name)?;
                Some(FastDml {
                    qualifier: table.clone(),
                    table,
                    op: Op::Insert { columns, rows },
                })
            }
            _ => None,
        }
    }

    /// An UPDATE's or DELETE's assignments and filters as DataFusion's
    /// planner gives them to a table provider (unqualified columns, typed,
    /// simplified). An error means the general path should plan it.
    fn plan_write(
        &self,
        state: &SessionState,
        schema: &SchemaRef,
        params: Option<&ParamValues>,
        now: DateTime<Utc>,
    ) -> Result<(Assignments, Vec<DfExpr>)> {
        let df_schema = Arc::new(DFSchema::try_from_qualified_schema(
            self.qualifier.as_str(),
            schema,
        )?);
        let to_logical = |e: &Expr| {
            state.create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: e.clone(),
                    alias: None,
                },
                &df_schema,
            )
        };
        let (set, selection) = match &self.op {
            Op::Update { set, selection } => (set.as_slice(), selection),
            Op::Delete { selection } => (&[][..], selection),
            Op::Insert { .. } => {
                return Err(datafusion::common::DataFusionError::Internal(
                    "not an UPDATE or DELETE".into(),
                ))
            }
        };
        let mut plan = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: df_schema.clone(),
        });
        if let Some(w) = selection {
            plan = LogicalPlan::Filter(Filter::try_new(to_logical(w)?, Arc::new(plan))?);
        }
        let mut exprs = Vec::with_capacity(set.len() + 1);
        for (name, e) in set {
            let ty = schema.field_with_name(name)?.data_type().clone();
            exprs.push(to_logical(e)?.cast_to(&ty, &df_schema)?.alias(name.clone()));
        }
        // A projection keeps the filter's input alive for the analyzer.
        exprs.push(DfExpr::Literal(ScalarValue::Boolean(Some(true)), None).alias("__keep"));
        plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?);
        let plan = analyse(state, plan, params)?;
        let simplifier = simplifier(state, df_schema.clone(), now);
        let mut assignments = Vec::with_capacity(set.len());
        let mut filters = Vec::new();
        if let LogicalPlan::Projection(p) = &plan {
            for ((name, _), e) in set.iter().zip(&p.expr) {
                let e = match e {
                    DfExpr::Alias(a) => a.expr.as_ref().clone(),
                    other => other.clone(),
                };
                assignments.push((name.clone(), unqualified(simplifier.simplify(e)?)?));
            }
            if let LogicalPlan::Filter(f) = p.input.as_ref() {
                for c in split_conjunction(&f.predicate) {
                    filters.push(unqualified(simplifier.simplify(c.clone())?)?);
                }
            }
        }
        if assignments.len() != set.len() || (selection.is_some() && filters.is_empty()) {
            return Err(datafusion::common::DataFusionError::Internal(
                "the analyzer changed the plan's shape".into(),
            ));
        }
        Ok((assignments, filters))
    }

    /// An INSERT's VALUES as one batch of the table's columns (a column not
    /// listed takes its DEFAULT or NULL). An error means the general path
    /// should plan it.
    fn values_batch(
        &self,
        state: &SessionState,
        provider: &dyn TableProvider,
        params: Option<&ParamValues>,
        now: DateTime<Utc>,
    ) -> Result<RecordBatch> {
        let Op::Insert { columns, rows } = &self.op else {
            return Err(datafusion::common::DataFusionError::Internal(
                "not an INSERT".into(),
            ));
        };
        let schema = provider.schema();
        let targets: Vec<usize> = if columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            columns
                .iter()
                .map(|c| schema.index_of(c))
                .collect::<std::result::Result<_, _>>()?
        };
        let empty = Arc::new(DFSchema::empty());
        let width = schema.fields().len();
        let mut exprs = Vec::with_capacity(width * rows.len());
        for (r, row) in rows.iter().enumerate() {
            if row.len() != targets.len() {
                return Err(datafusion::common::DataFusionError::Plan(
                    "VALUES row width".into(),
                ));
            }
            for (c, field) in schema.fields().iter().enumerate() {
                let logical = match targets.iter().position(|&t| t == c) {
                    Some(i) => state.create_logical_expr_from_sql_expr(
                        ExprWithAlias {
                            expr: row[i].clone(),
                            alias: None,
                        },
                        &empty,
                    )?,
                    None => provider
                        .get_column_default(field.name())
                        .cloned()
                        .unwrap_or(DfExpr::Literal(ScalarValue::Null, None)),
                };
                // A string into bytea is bytea input text, which the
                // provider reads (as it does on the general path).
                let typed = if *field.data_type() == DataType::Binary
                    && logical.get_type(&empty)? == DataType::Utf8
                {
                    logical
                } else {
                    logical.cast_to(field.data_type(), &empty)?
                };
                exprs.push(typed.alias(format!("r{r}c{c}")));
            }
        }
        let input = Arc::new(LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: true,
            schema: empty.clone(),
        }));
        let plan = LogicalPlan::Projection(Projection::try_new(exprs, input)?);
        let LogicalPlan::Projection(p) = analyse(state, plan, params)? else {
            return Err(datafusion::common::DataFusionError::Internal(
                "the analyzer changed the plan's shape".into(),
            ));
        };
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        let simplifier = simplifier(state, empty.clone(), now);
        let mut cells: Vec<ArrayRef> = Vec::with_capacity(p.expr.len());
        for e in p.expr {
            let e = match e {
                DfExpr::Alias(a) => *a.expr,
                other => other,
            };
            let phys = state.create_physical_expr(simplifier.simplify(e)?, &empty)?;
            cells.push(phys.evaluate(&one_row)?.into_array(1)?);
        }
        let mut cols = Vec::with_capacity(width);
        let mut fields = Vec::with_capacity(width);
        for (c, field) in schema.fields().iter().enumerate() {
            let parts: Vec<&dyn Array> = cells
                .iter()
                .skip(c)
                .step_by(width)
                .map(|a| a.as_ref())
                .collect();
            let col = concat(&parts)?;
            fields.push(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(col.data_type().clone())
                    .with_nullable(true),
            );
            cols.push(col);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    }
}

/// Binds parameters, types integer literals as PostgreSQL does and runs the
/// session's analyzer.
fn analyse(
    state: &SessionState,
    mut plan: LogicalPlan,
    params: Option<&ParamValues>,
) -> Result<LogicalPlan> {
    if let Some(p) = params {
        plan = plan.replace_params_with_values(p)?;
    }
    let plan = super::int_literals::int4_literals(plan)?;
    state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
}

/// Simplifies with `now()` as the statement's start.
fn simplifier(state: &SessionState, schema: Arc<DFSchema>, now: DateTime<Utc>) -> ExprSimplifier {
    let ctx = SimplifyContext::builder()
        .with_schema(schema)
        .with_config_options(Arc::clone(state.config_options()))
        .with_query_execution_start_time(Some(now));
    ExprSimplifier::new(ctx.build())
}

/// `e` with its columns unqualified, as table providers take them.
pub(crate) fn unqualified(e: DfExpr) -> Result<DfExpr> {
    e.transform(|e| match e {
        DfExpr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(DfExpr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

impl Session {
    /// Runs `stmt` through the DML fast path (see the module docs), or
    /// `None` when the general path must run it.
    pub(super) async fn run_fast_dml(
        &self,
        stmt: &Statement,
        params: Option<&ParamValues>,
    ) -> Result<Option<Outcome>, SqlError> {
        let Some(dml) = FastDml::recognize(stmt) else {
            return Ok(None);
        };
        if self.db.schema.is_external(&dml.table) {
            return Ok(None);
        }
        let Ok(Some(provider)) = self.db.schema.table(&dml.table).await else {
            return Ok(None);
        };
        if provider.table_type() != TableType::Base {
            return Ok(None);
        }
        let (state, task) = self.fast_state.get(&self.ctx);
        let state = state.as_ref();
        let now = Utc::now();
        let schema = provider.schema();
        let (tag, exec) = match &dml.op {
            Op::Insert { .. } => {
                let Ok(batch) = dml.values_batch(state, provider.as_ref(), params, now) else {
                    return Ok(None);
                };
                let input =
                    MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], batch.schema(), None)?;
                let exec = provider.insert_into(state, input, InsertOp::Append).await?;
                ("INSERT 0", exec)
            }
            Op::Update { .. } => {
                let Ok((assignments, filters)) = dml.plan_write(state, &schema, params, now) else {
                    return Ok(None);
                };
                (
                    "UPDATE",
                    provider.update(state, assignments, filters).await?,
                )
            }
            Op::Delete { .. } => {
                let Ok((_, filters)) = dml.plan_write(state, &schema, params, now) else {
                    return Ok(None);
                };
                ("DELETE", provider.delete_from(state, filters).await?)
            }
        };
        let batches = collect(exec, task).await?;
        let n = super::session::count_of(&batches);
        Ok(Some(Outcome::Command(format!("{tag} {n}"))))
    }
}
