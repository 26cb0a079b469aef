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
//! `SELECT ... FOR UPDATE` (or `FOR SHARE`, taken as `FOR UPDATE`) of one
//! table locks the rows its WHERE selects the same way, through an UPDATE
//! that changes nothing and whose writes are dropped, before the query runs
//! (so it reads the rows as their last writer left them). On a distributed
//! table that UPDATE becomes a `SELECT ... FOR UPDATE` of each shard it
//! prunes to, run in the transaction's session on the shard's workers
//! ([`crate::dist::table`]), where this same code locks the rows.
//!
//! The locks are held until the transaction ends, so its commit cannot meet
//! a conflict any more. Distributed tables lock on their workers, where the
//! same code runs in each transaction's worker session.

use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement, TableFactor, TableWithJoins};

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
        LockError::Deadlock { .. } | LockError::Distributed { .. } => {
            SqlError::new("40P01", e.to_string())
        }
        LockError::Timeout(..) => SqlError::new("55P03", e.to_string()),
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
        if let Some(lock) = self.for_update(stmt) {
            self.lock_rows_of(&lock?, saved).await?;
            return self.dispatch(stmt, plan, params).await;
        }
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

    /// For `SELECT ... FOR UPDATE` of one table: the UPDATE that locks its
    /// rows (`None`: not such a query).
    fn for_update(&self, stmt: &Statement) -> Option<Result<Statement, SqlError>> {
        let Statement::Query(q) = stmt else {
            return None;
        };
        if q.locks.is_empty() {
            return None;
        }
        let SetExpr::Select(sel) = q.body.as_ref() else {
            return Some(Err(SqlError::unsupported(
                "FOR UPDATE is supported on a plain SELECT of one table",
            )));
        };
        let [TableWithJoins { relation, joins }] = sel.from.as_slice() else {
            return Some(Err(SqlError::unsupported(
                "FOR UPDATE of more than one table is not supported yet",
            )));
        };
        let TableFactor::Table { name, .. } = relation else {
            return Some(Err(SqlError::unsupported(
                "FOR UPDATE is supported on a plain SELECT of one table",
            )));
        };
        if !joins.is_empty() {
            return Some(Err(SqlError::unsupported(
                "FOR UPDATE of more than one table is not supported yet",
            )));
        }
        let table = super::idents::relation(name);
        let snap = self.db.engine.snapshot();
        let col = snap
            .table_by_name(&table)?
            .meta
            .columns
            .first()
            .map(|c| super::idents::quote(&c.name))?;
        let filter = sel
            .selection
            .as_ref()
            .map_or(String::new(), |w| format!(" WHERE {w}"));
        let sql = format!("UPDATE {name} SET {col} = {col}{filter}");
        Some(self.parse(&sql).and_then(|mut v| {
            v.pop()
                .ok_or_else(|| SqlError::new("XX000", "FOR UPDATE: no statement"))
        }))
    }

    /// Locks the rows `update` would change, keeping none of its writes.
    async fn lock_rows_of(&mut self, update: &Statement, saved: &Pending) -> Result<(), SqlError> {
        loop {
            let ran = self.dispatch(update, None, None).await;
            let locked = match ran {
                Ok(_) => self.lock_new_deletes(saved).await,
                Err(e) => Err(e),
            };
            self.txn.set_pending(saved.clone());
            match locked? {
                Locked::Done => return Ok(()),
                Locked::Again => self.txn.begin_statement(),
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
