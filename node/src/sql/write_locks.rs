//! Writes that wait for each other instead of failing (row locks).
//!
//! Step in the flow: [`Session::execute`] runs every statement through
//! [`Session::write_locked`]. After an UPDATE or DELETE has computed the
//! rows it removes, they are locked for the transaction
//! ([`crate::storage::locks`]):
//! - a row another open transaction holds: the statement's writes are taken
//!   back, it waits until that transaction ends (40P01 if the wait would
//!   close a cycle), and runs again;
//! - a row that changed since the statement's snapshot (the other
//!   transaction committed): in `READ COMMITTED` the statement runs again on
//!   a fresh snapshot, so it applies to the newest version of the row, as
//!   PostgreSQL's does; in `REPEATABLE READ` it fails with 40001.
//!
//! The locks are held until the transaction ends, so its commit cannot meet
//! a conflict any more. Distributed tables lock on their workers, where the
//! same code runs in each transaction's worker session.

use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use super::session::{Outcome, Session};
use super::txn::{Pending, PROVISIONAL};
use super::SqlError;
use crate::storage::locks::{LockError, RowKey};

/// What locking a statement's rows found.
enum Locked {
    /// All locked, all current: the statement's writes stand.
    Done,
    /// Run the statement again (on a fresh snapshot in read committed).
    Again,
}

fn lock_error(e: LockError) -> SqlError {
    match e {
        LockError::Deadlock { .. } => SqlError::new("40P01", e.to_string()),
        LockError::Timeout(waited, holder) => SqlError::new(
            "40P01",
            format!(
                "deadlock detected: waited {waited:?} for transaction {holder} \
                 (a wait this long between workers is taken for a distributed deadlock)"
            ),
        ),
    }
}

fn conflict() -> SqlError {
    SqlError::new(
        "40001",
        "could not serialize access due to concurrent update",
    )
}

/// The committed rows `now` deletes that `before` did not.
fn new_deletes(before: &Pending, now: &Pending) -> Vec<RowKey> {
    let mut rows = Vec::new();
    for (table, t) in &now.tables {
        let old = before.tables.get(table);
        rows.extend(
            t.deletes
                .iter()
                .filter(|r| **r < PROVISIONAL && !old.is_some_and(|o| o.deletes.contains(r)))
                .map(|r| (*table, *r)),
        );
    }
    rows
}

impl Session {
    /// Runs `stmt` and locks the rows it deletes or updates (see the module
    /// docs), running it again as often as other writers make it.
    pub(super) async fn write_locked(
        &mut self,
        stmt: &Statement,
        plan: Option<LogicalPlan>,
        params: Option<ParamValues>,
        saved: &Pending,
    ) -> Result<Outcome, SqlError> {
        if !matches!(stmt, Statement::Update { .. } | Statement::Delete(_)) {
            return self.dispatch(stmt, plan, params).await;
        }
        loop {
            let out = self.dispatch(stmt, plan.clone(), params.clone()).await?;
            match self.lock_new_deletes(saved).await {
                Ok(Locked::Done) => return Ok(out),
                Ok(Locked::Again) => {
                    self.txn.set_pending(saved.clone());
                    self.txn.begin_statement();
                }
                Err(e) => {
                    self.txn.set_pending(saved.clone());
                    return Err(e);
                }
            }
        }
    }

    async fn lock_new_deletes(&self, saved: &Pending) -> Result<Locked, SqlError> {
        let rows = new_deletes(saved, &self.txn.pending());
        if rows.is_empty() {
            return Ok(Locked::Done);
        }
        let locks = &self.db.engine.locks;
        let me = self.txn.lock_owner();
        let repeatable = self.txn.snapshot_fixed();
        while let Some(holder) = locks.lock(me, rows.iter().copied()) {
            let limit = *self.txn.lock_wait_limit.lock();
            locks.wait(me, holder, limit).await.map_err(lock_error)?;
            if !repeatable {
                return Ok(Locked::Again);
            }
        }
        // Locked: did a transaction that committed since our snapshot
        // change one of the rows?
        let head = self.db.engine.snapshot();
        let changed = rows
            .iter()
            .any(|(table, row)| head.tables.get(table).is_some_and(|t| !t.is_live(*row)));
        match (changed, repeatable) {
            (false, _) => Ok(Locked::Done),
            (true, false) => Ok(Locked::Again),
            (true, true) => Err(conflict()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::txn::PendingTable;

    #[test]
    fn only_committed_rows_deleted_by_this_statement_are_new() {
        let mut before = Pending::default();
        before.tables.insert(
            1,
            PendingTable {
                deletes: [5].into_iter().collect(),
                ..Default::default()
            },
        );
        let mut now = before.clone();
        if let Some(t) = now.tables.get_mut(&1) {
            t.deletes.extend([6, PROVISIONAL + 1]);
        }
        now.tables.insert(
            2,
            PendingTable {
                deletes: [9].into_iter().collect(),
                ..Default::default()
            },
        );
        assert_eq!(new_deletes(&before, &now), vec![(1, 6), (2, 9)]);
    }
}
