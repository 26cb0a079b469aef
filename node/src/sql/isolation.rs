//! Isolation levels as PostgreSQL names and sets them.
//!
//! Step in the flow: [`super::session::Session`] asks here at `BEGIN
//! [ISOLATION LEVEL ...]`, `SET TRANSACTION ISOLATION LEVEL ...` (before the
//! block's first query, else 25001) and `SET SESSION CHARACTERISTICS AS
//! TRANSACTION ISOLATION LEVEL ...`, and `SHOW transaction_isolation` shows
//! the open block's level. `REPEATABLE READ` and `SERIALIZABLE` read one
//! snapshot for the whole block (snapshot isolation: PostgreSQL's
//! `REPEATABLE READ`; `SERIALIZABLE` does not yet detect the
//! dangerous structures PostgreSQL's SSI does). `READ UNCOMMITTED` is
//! `READ COMMITTED`, as in PostgreSQL.

use datafusion::sql::sqlparser::ast::{TransactionIsolationLevel, TransactionMode};

/// The level `modes` ask for, as `SHOW transaction_isolation` names it.
pub fn requested(modes: &[TransactionMode]) -> Option<&'static str> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::IsolationLevel(l) => Some(match l {
            TransactionIsolationLevel::ReadUncommitted => "read uncommitted",
            TransactionIsolationLevel::ReadCommitted => "read committed",
            TransactionIsolationLevel::RepeatableRead | TransactionIsolationLevel::Snapshot => {
                "repeatable read"
            }
            TransactionIsolationLevel::Serializable => "serializable",
        }),
        _ => None,
    })
}

/// A level given by name (a setting's value), as `SHOW` names it.
pub fn requested_by_name(name: &str) -> Option<&'static str> {
    [
        "read uncommitted",
        "read committed",
        "repeatable read",
        "serializable",
    ]
    .into_iter()
    .find(|l| l.eq_ignore_ascii_case(name.trim()))
}

/// True when `level` reads one snapshot for the whole block.
pub fn one_snapshot(level: &str) -> bool {
    matches!(level, "repeatable read" | "serializable")
}

/// The error for a level set after the block's first query.
pub fn too_late() -> super::SqlError {
    super::SqlError::new(
        "25001",
        "SET TRANSACTION ISOLATION LEVEL must be called before any query",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_by_postgres_names() {
        let rr = [TransactionMode::IsolationLevel(
            TransactionIsolationLevel::RepeatableRead,
        )];
        assert_eq!(requested(&rr), Some("repeatable read"));
        assert!(one_snapshot("serializable") && !one_snapshot("read committed"));
        assert_eq!(requested(&[]), None);
    }
}
