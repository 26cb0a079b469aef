//! The Quiver node: one process that can act as a standalone database, a
//! coordinator or a worker.
//!
//! Layers, from the wire inwards:
//! - [`frontend`]: the PostgreSQL wire protocol (pgwire), COPY, auth, TLS.
//! - [`sql`]: statement handling on top of DataFusion: DDL, DML, transactions,
//!   the `TableProvider` that exposes stored tables.
//! - [`storage`]: the durable engine: WAL, memory-resident segments, Parquet
//!   parts and manifests.
//! - [`server`]: configuration, the HTTP endpoints, metrics and process
//!   lifecycle.
//! - [`meta`]: the cluster metadata (nodes, tables, shards, placements, 2PC
//!   decisions) as an openraft state machine with its durable log.
//! - [`failpoint`]: faults a test can switch on at named steps.

pub mod dist;
pub mod failpoint;
pub mod frontend;
pub mod meta;
pub mod server;
pub mod sql;
pub mod storage;
