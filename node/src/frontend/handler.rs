//! The pgwire handlers of one connection: simple and extended query
//! protocol and COPY, all on top of one [`Session`].
//!
//! Each connection gets its own handler objects (pgwire asks the factory for
//! them per socket), so per-connection state lives here without a lookup.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::extendedquery::{Flush, Sync as PgSync};
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Mutex;

use super::copy_in::CopyState;
use super::results::{
    copy_out, outcome_to_response, result_fields, send_copy_out, show_fields, CopyOut,
};
use crate::server::metrics::{Metrics, QueryKind};
use crate::server::shutdown::InFlight;
use crate::sql::pg_text::session_time_zone;
use crate::sql::{Outcome, Session, SqlError};

/// Turns a [`SqlError`] into a PostgreSQL `ErrorResponse`.
pub fn pg_error(e: SqlError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), e.sqlstate.into(), e.message);
    info.detail = e.detail;
    info.where_context = e.context;
    PgWireError::UserError(Box::new(info))
}

/// A statement prepared by the extended protocol.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub stmt: Statement,
    /// PostgreSQL's result column names, when they differ from DataFusion's.
    pub names: Option<Vec<String>>,
    pub plan: Option<LogicalPlan>,
    pub param_types: Vec<Option<DataType>>,
    /// The result schema of a point query, which is not planned at Parse
    /// (see [`crate::sql::point`]).
    pub point_schema: Option<datafusion::arrow::datatypes::SchemaRef>,
}

/// What one statement answers: a pgwire response, or `COPY ... TO STDOUT`
/// rows, which the handler sends itself ([`send_copy_out`]).
pub enum Reply {
    Response(Response),
    CopyOut(CopyOut),
}

/// Per-connection state shared by the handlers.
pub struct Conn {
    pub(super) session: Mutex<Session>,
    pub(super) copy: Mutex<Option<CopyState>>,
    pub(super) metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    /// Set when a result stream failed after its response started.
    stream_failed: Arc<std::sync::atomic::AtomicBool>,
    /// Holds extended-protocol output until Sync or Flush.
    pub(super) cork: super::batching::Cork,
}

impl Conn {
    pub fn new(
        session: Session,
        metrics: Arc<Metrics>,
        in_flight: Arc<InFlight>,
        cork: super::batching::Cork,
    ) -> Arc<Self> {
        Arc::new(Conn {
            session: Mutex::new(session),
            copy: Mutex::new(None),
            metrics,
            in_flight,
            stream_failed: Arc::default(),
            cork,
        })
    }

    /// Runs one statement and converts the outcome to a pgwire response.
    async fn run<C>(
        &self,
        client: &C,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
        described: Option<&datafusion::arrow::datatypes::SchemaRef>,
    ) -> Result<Reply, SqlError>
    where
        C: ClientInfo,
    {
        let Some(_guard) = self.in_flight.try_enter() else {
            return Err(SqlError::new(
                "57P01",
                "terminating connection due to administrator command",
            ));
        };
        let started = Instant::now();
        let kind = query_kind(stmt);
        // A read planned before a shard move switched and run after it is
        // planned again (a few times; then the client sees 40001).
        let mut attempts = 0;
        let result = loop {
            let result = self
                .run_once(
                    client,
                    stmt,
                    plan.clone(),
                    params.clone(),
                    format,
                    described,
                )
                .await;
            match result {
                Err(e) if crate::dist::read_point::is_stale_plan(&e) && attempts < 5 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempts)).await;
                }
                Err(e) if crate::dist::read_point::is_stale_plan(&e) => {
                    self.stream_failed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    break Err(e);
                }
                other => break other,
            }
        };
        let state = result.as_ref().err().map(|e| e.sqlstate);
        if !matches!(result, Ok(Reply::Response(Response::CopyIn(_)))) {
            self.metrics.observe_query(kind, started.elapsed(), state);
        }
        result
    }

    /// [`Conn::run`] once.
    async fn run_once<C>(
        &self,
        client: &C,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
        described: Option<&datafusion::arrow::datatypes::SchemaRef>,
    ) -> Result<Reply, SqlError>
    where
        C: ClientInfo,
    {
        let (result, time_zone) = {
            let mut session = self.session.lock().await;
            let time_zone = session.settings.get("timezone");
            if self
                .stream_failed
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                session.statement_failed();
            }
            let result = match described {
                // A prepared point query whose table changed shape since
                // Describe: the client expects the old columns.
                Some(d) if session.point_query(stmt).is_some_and(|q| q.schema != *d) => {
                    session.statement_failed();
                    Err(SqlError::new(
                        "0A000",
                        "cached plan must not change result type",
                    ))
                }
                _ => session.execute(stmt, plan, params).await,
            };
            (result, time_zone)
        };
        let result = match result {
            Ok(Outcome::CopyIn(copy)) => self
                .start_copy(copy)
                .map(|c| Reply::Response(Response::CopyIn(c))),
            Ok(Outcome::CopyOut { df, options }) => {
                copy_out(df, &options).await.map(Reply::CopyOut)
            }
            Ok(out) => {
                let tz = time_zone.as_deref().and_then(session_time_zone);
                outcome_to_response(out, client, format, self.stream_failed.clone(), tz)
                    .await
                    .map(Reply::Response)
            }
            Err(e) => Err(e),
        };
        result
    }
}

/// The metrics class of a statement, read from its syntax tree (rendering
/// the statement back to SQL text on every query would cost more).
fn query_kind(stmt: &Statement) -> QueryKind {
    match stmt {
        Statement::Query(_) | Statement::ShowVariable { .. } | Statement::Explain { .. } => {
            QueryKind::Select
        }
        Statement::Insert(_) => QueryKind::Insert,
        Statement::Update { .. } => QueryKind::Update,
        Statement::Delete(_) | Statement::Truncate { .. } => QueryKind::Delete,
        Statement::Copy { .. } => QueryKind::Copy,
        Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::Drop { .. }
        | Statement::AlterTable(_) => QueryKind::Ddl,
        _ => QueryKind::Other,
    }
}

/// The pgwire-facing handler (one per connection).
pub struct Handler {
    pub conn: Arc<Conn>,
    parser: Arc<Parser>,
}

impl Handler {
    pub fn new(conn: Arc<Conn>) -> Self {
        Handler {
            parser: Arc::new(Parser { conn: conn.clone() }),
            conn,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // pgwire writes a simple query's answer with one flush at the end.
        self.conn.cork.release();
        let stmts = {
            let mut session = self.conn.session.lock().await;
            match session.parse(query) {
                Ok(s) => s,
                Err(e) => {
                    session.statement_failed();
                    return Err(pg_error(e));
                }
            }
        };
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            match self
                .conn
                .run(client, stmt, None, None, &Format::UnifiedText, None)
                .await
            {
                Ok(Reply::Response(r)) => {
                    let copy_in = matches!(r, Response::CopyIn(_));
                    out.push(r);
                    if copy_in {
                        break;
                    }
                }
                // Sent here, so its tag counts rows only. pgwire sends the
                // answers of the statements before it after this returns:
                // then the order wins, and pgwire's sender counts a header
                // line in the tag too.
                Ok(Reply::CopyOut(c)) if out.is_empty() => {
                    let tag = send_copy_out(client, c).await?;
                    out.push(Response::Execution(tag));
                }
                Ok(Reply::CopyOut(c)) => out.push(Response::CopyOut(c.response)),
                Err(e) => {
                    let PgWireError::UserError(info) = pg_error(e) else {
                        break;
                    };
                    out.push(Response::Error(info));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Parses and plans statements for the extended protocol.
pub struct Parser {
    conn: Arc<Conn>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut session = self.conn.session.lock().await;
        let r = prepare(&session, sql, types).await;
        if r.is_err() {
            // An error at Parse aborts an open transaction block, as in
            // PostgreSQL.
            session.statement_failed();
            tracing::debug!(state = ?session.block_state(), "parse failed");
        }
        r
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        stmt.param_types
            .iter()
            .map(|t| match t {
                Some(DataType::Decimal256(..)) => Ok(Type::NUMERIC),
                Some(dt) => arrow_pg::datatypes::into_pg_type(dt),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.unwrap_or(&Format::UnifiedText);
        if let Statement::ShowVariable { variable } = &stmt.stmt {
            let name = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            return Ok(show_fields(&crate::sql::settings::show_key(&name), format));
        }
        let opts = Arc::new(pgwire::types::format::FormatOptions::default());
        if let Some(schema) = &stmt.point_schema {
            return result_fields(schema, None, format, opts).map_err(pg_error);
        }
        match &stmt.plan {
            Some(LogicalPlan::Dml(_)) | Some(LogicalPlan::Ddl(_)) | None => Ok(vec![]),
            Some(p) => result_fields(p.schema().as_arrow(), stmt.names.as_deref(), format, opts)
                .map_err(pg_error),
        }
    }
}

/// Parses and plans one statement of a Parse message.
async fn prepare(
    session: &Session,
    sql: &str,
    client_types: &[Option<Type>],
) -> PgWireResult<Option<Prepared>> {
    let mut stmts = session.parse(sql).map_err(pg_error)?;
    if stmts.is_empty() {
        return Ok(None);
    }
    if stmts.len() > 1 {
        return Err(pg_error(SqlError::syntax(
            "cannot insert multiple commands into a prepared statement",
        )));
    }
    let stmt = stmts.remove(0);
    let n = placeholder_count(sql).max(client_types.len());
    if let Some(q) = session.point_query(&stmt) {
        let mut param_types = q.param_types();
        if param_types.len() < n {
            param_types.resize(n, None);
        }
        return Ok(Some(Prepared {
            names: None,
            stmt,
            plan: None,
            param_types,
            point_schema: Some(q.schema),
        }));
    }
    if let Some(call) = crate::dist::ddl::utility_call(&stmt) {
        return Ok(Some(Prepared {
            names: None,
            stmt,
            plan: None,
            param_types: vec![None; n],
            point_schema: Some(crate::dist::ddl::utility_schema(&call)),
        }));
    }
    let plan = session.plan(&stmt).await.map_err(pg_error)?;
    let mut param_types = match &plan {
        Some(p) => ordered_param_types(p).map_err(pg_error)?,
        None => vec![],
    };
    if param_types.len() < n {
        param_types.resize(n, None);
    }
    Ok(Some(Prepared {
        names: crate::sql::names::result_names(&stmt),
        stmt,
        plan,
        param_types,
        point_schema: None,
    }))
}

/// The highest `$n` in the SQL text (outside quotes).
fn placeholder_count(sql: &str) -> usize {
    let b = sql.as_bytes();
    let (mut i, mut max, mut quote) = (0, 0usize, None::<u8>);
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'$' => {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(|d| d.is_ascii_digit())
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    max = max.max(n);
                }
            }
            None => {}
        }
        i += 1;
    }
    max
}

/// Parameter types of a plan in `$1, $2, ...` order.
fn ordered_param_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, SqlError> {
    let types = plan.get_parameter_types()?;
    let mut entries: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(k, v)| {
            k.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, v))
        })
        .collect();
    entries.sort_by_key(|(i, _)| *i);
    let n = entries.last().map(|(i, _)| *i).unwrap_or(0);
    let mut out = vec![None; n];
    for (i, t) in entries {
        if i >= 1 {
            out[i - 1] = t;
        }
    }
    Ok(out)
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// ReadyForQuery, then everything held goes out at once; later output
    /// is held again until the next Sync or Flush.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        let status = client.transaction_status();
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        self.conn.cork.release();
        self.conn.cork.hold();
        Ok(())
    }

    async fn on_flush<C>(&self, client: &mut C, _message: Flush) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.flush().await?;
        if self.conn.cork.is_held() {
            self.conn.cork.release();
            self.conn.cork.hold();
        }
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        if matches!(prepared.stmt, Statement::Copy { .. }) {
            // COPY FROM STDIN waits for the client, which must see CopyInResponse.
            self.conn.cork.release();
        }
        let n = portal.parameters.len();
        let params = if n == 0 {
            None
        } else {
            let types: Vec<Option<&DataType>> = (0..n)
                .map(|i| prepared.param_types.get(i).and_then(|t| t.as_ref()))
                .collect();
            let decoded = super::params::decode(portal, &types);
            match decoded {
                Ok(v) => Some(v),
                Err(e) => {
                    self.conn.session.lock().await.statement_failed();
                    return Err(e);
                }
            }
        };
        match self
            .conn
            .run(
                client,
                &prepared.stmt,
                prepared.plan.clone(),
                params,
                &portal.result_column_format,
                prepared.point_schema.as_ref(),
            )
            .await
            .map_err(pg_error)?
        {
            Reply::Response(r) => Ok(r),
            Reply::CopyOut(c) => Ok(Response::Execution(send_copy_out(client, c).await?)),
        }
    }
}
