//! The durable storage engine of a node (and, later, of each shard).
//!
//! Write path: a transaction's changes are encoded ([`codec`]) and appended
//! to the write-ahead log ([`wal`]) with group-commit fsync; only then is the
//! new database version published to readers. Versions are immutable
//! ([`table`]): a reader takes an `Arc` of one and sees a consistent snapshot
//! for as long as it likes. Checkpoints fold memory-resident rows into
//! immutable Parquet parts listed in an atomically replaced manifest
//! ([`parts`]), compact small or delete-heavy parts, and drop WAL files that
//! are no longer needed. Unique keys are enforced through hash indexes
//! ([`index`]). Writers that meet each other's rows wait through row
//! locks ([`locks`]). A shard move ships a table's changes between two
//! versions to its new copy ([`changes`]).
//!
//! Rows stay memory-resident after load (the parts are the durable copy);
//! see `docs/adr/0002-storage-engine.md`.

pub mod changes;
pub mod checkpoint;
pub mod codec;
pub mod engine;
pub mod index;
pub mod locks;
pub mod parts;
pub mod table;
pub mod wal;

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;
use thiserror::Error;

pub use engine::{DbVersion, Engine, EngineOptions, TableWrites, WriteSet};

/// Errors of the storage engine. Constraint and conflict variants carry
/// what the SQL layer needs to build a PostgreSQL error.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation {
        table: String,
        constraint: String,
        detail: String,
    },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNull { table: String, column: String },
    #[error("column \"{column}\" of relation \"{table}\" contains null values")]
    NullsInNewColumn { table: String, column: String },
    #[error("could not serialize access due to concurrent update")]
    SerializationFailure,
    #[error("the storage engine is shutting down")]
    ShuttingDown,
}

impl StorageError {
    /// The PostgreSQL SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StorageError::UndefinedTable(_) => "42P01",
            StorageError::DuplicateTable(_) => "42P07",
            StorageError::UniqueViolation { .. } => "23505",
            StorageError::NotNull { .. } | StorageError::NullsInNewColumn { .. } => "23502",
            StorageError::SerializationFailure => "40001",
            StorageError::ShuttingDown => "57P01",
            StorageError::Corrupt(_) => "XX001",
            _ => "58030",
        }
    }
}

#[cfg(test)]
mod tests;
