//! Row locks: a writer waits for the transaction that changed its row.
//!
//! Step in the flow: after an UPDATE or DELETE has computed the rows it
//! removes (as row ids in its pending writes), the session locks them here
//! ([`crate::sql::session`]). A row held by another open transaction makes
//! the statement wait until that transaction ends, and then run again on a
//! fresh snapshot (`READ COMMITTED`: it applies to the newest version of
//! the row, as PostgreSQL's does) or fail with 40001 when its row changed
//! (`REPEATABLE READ`). A wait that would close a cycle of waiters fails
//! with 40P01 instead: the transaction that closes it is the one that gives
//! way. Locks last until the transaction ends. They live in memory only:
//! after a crash no transaction is open, so no lock is needed.
//!
//! A cycle that spans workers cannot be seen here: each worker's sessions
//! carry their distributed transaction's id as a *label*, the coordinator
//! collects the labelled waits of every worker ([`RowLocks::labelled_waits`])
//! and breaks a cycle it finds by choosing a victim
//! ([`RowLocks::break_wait`], see [`crate::dist::deadlock`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use thiserror::Error;

/// A row: table id and row id.
pub type RowKey = (u64, u64);

/// Why a lock wait ended without the lock.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LockError {
    #[error("deadlock detected: transaction {waiter} waits for {holder}, which waits for it")]
    Deadlock { waiter: u64, holder: u64 },
    #[error("canceling statement due to lock timeout: waited {0:?} for transaction {1}")]
    Timeout(Duration, u64),
    #[error(
        "deadlock detected: transaction {waiter} waits for {holder}, which waits for it \
         through another worker"
    )]
    Distributed { waiter: String, holder: String },
}

#[derive(Debug, Default)]
struct Table {
    owner: HashMap<RowKey, u64>,
    held: HashMap<u64, Vec<RowKey>>,
    /// Waiter -> the transaction it waits for, and since when.
    waits: HashMap<u64, (u64, Instant)>,
    /// Owner -> its distributed transaction's id.
    labels: HashMap<u64, String>,
    /// Waiters chosen as victims of a deadlock between workers.
    victims: HashSet<u64>,
}

/// The lock table of one database.
#[derive(Debug, Default)]
pub struct RowLocks {
    table: Mutex<Table>,
    released: tokio::sync::Notify,
}

impl RowLocks {
    /// Locks `rows` for `txn`; returns the first other transaction holding
    /// one of them (the rows before it are locked and stay so).
    pub fn lock(&self, txn: u64, rows: impl IntoIterator<Item = RowKey>) -> Option<u64> {
        let mut t = self.table.lock();
        let mut mine = Vec::new();
        let mut blocked = None;
        for row in rows {
            match t.owner.get(&row) {
                Some(&o) if o != txn => {
                    blocked = Some(o);
                    break;
                }
                Some(_) => {}
                None => {
                    t.owner.insert(row, txn);
                    mine.push(row);
                }
            }
        }
        if !mine.is_empty() {
            t.held.entry(txn).or_default().extend(mine);
        }
        blocked
    }

    /// Waits until `holder` has ended, for at most `limit` (none: forever).
    pub async fn wait(
        &self,
        txn: u64,
        holder: u64,
        limit: Option<Duration>,
    ) -> Result<(), LockError> {
        {
            let mut t = self.table.lock();
            // Does `holder` (transitively) wait for us?
            let mut at = holder;
            let mut steps = 0;
            while let Some(&(next, _)) = t.waits.get(&at) {
                if next == txn {
                    return Err(LockError::Deadlock {
                        waiter: txn,
                        holder,
                    });
                }
                at = next;
                steps += 1;
                if steps > t.waits.len() {
                    break;
                }
            }
            t.waits.insert(txn, (holder, Instant::now()));
        }
        let started = Instant::now();
        let out = loop {
            let notified = self.released.notified();
            {
                let mut t = self.table.lock();
                if t.victims.remove(&txn) {
                    let name = |id: u64| t.labels.get(&id).cloned().unwrap_or(id.to_string());
                    break Err(LockError::Distributed {
                        waiter: name(txn),
                        holder: name(holder),
                    });
                }
                if !t.held.contains_key(&holder) {
                    break Ok(());
                }
            }
            match limit {
                Some(l) => {
                    let left = l.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break Err(LockError::Timeout(l, holder));
                    }
                    let _ = tokio::time::timeout(left, notified).await;
                }
                None => notified.await,
            }
        };
        let mut t = self.table.lock();
        t.waits.remove(&txn);
        t.victims.remove(&txn);
        out
    }

    /// Names `txn` by its distributed transaction's id `label`.
    pub fn label(&self, txn: u64, label: &str) {
        self.table.lock().labels.insert(txn, label.to_owned());
    }

    /// The waits between labelled transactions that have lasted at least
    /// `min_age`: (waiter's label, holder's label).
    pub fn labelled_waits(&self, min_age: Duration) -> Vec<(String, String)> {
        let t = self.table.lock();
        t.waits
            .iter()
            .filter(|(_, (_, since))| since.elapsed() >= min_age)
            .filter_map(|(w, (h, _))| Some((t.labels.get(w)?.clone(), t.labels.get(h)?.clone())))
            .collect()
    }

    /// Ends the wait of the transaction labelled `label` with a deadlock
    /// error; false if it is not waiting.
    pub fn break_wait(&self, label: &str) -> bool {
        let mut t = self.table.lock();
        let waiting: Vec<u64> = t
            .waits
            .keys()
            .copied()
            .filter(|w| t.labels.get(w).map(String::as_str) == Some(label))
            .collect();
        if waiting.is_empty() {
            return false;
        }
        t.victims.extend(waiting);
        drop(t);
        self.released.notify_waiters();
        true
    }

    /// Releases every lock of `txn` (its transaction ended).
    pub fn release(&self, txn: u64) {
        let mut t = self.table.lock();
        t.labels.remove(&txn);
        if let Some(rows) = t.held.remove(&txn) {
            for r in rows {
                if t.owner.get(&r) == Some(&txn) {
                    t.owner.remove(&r);
                }
            }
            drop(t);
            self.released.notify_waiters();
        }
    }

    /// Moves `from`'s locks to `to` (a transaction that prepared keeps its
    /// locks under its new owner until it commits or aborts).
    pub fn transfer(&self, from: u64, to: u64) {
        let mut t = self.table.lock();
        if let Some(l) = t.labels.remove(&from) {
            t.labels.insert(to, l);
        }
        if let Some(rows) = t.held.remove(&from) {
            for r in &rows {
                t.owner.insert(*r, to);
            }
            t.held.entry(to).or_default().extend(rows);
        }
    }

    /// How many rows are locked (for tests and metrics).
    pub fn locked_rows(&self) -> usize {
        self.table.lock().owner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_resumes_when_the_holder_ends() {
        let locks = Arc::new(RowLocks::default());
        assert_eq!(locks.lock(1, [(7, 1), (7, 2)]), None);
        assert_eq!(locks.lock(2, [(7, 3), (7, 2)]), Some(1));
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.wait(2, 1, None).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        locks.release(1);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        assert_eq!(locks.lock(2, [(7, 2)]), None);
        assert_eq!(locks.locked_rows(), 2);
        locks.release(2);
        assert_eq!(locks.locked_rows(), 0);
    }

    #[tokio::test]
    async fn the_transaction_that_closes_a_cycle_gets_a_deadlock() {
        let locks = Arc::new(RowLocks::default());
        assert_eq!(locks.lock(1, [(1, 1)]), None);
        assert_eq!(locks.lock(2, [(1, 2)]), None);
        let l = locks.clone();
        let first = tokio::spawn(async move { l.wait(1, 2, None).await });
        tokio::task::yield_now().await;
        assert_eq!(
            locks.wait(2, 1, None).await,
            Err(LockError::Deadlock {
                waiter: 2,
                holder: 1
            })
        );
        locks.release(2);
        assert_eq!(first.await.ok(), Some(Ok(())));
    }

    #[tokio::test]
    async fn a_labelled_wait_is_reported_and_can_be_broken() {
        let locks = Arc::new(RowLocks::default());
        locks.label(1, "g1");
        locks.label(2, "g2");
        assert_eq!(locks.lock(1, [(1, 1)]), None);
        assert_eq!(locks.lock(2, [(1, 1)]), Some(1));
        assert!(!locks.break_wait("g2"), "g2 does not wait yet");
        let l = locks.clone();
        let waiter = tokio::spawn(async move { l.wait(2, 1, None).await });
        while locks.labelled_waits(Duration::ZERO).is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            locks.labelled_waits(Duration::ZERO),
            vec![("g2".to_owned(), "g1".to_owned())]
        );
        assert!(locks.labelled_waits(Duration::from_secs(60)).is_empty());
        assert!(locks.break_wait("g2"));
        assert_eq!(
            waiter.await.ok(),
            Some(Err(LockError::Distributed {
                waiter: "g2".into(),
                holder: "g1".into()
            }))
        );
        assert!(locks.labelled_waits(Duration::ZERO).is_empty());
        // the label moves with a prepared transaction's locks, and goes with them
        locks.transfer(1, 3);
        assert_eq!(locks.lock(2, [(1, 1)]), Some(3));
        locks.release(3);
        assert!(!locks.table.lock().labels.contains_key(&3));
    }

    #[tokio::test]
    async fn a_bounded_wait_times_out() {
        let locks = RowLocks::default();
        assert_eq!(locks.lock(1, [(1, 1)]), None);
        let r = locks.wait(2, 1, Some(Duration::from_millis(20))).await;
        assert!(matches!(r, Err(LockError::Timeout(_, 1))));
    }
}
