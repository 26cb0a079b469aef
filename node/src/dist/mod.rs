//! Distributed tables: shards on workers, reached over Arrow Flight.
//!
//! Step in the flow: a coordinator keeps each distributed or reference
//! table's schema as a local "shell" table (so `pg_catalog` and `\d` see it)
//! and its shards, placements and co-location in the Raft catalogue
//! ([`crate::meta`]). Each shard is an ordinary table named
//! `<table>_<shardid>` in the storage engine of the worker that holds it.
//!
//! - [`hash`]: the row hash of a distribution column value (an `i32`, see
//!   [`crate::meta::placement`] for how it maps to shards).
//! - [`wire`]: what travels in Flight tickets, descriptors and actions, and
//!   how a [`SqlError`] crosses the wire with its SQLSTATE.
//! - [`worker_txn`] and [`worker`]: the worker's Flight service and its
//!   transactions (open, prepared on disk, committed), keyed by global id.
//! - [`client`]: the coordinator's bounded, reused connections per worker;
//!   [`gate`]: the streams one query runs per worker (with slow start).
//! - [`coord`]: `create_distributed_table`, `create_reference_table`, DDL
//!   fan-out and the two-phase commit with decisions recorded in Raft.
//! - [`table`] and [`scan`]: the `TableProvider` of a distributed table on
//!   the coordinator, with shard pruning and per-shard SQL fragments.
//! - [`shuffle`] and [`worker_shuffle`]: joins of tables that are not
//!   co-located, repartitioned between the workers.
//! - [`deadlock`]: the coordinator's waits-for graph over every worker,
//!   which breaks deadlocks between workers with 40P01.
//! - [`read_point`]: the snapshot pinned on the workers for a read across
//!   shards, and the gate that keeps it from meeting half a commit.
//! - [`range`]: range-distributed (time-series) tables: shards created as
//!   rows arrive, pruning on comparisons, retention.
//! - [`catalog`]: `pg_dist_partition`, `pg_dist_shard`, `pg_dist_placement`
//!   and `pg_dist_colocation` (and `pg_dist_node`) as SQL tables.

pub mod catalog;
pub mod client;
pub mod coord;
pub mod ddl;
pub mod deadlock;
pub mod gate;
pub mod hash;
pub mod mover;
pub mod prepared_log;
pub mod pushdown;
pub mod range;
pub mod read_point;
pub mod rebalancer;
pub mod route;
pub mod router;
pub mod scan;
pub mod shuffle;
pub mod table;
pub mod unparse;
pub mod wire;
pub mod worker;
pub mod worker_move;
pub mod worker_shuffle;
pub mod worker_txn;

pub use coord::Cluster;

use crate::meta::state::ShardId;

/// Name of a shard's table on the worker that holds it.
pub fn shard_table_name(table: &str, shard_id: ShardId) -> String {
    format!("{table}_{shard_id}")
}
