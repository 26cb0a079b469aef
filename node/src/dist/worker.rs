//! The worker's Arrow Flight service on the gRPC port.
//!
//! Step in the flow: the coordinator's [`super::client`] calls
//! - `do_get` with a [`QueryTicket`]: the SQL fragment runs in the worker's
//!   own DataFusion session over its shard tables and the result streams
//!   back batch by batch (inside transaction `gid` when it has one open
//!   here, so a statement sees its own writes);
//! - `do_put` with a [`PutCommand`] descriptor: the rows are staged in
//!   open transaction `gid` ([`super::worker_txn`]);
//! - `do_action` with an [`Action`]: shard DDL, statements in a
//!   transaction, prepare / commit / abort, the list of transactions, and
//!   shuffle map tasks ([`super::worker_shuffle`]);
//! - `do_put` of a shuffle bucket: kept as an intermediate result.
//!
//! Errors go back as [`super::wire::status_of`], keeping their SQLSTATE.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action as FlightAction, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, Result as FlightResult, SchemaResult,
    Ticket,
};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::client::{PoolSettings, WorkerClients};
use super::read_point::Pins;
use super::wire::{status_of, Action, ActionReply, MoveTicket, PutCommand, QueryTicket};
use super::worker_move::{encode_changes, MoveSource};
use super::worker_shuffle::{send_buckets, Intermediates};
use super::worker_txn::WorkerTxns;
use crate::sql::{Database, Outcome, SqlError};

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Largest Flight message a worker accepts or sends (row batches).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The Flight service of a worker.
pub struct WorkerFlight {
    db: Arc<Database>,
    txns: Arc<WorkerTxns>,
    /// Idle sessions for fragments outside a transaction (making one per
    /// fragment would cost more than a point query).
    idle: parking_lot::Mutex<Vec<crate::sql::Session>>,
    /// Shuffle buckets sent here, readable by name.
    intermediates: Arc<Intermediates>,
    /// Connections to other workers (shuffle map tasks send buckets).
    peers: Arc<WorkerClients>,
    /// Snapshots pinned for reads across shards.
    pins: Pins,
    /// What this worker shipped as the source of shard moves.
    moves: Arc<MoveSource>,
}

/// Idle sessions kept for reuse.
const MAX_IDLE_SESSIONS: usize = 64;

fn bad_request(m: impl std::fmt::Display) -> Status {
    Status::invalid_argument(m.to_string())
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => Status::internal(other.to_string()),
    }
}

impl WorkerFlight {
    pub fn new(db: Arc<Database>, txns: Arc<WorkerTxns>) -> Self {
        WorkerFlight {
            intermediates: Arc::new(Intermediates::new(db.clone())),
            peers: WorkerClients::new(PoolSettings::default()),
            db,
            txns,
            idle: parking_lot::Mutex::new(Vec::new()),
            pins: Pins::default(),
            moves: Arc::default(),
        }
    }

    /// The tonic service, with message limits fit for row batches.
    pub fn server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// An idle session, or a new one.
    fn take_session(&self) -> crate::sql::Session {
        self.idle.lock().pop().unwrap_or_else(|| self.db.session())
    }

    /// Keeps `session` for reuse unless it is in a transaction block.
    fn give_back(&self, session: crate::sql::Session) {
        if session.block_state() == crate::sql::BlockState::Idle {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_SESSIONS {
                idle.push(session);
            }
        }
    }

    /// Runs a fragment: inside transaction `gid` when it is open here (its
    /// rows, collected), else in `session`.
    async fn run_fragment(
        &self,
        session: &mut crate::sql::Session,
        ticket: &QueryTicket,
    ) -> Result<Ran, SqlError> {
        let mut stmts = session.parse(&ticket.sql)?;
        let [stmt] = stmts.as_mut_slice() else {
            return Err(SqlError::syntax("a fragment must be exactly one query"));
        };
        super::wire::map_tables(stmt, &ticket.tables);
        let version = match &ticket.snapshot {
            Some(id) => Some(self.pins.get(id)?),
            None => None,
        };
        if let Some(gid) = &ticket.gid {
            if let Some(rows) = self.txns.query(gid, stmt, version.clone()).await {
                return rows.map(Ran::InTxn);
            }
        }
        session.read_at(version);
        let out = session.execute(stmt, None, None).await;
        session.read_at(None);
        match out? {
            out @ (Outcome::Rows { .. } | Outcome::Batches { .. }) => Ok(Ran::Out(out)),
            _ => Err(SqlError::syntax("a fragment must be a query")),
        }
    }

    async fn query(&self, ticket: QueryTicket) -> Result<BoxedStream<FlightData>, SqlError> {
        let mut session = self.take_session();
        let out = match self.run_fragment(&mut session, &ticket).await {
            Ok(ran) => encode_ran(ran).await,
            Err(e) => Err(e),
        };
        self.give_back(session);
        out
    }

    /// Runs a fragment to the end; its batches.
    async fn collect(&self, ticket: QueryTicket) -> Result<Vec<RecordBatch>, SqlError> {
        let mut session = self.take_session();
        let out = match self.run_fragment(&mut session, &ticket).await {
            Ok(Ran::InTxn(rows)) => Ok(rows),
            Ok(Ran::Out(Outcome::Rows { df, .. })) => df.collect().await.map_err(SqlError::from),
            Ok(Ran::Out(Outcome::Batches { batches, .. })) => Ok(batches),
            Ok(Ran::Out(_)) => Err(SqlError::syntax("a fragment must be a query")),
            Err(e) => Err(e),
        };
        self.give_back(session);
        out
    }

    async fn action(&self, action: Action) -> Result<ActionReply, SqlError> {
        let mut reply = ActionReply::default();
        match action {
            Action::CreateShard { meta } => {
                self.db.engine.create_table(meta, true).await?;
            }
            Action::DropShards { names } => {
                for n in names {
                    self.db.engine.drop_table(&n, true).await?;
                    self.txns.fences().dropped(&n);
                }
            }
            Action::Exec { gid, sql, snapshot } => {
                let block = snapshot.map(|id| self.pins.get(&id)).transpose()?;
                reply.rows = self.txns.exec(&gid, &sql, block).await?
            }
            Action::Prepare { gid } => self.txns.prepare(&gid).await?,
            Action::Commit { gid } => self.txns.commit(&gid).await?,
            Action::Abort { gid } => self.txns.abort(&gid).await?,
            Action::ListTxns => reply.txns = self.txns.list().await,
            Action::ShuffleMap(task) => {
                let batches = self
                    .collect(QueryTicket {
                        sql: task.sql.clone(),
                        gid: task.gid.clone(),
                        tables: task.tables.clone(),
                        snapshot: task.snapshot.clone(),
                    })
                    .await?;
                reply.rows = send_buckets(&self.peers, &task, batches).await?;
            }
            Action::DropIntermediates { qid } => self.intermediates.drop_query(&qid),
            Action::Pin { id } => self.pins.pin(id, self.db.engine.snapshot()),
            Action::Unpin { id } => self.pins.unpin(&id),
            Action::LockWaits => {
                reply.waits = self
                    .db
                    .engine
                    .locks
                    .labelled_waits(super::deadlock::MIN_WAIT)
            }
            Action::BreakWait { gid } => {
                reply.rows = u64::from(self.db.engine.locks.break_wait(&gid));
            }
            Action::ShardMetas { names } => {
                reply.metas = super::worker_move::shard_metas(&self.db.engine, &names);
            }
            Action::MovePull(p) => {
                (reply.bytes, reply.rows) =
                    super::worker_move::pull(&self.db, &self.peers, &p).await?;
            }
            Action::MoveFence {
                job,
                tables,
                deadline_ms,
            } => {
                self.txns.fences().fence(&job, &tables, deadline_ms);
                if let Err(e) = self.txns.quiesce(&tables, deadline_ms).await {
                    self.txns.fences().unfence(&job);
                    return Err(e);
                }
            }
            Action::MoveUnfence { job } => self.txns.fences().unfence(&job),
            Action::MoveRetire { job } => {
                self.txns.fences().retire(&job);
                self.moves.forget(&job);
            }
        }
        Ok(reply)
    }
}

/// What a fragment gave.
enum Ran {
    /// Rows read inside an open transaction.
    InTxn(Vec<RecordBatch>),
    Out(Outcome),
}

/// A fragment's result as Flight data, streamed when it is a stream.
async fn encode_ran(ran: Ran) -> Result<BoxedStream<FlightData>, SqlError> {
    match ran {
        Ran::InTxn(rows) => Ok(encode(futures::stream::iter(rows.into_iter().map(Ok)))),
        Ran::Out(Outcome::Rows { df, .. }) => {
            let schema = Arc::new(df.schema().as_arrow().clone());
            let stream = df.execute_stream().await?;
            let batches =
                stream.map_err(|e| FlightError::Tonic(Box::new(status_of(&SqlError::from(e)))));
            Ok(Box::pin(
                FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .build(batches)
                    .map_err(flight_status),
            ))
        }
        Ran::Out(Outcome::Batches { schema, batches }) => Ok(Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(futures::stream::iter(batches.into_iter().map(Ok)))
                .map_err(flight_status),
        )),
        Ran::Out(_) => Err(SqlError::syntax("a fragment must be a query")),
    }
}

fn encode(
    batches: impl Stream<Item = Result<datafusion::arrow::array::RecordBatch, FlightError>>
        + Send
        + 'static,
) -> BoxedStream<FlightData> {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(flight_status),
    )
}

fn reply_bytes(reply: &ActionReply) -> Result<Bytes, Status> {
    serde_json::to_vec(reply)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl FlightService for WorkerFlight {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoExchangeStream = BoxedStream<FlightData>;
    type DoActionStream = BoxedStream<FlightResult>;
    type ListActionsStream = BoxedStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "handshake: no authentication on the cluster network yet",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let body = &request.get_ref().ticket;
        if let Ok(t) = serde_json::from_slice::<MoveTicket>(body) {
            // Off the runtime's threads: a whole shard is filtered here, and
            // this worker's other requests must not wait behind it.
            let (moves, engine) = (self.moves.clone(), self.db.engine.clone());
            let (header, changes) = tokio::task::spawn_blocking(move || moves.changes(&engine, &t))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| status_of(&e))?;
            let stream = encode_changes(&header, changes).map_err(|e| status_of(&e))?;
            return Ok(Response::new(Box::pin(stream.map(Ok))));
        }
        let ticket: QueryTicket = serde_json::from_slice(body).map_err(bad_request)?;
        tracing::debug!(sql = %ticket.sql, "fragment");
        let stream = self.query(ticket).await.map_err(|e| status_of(&e))?;
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| bad_request("do_put without messages"))?;
        let cmd: PutCommand = first
            .flight_descriptor
            .as_ref()
            .map(|d| serde_json::from_slice(&d.cmd))
            .transpose()
            .map_err(bad_request)?
            .ok_or_else(|| bad_request("do_put needs a descriptor with a put command"))?;
        let all = futures::stream::once(async move { Ok(first) })
            .chain(input)
            .map_err(|s| FlightError::Tonic(Box::new(s)));
        let mut stream = FlightRecordBatchStream::new_from_flight_data(all);
        let mut batches = Vec::new();
        while let Some(b) = stream.next().await {
            batches.push(b.map_err(flight_status)?);
        }
        let rows = if cmd.intermediate {
            let schema = stream
                .schema()
                .cloned()
                .ok_or_else(|| bad_request("an intermediate result needs a schema"))?;
            let n = batches.iter().map(|b| b.num_rows() as u64).sum();
            self.intermediates
                .add(&cmd.table, schema, batches)
                .map_err(|e| status_of(&e))?;
            n
        } else {
            self.txns
                .put(&cmd.gid, &cmd.table, &batches)
                .await
                .map_err(|e| status_of(&e))?
        };
        let body = reply_bytes(&ActionReply {
            rows,
            ..Default::default()
        })?;
        let out = futures::stream::once(async move { Ok(PutResult { app_metadata: body }) });
        Ok(Response::new(Box::pin(out)))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }

    async fn do_action(
        &self,
        request: Request<FlightAction>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action: Action =
            serde_json::from_slice(&request.get_ref().body).map_err(bad_request)?;
        if action.kind() != request.get_ref().r#type {
            return Err(bad_request(format!(
                "action type {} does not match its body ({})",
                request.get_ref().r#type,
                action.kind()
            )));
        }
        let reply = self.action(action).await.map_err(|e| status_of(&e))?;
        let body = reply_bytes(&reply)?;
        let out = futures::stream::once(async move { Ok(FlightResult { body }) });
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let kinds = [
            "create_shard",
            "drop_shards",
            "exec",
            "prepare",
            "commit",
            "abort",
            "list_txns",
            "shuffle_map",
            "drop_intermediates",
            "pin",
            "unpin",
            "lock_waits",
            "break_wait",
            "shard_metas",
            "move_pull",
            "move_fence",
            "move_unfence",
            "move_retire",
        ];
        let out = futures::stream::iter(kinds.map(|k| {
            Ok(ActionType {
                r#type: k.into(),
                description: String::new(),
            })
        }));
        Ok(Response::new(Box::pin(out)))
    }
}
