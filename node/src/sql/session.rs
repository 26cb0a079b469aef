//! One client session: statement dispatch and transaction control.
//!
//! Every statement runs against a fresh snapshot. Outside a transaction
//! block a statement's writes commit when it succeeds and vanish when it
//! fails. Inside `BEGIN ... COMMIT` writes stay pending until COMMIT; a
//! failed statement aborts the block (SQLSTATE 25P02 until ROLLBACK), as in
//! PostgreSQL. SAVEPOINT, ROLLBACK TO and RELEASE keep copies of the pending
//! writes (cheap: batches are shared). DDL commits on its own, also inside a
//! block.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};

use super::ddl;
use super::error::SqlError;
use super::idents;
use super::isolation;
use super::point::PointQuery;
use super::settings::Settings;
use super::txn::{Pending, TxnContext};
use super::Database;
use crate::storage::table::{ColumnMeta, TableMeta};

/// Where the session is with respect to a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    Idle,
    InBlock,
    Failed,
}

/// A `COPY ... FROM STDIN` in progress.
#[derive(Debug, Clone)]
pub struct CopyIn {
    pub table: Arc<TableMeta>,
    /// Table column positions, in the order the data has them.
    pub columns: Vec<usize>,
    /// Schema of the incoming data (those columns).
    pub schema: SchemaRef,
    pub options: Vec<(String, Option<String>)>,
    /// The data has every column in table order and goes to this node's
    /// storage: large chunks may be logged ahead of the commit (see
    /// [`Session::copy_chunk`]).
    pub stageable: bool,
}

/// What a statement produced.
pub enum Outcome {
    /// Rows to stream to the client, with PostgreSQL's column names when
    /// they differ from DataFusion's.
    Rows {
        df: DataFrame,
        names: Option<Vec<String>>,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command(String),
    Begin,
    Commit,
    Rollback,
    CopyIn(CopyIn),
    /// Rows already computed (the point-query fast path).
    Batches {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    CopyOut {
        df: DataFrame,
        options: Vec<(String, Option<String>)>,
    },
    /// `SHOW name` result.
    Show {
        name: String,
        value: String,
    },
}

/// One client's session.
pub struct Session {
    pub(super) db: Arc<Database>,
    pub ctx: SessionContext,
    pub(super) txn: Arc<TxnContext>,
    pub(super) block: BlockState,
    pub settings: Settings,
    /// Open savepoints, oldest first, with the pending writes at each.
    savepoints: Vec<(String, Pending, u64)>,
    /// The open block's isolation level (see [`super::isolation`]).
    isolation: &'static str,
    /// The DML fast path's copy of `ctx`'s state.
    pub(super) fast_state: super::fast_dml::FastState,
}

impl Session {
    pub(super) fn new(db: Arc<Database>, ctx: SessionContext, txn: Arc<TxnContext>) -> Self {
        let settings = Settings::default();
        ctx.register_udf(super::settings::current_setting_udf(&settings));
        ctx.register_udf(super::pg_text::timestamp_text_udf().as_ref().clone());
        ctx.register_udf(super::pg_text::float_text_udf().as_ref().clone());
        ctx.add_analyzer_rule(Arc::new(super::pg_text::TimestampTextRule::new(&settings)));
        Session {
            db,
            ctx,
            txn,
            block: BlockState::Idle,
            settings,
            savepoints: Vec::new(),
            isolation: "read committed",
            fast_state: Default::default(),
        }
    }

    /// Marks the last statement failed (its result stream broke after the
    /// response began): an open transaction block is aborted.
    pub fn statement_failed(&mut self) {
        if self.block == BlockState::InBlock {
            self.block = BlockState::Failed;
        }
    }

    pub fn block_state(&self) -> BlockState {
        self.block
    }

    /// `3B001` for an unknown savepoint; the block is aborted, as in
    /// PostgreSQL (or `25P01` outside a block).
    fn savepoint_error(&mut self, name: &str) -> SqlError {
        if self.block == BlockState::Idle {
            return SqlError::new(
                "25P01",
                "ROLLBACK TO SAVEPOINT can only be used in transaction blocks",
            );
        }
        self.block = BlockState::Failed;
        SqlError::new("3B001", format!("savepoint \"{name}\" does not exist"))
    }

    /// Parses SQL text into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, SqlError> {
        let stmts = self
            .db
            .parser
            .parse(sql)
            .map_err(|e| super::error::syntax_error(&e.to_string()))?;
        let mut stmts = self.db.subqueries.restore(sql, stmts);
        let engine = &self.txn.engine;
        for s in stmts.iter_mut() {
            json_casts_to_text(s);
            super::srf::set_returning_functions(s);
            super::literals::interval_literals(s);
            super::literals::to_char_templates(s);
            super::at_time_zone::at_time_zone(s);
            super::literals::bytea_literals(s)?;
            super::literals::insert_literals(s, |name| {
                // The newest catalog, without pinning the statement's
                // snapshot; only INSERTs and UPDATEs ask.
                let snap = engine.snapshot();
                let t = snap.table_by_name(&super::idents::relation(name))?;
                Some(
                    t.meta
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), c.ty.clone()))
                        .collect(),
                )
            })?;
        }
        Ok(stmts)
    }

    /// Plans a statement that DataFusion executes (for the extended protocol
    /// and for our own dispatch). `None` for statements Quiver runs itself.
    pub async fn plan(&self, stmt: &Statement) -> Result<Option<LogicalPlan>, SqlError> {
        if handled_here(stmt) {
            return Ok(None);
        }
        let state = self.ctx.state();
        match state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt.clone())))
            .await
        {
            Ok(plan) => Ok(Some(super::int_literals::int4_literals(plan)?)),
            Err(e)
                if e.to_string()
                    .contains("Projections require unique expression names") =>
            {
                // PostgreSQL allows duplicate result names; DataFusion does
                // not. Alias every unnamed item (the client still sees
                // PostgreSQL's names, see `names`).
                let mut aliased = stmt.clone();
                alias_select_items(&mut aliased);
                let plan = state
                    .statement_to_plan(DfStatement::Statement(Box::new(aliased)))
                    .await?;
                Ok(Some(super::int_literals::int4_literals(plan)?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the open block repeatable read at `version` (a worker's share
    /// of a coordinator's repeatable-read block), unless it already is.
    pub fn repeatable_at(&self, version: Arc<crate::storage::DbVersion>) {
        if !self.txn.snapshot_fixed() {
            self.txn.fix_snapshot(true);
            self.txn.preset_snapshot(Some(version));
        }
    }

    /// Makes the next statement read `version` instead of the newest one
    /// (`None` forgets such a request).
    pub fn read_at(&self, version: Option<Arc<crate::storage::DbVersion>>) {
        self.txn.preset_snapshot(version);
    }

    /// Runs one statement, with transaction semantics. `plan` and `params`
    /// come from the extended protocol. When no transaction is open after
    /// it, its row locks are released.
    pub async fn execute(
        &mut self,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
    ) -> Result<Outcome, SqlError> {
        let out = self.execute_in_txn(stmt, plan, params).await;
        if self.block == BlockState::Idle {
            self.txn.end_locks(false);
        }
        out
    }

    /// Bounds this session's lock waits (a worker's, see
    /// [`crate::dist::worker_txn`]).
    pub fn set_lock_wait_limit(&self, limit: Option<std::time::Duration>) {
        *self.txn.lock_wait_limit.lock() = limit;
    }

    /// This session's transaction as an owner of row locks.
    pub fn lock_owner(&self) -> u64 {
        self.txn.lock_owner()
    }

    /// Ends this session's hold on its row locks (see
    /// [`TxnContext::end_locks`]).
    pub fn end_locks(&self, keep: bool) -> u64 {
        self.txn.end_locks(keep)
    }

    async fn execute_in_txn(
        &mut self,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
    ) -> Result<Outcome, SqlError> {
        match stmt {
            Statement::StartTransaction { modes, .. } => {
                if self.block == BlockState::Idle {
                    self.block = BlockState::InBlock;
                    self.txn.take_pending();
                    let default = self
                        .settings
                        .get("default_transaction_isolation")
                        .and_then(|v| isolation::requested_by_name(&v));
                    self.isolation = isolation::requested(modes)
                        .or(default)
                        .unwrap_or("read committed");
                    // Repeatable read: one snapshot for the whole block.
                    self.txn
                        .fix_snapshot(isolation::one_snapshot(self.isolation));
                }
                return Ok(Outcome::Begin);
            }
            Statement::Set(datafusion::sql::sqlparser::ast::Set::SetTransaction {
                modes,
                session: false,
                ..
            }) => {
                // Outside a block PostgreSQL warns and does nothing.
                if let (Some(level), true) = (
                    isolation::requested(modes),
                    self.block == BlockState::InBlock,
                ) {
                    if self.txn.has_snapshot() {
                        return Err(isolation::too_late());
                    }
                    self.isolation = level;
                    self.txn.fix_snapshot(isolation::one_snapshot(level));
                }
                return Ok(Outcome::Command("SET".into()));
            }
            Statement::ShowVariable { variable }
                if self.block != BlockState::Idle
                    && variable.len() == 1
                    && variable[0]
                        .value
                        .eq_ignore_ascii_case("transaction_isolation") =>
            {
                return Ok(Outcome::Show {
                    name: "transaction_isolation".into(),
                    value: self.isolation.into(),
                });
            }
            Statement::Commit { .. } => {
                let failed = self.block == BlockState::Failed;
                self.block = BlockState::Idle;
                self.savepoints.clear();
                self.txn.fix_snapshot(false);
                if failed {
                    self.txn.take_pending();
                    self.abort_dist().await;
                    return Ok(Outcome::Rollback);
                }
                self.commit_pending().await?;
                return Ok(Outcome::Commit);
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let name = idents::fold(name);
                let Some(pos) = self.savepoints.iter().rposition(|(n, _, _)| *n == name) else {
                    return Err(self.savepoint_error(&name));
                };
                if self.txn.dist_writes() != self.savepoints[pos].2 {
                    self.block = BlockState::Failed;
                    return Err(SqlError::unsupported(
                        "ROLLBACK TO SAVEPOINT after writes to distributed tables is not supported yet",
                    ));
                }
                // Later savepoints go; this one stays, as in PostgreSQL.
                self.savepoints.truncate(pos + 1);
                self.txn.set_pending(self.savepoints[pos].1.clone());
                self.block = BlockState::InBlock;
                return Ok(Outcome::Command("ROLLBACK".into()));
            }
            Statement::Rollback { .. } => {
                self.block = BlockState::Idle;
                self.savepoints.clear();
                self.txn.fix_snapshot(false);
                self.txn.take_pending();
                self.abort_dist().await;
                return Ok(Outcome::Rollback);
            }
            Statement::Savepoint { name } if self.block != BlockState::Failed => {
                if self.block == BlockState::Idle {
                    return Err(SqlError::new(
                        "25P01",
                        "SAVEPOINT can only be used in transaction blocks",
                    ));
                }
                self.savepoints.push((
                    idents::fold(name),
                    self.txn.pending(),
                    self.txn.dist_writes(),
                ));
                return Ok(Outcome::Command("SAVEPOINT".into()));
            }
            Statement::ReleaseSavepoint { name } if self.block != BlockState::Failed => {
                let name = idents::fold(name);
                if self.block == BlockState::Idle {
                    return Err(SqlError::new(
                        "25P01",
                        "RELEASE SAVEPOINT can only be used in transaction blocks",
                    ));
                }
                let Some(pos) = self.savepoints.iter().rposition(|(n, _, _)| *n == name) else {
                    return Err(self.savepoint_error(&name));
                };
                self.savepoints.truncate(pos);
                return Ok(Outcome::Command("RELEASE".into()));
            }
            _ => {}
        }
        if self.block == BlockState::Failed {
            return Err(SqlError::aborted());
        }
        self.txn.begin_statement();
        let saved = self.txn.pending();
        let explain_only = matches!(stmt, Statement::Explain { analyze: false, .. });
        let result = self.write_locked(stmt, plan, params, &saved).await;
        match result {
            Err(e) => {
                if self.block == BlockState::InBlock {
                    self.block = BlockState::Failed;
                } else {
                    self.txn.take_pending();
                    self.abort_dist().await;
                }
                Err(e)
            }
            Ok(out) => {
                if explain_only {
                    self.txn.set_pending(saved);
                }
                if self.block == BlockState::Idle && !matches!(out, Outcome::CopyIn(_)) {
                    self.commit_pending().await?;
                }
                Ok(out)
            }
        }
    }

    pub(super) async fn commit_pending(&mut self) -> Result<(), SqlError> {
        if let Some(d) = self.txn.take_dist() {
            if let Some(c) = &self.db.cluster {
                if let Err(e) = c.commit(d).await {
                    self.txn.take_pending();
                    return Err(e);
                }
            }
        }
        let pending = self.txn.take_pending();
        if pending.is_empty() {
            return Ok(());
        }
        let rows: usize = pending
            .tables
            .values()
            .flat_map(|t| t.inserts.iter())
            .map(|b| b.num_rows())
            .sum();
        self.db.engine.commit(pending.to_write_set()).await?;
        self.db.note_rows_written(rows as u64);
        Ok(())
    }

    /// Recognises a point query on a unique key (see [`PointQuery`]).
    pub fn point_query(&self, stmt: &Statement) -> Option<PointQuery> {
        PointQuery::recognize(stmt, &self.db.engine.snapshot())
    }

    /// Answers a point query from the unique-key index (and the
    /// transaction's own pending rows), or `None` when the general path must
    /// run it (see [`super::point::KeyLookup::rows`]).
    async fn run_point_query(
        &self,
        stmt: &Statement,
        params: Option<&ParamValues>,
    ) -> Result<Option<Outcome>, SqlError> {
        let snap = self.txn.snapshot();
        let Some(q) = PointQuery::recognize(stmt, &snap) else {
            return Ok(None);
        };
        if let Some(cluster) = &self.db.cluster {
            // A distributed table: one fragment on the shard's worker (the router path).
            if let Some(layout) = cluster.layout(&q.table.name) {
                return crate::dist::router::route_point(cluster, &layout, &q, params, &self.txn)
                    .await;
            }
        }
        let pending = self.txn.pending_table(q.table.id);
        let Some(rows) = q
            .lookup()
            .rows(&self.db.engine, &snap, pending.as_ref(), params)?
        else {
            return Ok(None);
        };
        let batches: Vec<_> = rows.iter().filter_map(|b| q.project(b)).collect();
        Ok(Some(Outcome::Batches {
            schema: q.schema,
            batches,
        }))
    }

    pub(super) async fn dispatch(
        &mut self,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
    ) -> Result<Outcome, SqlError> {
        // A shard move's cut-over holds writes to its tables here, before
        // they are planned against placements about to change.
        let cluster = self.db.cluster.clone();
        let _permit = match &cluster {
            Some(c) if crate::dist::mover::writes_rows(stmt) => Some(
                c.write_permit(&self.txn, || crate::dist::mover::relations(stmt))
                    .await,
            ),
            _ => None,
        };
        if matches!(stmt, Statement::Query(_)) {
            if let Some(out) = self.run_point_query(stmt, params.as_ref()).await? {
                return Ok(out);
            }
            if let Some(call) = crate::dist::ddl::utility_call(stmt) {
                return self.run_utility(&call, params.as_ref()).await;
            }
        }
        if matches!(
            stmt,
            Statement::Update(_) | Statement::Delete(_) | Statement::Insert(_)
        ) {
            if let Some(out) = self.run_fast_dml(stmt, params.as_ref()).await? {
                return Ok(out);
            }
        }
        match stmt {
            Statement::CreateTable(ct) if ct.query.is_none() => {
                let meta = ddl::table_meta(ct)?;
                if self.db.schema.is_external(&meta.name) {
                    return Err(SqlError::new(
                        "42P07",
                        format!("relation \"{}\" already exists", meta.name),
                    ));
                }
                for c in &meta.columns {
                    if let Some(d) = &c.default {
                        self.db.schema.plan_default(&meta, d)?;
                    }
                }
                self.db.engine.create_table(meta, ct.if_not_exists).await?;
                Ok(Outcome::Command("CREATE TABLE".into()))
            }
            Statement::CreateTable(ct) => self.create_table_as(ct).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                if_exists,
                ..
            } => {
                for n in names {
                    let name = idents::relation(n);
                    if name.starts_with("pg_dist_") && self.db.schema.is_external(&name) {
                        return Err(SqlError::new(
                            "42501",
                            format!("permission denied: \"{name}\" is a system catalog"),
                        ));
                    }
                    if self.db.schema.is_external(&name) {
                        self.db.schema.remove_external(&name);
                        continue;
                    }
                    self.drop_distributed(&name).await?;
                    self.db.engine.drop_table(&name, *if_exists).await?;
                }
                Ok(Outcome::Command("DROP TABLE".into()))
            }
            Statement::AlterTable(at) => self.alter_table(at).await,
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.copy(source, *to, target, options, legacy_options)
                    .await
            }
            // psycopg and connection poolers send `DEALLOCATE ALL` to reset
            // a connection. Protocol-level statements are replaced when
            // their name is parsed again and freed with the connection.
            Statement::Deallocate { .. } if is_deallocate_all(stmt) => {
                Ok(Outcome::Command("DEALLOCATE ALL".into()))
            }
            Statement::Set(set) => {
                let tag = self.settings.apply_set(set, &self.ctx)?;
                self.fast_state.forget();
                Ok(Outcome::Command(tag))
            }
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                let (name, value) = self.settings.show(&name)?;
                Ok(Outcome::Show { name, value })
            }
            _ => {
                let plan = match plan {
                    Some(p) => p,
                    None => self
                        .plan(stmt)
                        .await?
                        .ok_or_else(|| SqlError::unsupported("statement not supported"))?,
                };
                let plan = match params {
                    Some(p) => plan.replace_params_with_values(&p)?,
                    None => plan,
                };
                let df = self.ctx.execute_logical_plan(plan).await?;
                let tag = match stmt {
                    Statement::Insert(_) => "INSERT 0",
                    Statement::Update { .. } => "UPDATE",
                    Statement::Delete(_) => "DELETE",
                    Statement::Truncate { .. } => {
                        df.collect().await?;
                        return Ok(Outcome::Command("TRUNCATE TABLE".into()));
                    }
                    Statement::CreateView { .. } => {
                        df.collect().await?;
                        return Ok(Outcome::Command("CREATE VIEW".into()));
                    }
                    Statement::Drop {
                        object_type: ObjectType::View,
                        ..
                    } => {
                        df.collect().await?;
                        return Ok(Outcome::Command("DROP VIEW".into()));
                    }
                    _ => {
                        return Ok(Outcome::Rows {
                            df,
                            names: super::names::result_names(stmt),
                        })
                    }
                };
                let n = count_of(&df.collect().await?);
                Ok(Outcome::Command(format!("{tag} {n}")))
            }
        }
    }

    async fn create_table_as(
        &mut self,
        ct: &datafusion::sql::sqlparser::ast::CreateTable,
    ) -> Result<Outcome, SqlError> {
        let Some(q) = &ct.query else {
            return Err(SqlError::syntax("CREATE TABLE AS needs a query"));
        };
        let name = idents::relation(&ct.name);
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
                q.clone(),
            ))))
            .await?;
        let plan = super::int_literals::int4_literals(plan)?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                Ok(ColumnMeta {
                    name: f.name().clone(),
                    ty: ddl::from_arrow(f.data_type())?,
                    nullable: true,
                    default: None,
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        let meta = TableMeta {
            id: 0,
            name: name.clone(),
            columns,
            primary_key: None,
            uniques: vec![],
        };
        if !self.db.engine.create_table(meta, ct.if_not_exists).await? {
            return Ok(Outcome::Command("SELECT 0".into()));
        }
        let snap = self.db.engine.snapshot();
        let t = snap
            .table_by_name(&name)
            .cloned()
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" vanished")))?;
        let target = t.meta.schema();
        let mut rows = 0;
        let mut conformed = Vec::new();
        for b in batches {
            rows += b.num_rows();
            let cols = b
                .columns()
                .iter()
                .zip(target.fields())
                .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError::new("22P02", e.to_string()))?;
            conformed.push(
                RecordBatch::try_new(target.clone(), cols)
                    .map_err(|e| SqlError::new("XX000", e.to_string()))?,
            );
        }
        self.txn.add_inserts(&t, conformed)?;
        Ok(Outcome::Command(format!("SELECT {rows}")))
    }
}

/// `x::json` / `x::jsonb` become `x::text`: JSON values are stored and
/// returned as text (the column keeps its json type for clients).
fn json_casts_to_text(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, DataType, Expr};
    let _ = visit_expressions_mut(stmt, |e: &mut Expr| {
        if let Expr::Cast { data_type, .. } = e {
            if matches!(data_type, DataType::JSON | DataType::JSONB) {
                *data_type = DataType::Text;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Gives every unnamed item of the top-level select list a unique alias.
fn alias_select_items(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{Ident, Query, SelectItem, SetExpr};
    /// Aliases every unnamed item of the selects of `body` (through set
    /// operations).
    fn alias_body(body: &mut SetExpr) {
        match body {
            SetExpr::Select(sel) => {
                for (i, item) in sel.projection.iter_mut().enumerate() {
                    if let SelectItem::UnnamedExpr(e) = item {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::new(format!("?column?{}", i + 1)),
                        };
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                alias_body(left);
                alias_body(right);
            }
            SetExpr::Query(q) => alias_body(&mut q.body),
            _ => {}
        }
    }
    fn alias_query(query: &mut Query) {
        // A CTE with a column list (`WITH r(n, m) AS (SELECT 1, 1::bigint
        // ...)`) names its columns itself.
        if let Some(with) = query.with.as_mut() {
            for cte in with.cte_tables.iter_mut() {
                if !cte.alias.columns.is_empty() {
                    alias_body(&mut cte.query.body);
                }
            }
        }
        if let SetExpr::Select(_) = query.body.as_ref() {
            alias_body(&mut query.body);
        }
    }
    match stmt {
        Statement::Query(q) => alias_query(q),
        // INSERT ... SELECT a, a: the names do not matter there.
        Statement::Insert(ins) => {
            if let Some(q) = ins.source.as_mut() {
                alias_query(q);
            }
        }
        _ => {}
    }
}

/// Statements Quiver executes itself rather than through DataFusion.
fn handled_here(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::CreateTable(_)
            | Statement::Drop {
                object_type: ObjectType::Table,
                ..
            }
            | Statement::AlterTable(_)
            | Statement::Copy { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
    ) || is_deallocate_all(stmt)
        || crate::dist::ddl::utility_call(stmt).is_some()
}

/// `DEALLOCATE [PREPARE] ALL`.
fn is_deallocate_all(stmt: &Statement) -> bool {
    matches!(stmt, Statement::Deallocate { name, .. }
        if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all"))
}

/// Reads the `count` of a DML result.
pub(super) fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .first()
        .and_then(|b| b.column_by_name("count"))
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
}
