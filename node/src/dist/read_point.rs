//! Reads across shards that see each transaction whole (ADR 0011).
//!
//! Step in the flow: when the coordinator plans a statement over
//! distributed tables, every shard scan and shuffle registers the workers
//! its fragments run on with the statement's [`ReadPoint`]. When the first
//! fragment is about to run, the read point *pins* a snapshot on each of
//! those workers (`Pin {id}`), under the exclusive side of the
//! [`CommitGate`]; the second phase of every two-phase commit holds its
//! shared side. Every fragment then names the pin in its ticket, and the
//! worker runs it against that version ([`Pins`]). So a statement sees each
//! transaction on all its shards or on none. A statement of one fragment
//! needs no pin; a `REPEATABLE READ` block keeps one read point, pinned on
//! every worker, until it ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::wire::Action;
use super::Cluster;
use crate::meta::state::Decision;
use crate::sql::SqlError;
use crate::storage::DbVersion;

/// How long a pin waits for a commit that did not reach all its
/// participants (recovery finishes it) before the read fails.
const WAIT_FOR_COMMITS: Duration = Duration::from_secs(10);
/// How long a pin lives on a worker without being used.
const PIN_IDLE: Duration = Duration::from_secs(15 * 60);

/// Keeps pins from being taken while a transaction is committed on some
/// of its participants and not yet on others.
#[derive(Debug, Default)]
pub struct CommitGate {
    lock: tokio::sync::RwLock<()>,
}

impl CommitGate {
    /// Held by the second phase of a two-phase commit.
    pub async fn committing(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// Held to pin a snapshot, and to switch a shard move.
    pub(crate) async fn pinning(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }
}

#[derive(Debug, Default)]
struct Planned {
    fragments: usize,
    addrs: BTreeSet<String>,
}

/// The snapshot one statement (or one repeatable-read block) reads.
pub struct ReadPoint {
    id: String,
    cluster: Arc<Cluster>,
    /// Repeatable read: pin every worker, even for one fragment.
    whole_block: bool,
    planned: Mutex<Planned>,
    /// The workers pinned (once pinned), or `None` when no pin is needed.
    pinned: tokio::sync::OnceCell<Result<Option<BTreeSet<String>>, SqlError>>,
    /// Moves switched when the statement was planned: if one switches
    /// before the snapshot is pinned, the plan may read a copy that no
    /// longer takes writes, beside other shards read later.
    switches: u64,
}

/// SQLSTATE and message start of a read planned before a shard move's
/// switch and run after it; the frontend plans such a read again.
pub const MOVED: &str = "a shard moved while the statement was planned";

/// True for the error of a read whose plan a shard move made stale.
pub fn is_stale_plan(e: &SqlError) -> bool {
    e.sqlstate == "40001" && e.message.starts_with(MOVED)
}

fn stale_plan() -> SqlError {
    SqlError::new("40001", format!("{MOVED}; run it again"))
}

impl std::fmt::Debug for ReadPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadPoint({})", self.id)
    }
}

impl ReadPoint {
    /// The read point of the statement `state` plans: one per statement,
    /// kept in the session's transaction context (for the whole block in
    /// repeatable read). `None` outside a session.
    pub fn of_statement(
        state: &dyn datafusion::catalog::Session,
        cluster: &Arc<Cluster>,
    ) -> Option<Arc<ReadPoint>> {
        let txn = state
            .config()
            .get_extension::<crate::sql::txn::TxnContext>()?;
        Self::of_txn(&txn, cluster)
    }

    /// The read point of a repeatable-read block, if `txn` is in one.
    pub fn of_block(
        txn: &crate::sql::txn::TxnContext,
        cluster: &Arc<Cluster>,
    ) -> Option<Arc<ReadPoint>> {
        if txn.snapshot_fixed() {
            Self::of_txn(txn, cluster)
        } else {
            None
        }
    }

    fn of_txn(txn: &crate::sql::txn::TxnContext, cluster: &Arc<Cluster>) -> Option<Arc<ReadPoint>> {
        let slot = txn.statement_slot(|whole_block| {
            Arc::new(ReadPoint {
                id: cluster.next_id("r"),
                cluster: cluster.clone(),
                whole_block,
                planned: Mutex::new(Planned::default()),
                pinned: tokio::sync::OnceCell::new(),
                switches: cluster.snapshot().switches,
            }) as Arc<dyn std::any::Any + Send + Sync>
        });
        slot.downcast::<ReadPoint>().ok()
    }

    /// Registers `fragments` fragments to run on the workers `addrs`.
    pub fn plan<'a>(&self, addrs: impl IntoIterator<Item = &'a str>, fragments: usize) {
        let mut p = self.planned.lock();
        p.fragments += fragments;
        p.addrs.extend(addrs.into_iter().map(str::to_owned));
    }

    /// The pin id to put in the tickets of fragments on `addr`, pinning
    /// first when this is the statement's first fragment; `None` when the
    /// statement needs no pin.
    pub async fn pin_for(&self, addr: &str) -> Result<Option<String>, SqlError> {
        let pinned = self
            .pinned
            .get_or_init(|| async { self.pin().await })
            .await
            .clone()?;
        // A repeatable-read block pinned before a move may not read the
        // moved shards where they are now.
        if self.whole_block && self.cluster.snapshot().switches != self.switches {
            return Err(SqlError::new(
                "40001",
                "could not serialize access: a shard moved during this transaction",
            ));
        }
        match pinned {
            None => Ok(None),
            Some(addrs) if addrs.contains(addr) => Ok(Some(self.id.clone())),
            Some(_) => Err(SqlError::new(
                "XX000",
                format!("a fragment on {addr} was not planned with its statement's snapshot"),
            )),
        }
    }

    async fn pin(&self) -> Result<Option<BTreeSet<String>>, SqlError> {
        let addrs = {
            let p = self.planned.lock();
            if !self.whole_block && (p.fragments <= 1 || self.cluster.no_read_pins) {
                // One fragment reads one shard: where it was when planned
                // (a moved copy is frozen at the switch, a state that held
                // while the statement ran), unless it already moved then.
                if self.cluster.snapshot().switches != self.switches {
                    return Err(stale_plan());
                }
                return Ok(None);
            }
            if self.whole_block {
                self.cluster.worker_addrs().into_iter().collect()
            } else {
                p.addrs.clone()
            }
        };
        let started = Instant::now();
        loop {
            let gate = self.cluster.gate.pinning().await;
            // The switch of a move is proposed under this gate too: a plan
            // made before one never pins after it.
            if self.cluster.snapshot().switches != self.switches {
                return Err(stale_plan());
            }
            match self.cluster.unfinished_commit() {
                None => {
                    let calls = addrs.iter().map(|addr| {
                        let action = Action::Pin {
                            id: self.id.clone(),
                        };
                        async move {
                            self.cluster
                                .clients
                                .action(addr, &action)
                                .await
                                .map_err(|mut e| {
                                    e.message = format!(
                                        "{} (taking the read snapshot of the shards it holds)",
                                        e.message
                                    );
                                    e
                                })
                        }
                    });
                    let results = futures::future::join_all(calls).await;
                    drop(gate);
                    if let Some(e) = results.into_iter().find_map(Result::err) {
                        self.unpin(&addrs);
                        return Err(e);
                    }
                    return Ok(Some(addrs));
                }
                Some(gid) => {
                    drop(gate);
                    if started.elapsed() > WAIT_FOR_COMMITS {
                        return Err(SqlError::new(
                            "40001",
                            format!(
                                "could not read a consistent snapshot: transaction {gid} is \
                                 committed but has not reached all its workers yet"
                            ),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Releases the pins (in the background: nobody waits for it).
    fn unpin(&self, addrs: &BTreeSet<String>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for addr in addrs {
            let (clients, addr) = (self.cluster.clients.clone(), addr.clone());
            let action = Action::Unpin {
                id: self.id.clone(),
            };
            rt.spawn(async move {
                if let Err(e) = clients.action(&addr, &action).await {
                    tracing::debug!(%addr, error = %e.message, "unpin not delivered; the pin expires");
                }
            });
        }
    }
}

impl Drop for ReadPoint {
    fn drop(&mut self) {
        if let Some(Ok(Some(addrs))) = self.pinned.get() {
            self.unpin(addrs);
        }
    }
}

impl Cluster {
    /// A transaction decided `Commit` in Raft whose second phase has not
    /// finished (no second phase is in flight while the gate is held
    /// exclusively, so it is one that failed or was cut by a crash, or one
    /// decided and not yet in its second phase). Decisions this coordinator
    /// finished and only has to forget do not count.
    fn unfinished_commit(&self) -> Option<String> {
        let state = self.snapshot();
        state
            .txns
            .iter()
            .find(|(gid, d)| d.decision == Decision::Commit && !self.finished(gid))
            .map(|(gid, _)| gid.clone())
    }
}

/// A worker's pinned snapshots, by id.
#[derive(Default)]
pub struct Pins {
    map: Mutex<HashMap<String, (Arc<DbVersion>, Instant)>>,
}

impl Pins {
    /// Pins `version` under `id`, and drops pins idle for too long.
    pub fn pin(&self, id: String, version: Arc<DbVersion>) {
        let now = Instant::now();
        let mut map = self.map.lock();
        map.retain(|_, (_, used)| now.duration_since(*used) < PIN_IDLE);
        map.insert(id, (version, now));
    }

    pub fn unpin(&self, id: &str) {
        self.map.lock().remove(id);
    }

    /// The version pinned under `id`.
    pub fn get(&self, id: &str) -> Result<Arc<DbVersion>, SqlError> {
        let mut map = self.map.lock();
        match map.get_mut(id) {
            Some((v, used)) => {
                *used = Instant::now();
                Ok(v.clone())
            }
            None => Err(SqlError::new(
                "40001",
                format!(
                    "could not serialize access: snapshot {id} is gone from this worker \
                     (it restarted, or the snapshot expired)"
                ),
            )),
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_found_refreshed_and_released() {
        let pins = Pins::default();
        let v = Arc::new(DbVersion {
            lsn: 7,
            ..Default::default()
        });
        pins.pin("a".into(), v);
        assert_eq!(pins.get("a").map(|v| v.lsn).ok(), Some(7));
        let gone = pins.get("b").err().map(|e| e.sqlstate);
        assert_eq!(gone, Some("40001"));
        pins.unpin("a");
        assert!(pins.is_empty());
    }
}
