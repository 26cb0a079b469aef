//! Deadlocks between workers: the coordinator's waits-for graph.
//!
//! Step in the flow: a row-lock wait on one worker that closes a cycle
//! there fails at once ([`crate::storage::locks`]). A cycle through two
//! workers (transaction A holds a row on worker 1 and waits on worker 2,
//! where B holds a row and waits for A on worker 1) is seen by no single
//! worker. So, as Citus does, the coordinator looks for it:
//! [`Cluster::detect_deadlocks`] asks every worker for its waits between
//! distributed transactions that have lasted [`MIN_WAIT`] (each worker
//! session is labelled with its transaction's gid), joins them into one
//! graph, and for each cycle picks the youngest transaction as the victim.
//! Its waits end with 40P01 on every worker; the client rolls back, its
//! locks go, and the others go on. [`Cluster::deadlock_loop`] runs a pass
//! every [`EVERY`], so a distributed deadlock is answered within about a
//! second, where a worker's wait bound (30 s, 55P03) would take long.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::coord::Cluster;
use super::wire::Action;

/// How long a wait lasts before the detector counts it: most waits end
/// sooner, and a graph made of old waits has no cycle that is already over.
pub const MIN_WAIT: Duration = Duration::from_millis(300);
/// How often the coordinator looks for cycles.
pub const EVERY: Duration = Duration::from_millis(500);

/// Orders gids by age: the incarnation, then its counter (higher is younger).
fn age_key(gid: &str) -> (&str, u64) {
    match gid.rsplit_once('-') {
        Some((prefix, n)) => (prefix, n.parse().unwrap_or(0)),
        None => (gid, 0),
    }
}

type Graph<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// One cycle of `graph`, if it has any.
fn find_cycle<'a>(graph: &Graph<'a>) -> Option<Vec<&'a str>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for &start in graph.keys() {
        if done.contains(start) {
            continue;
        }
        // Depth-first; `todo[i]` holds the successors of `path[i]` not yet
        // followed.
        let mut path: Vec<&str> = vec![start];
        let mut todo: Vec<Vec<&str>> = vec![successors(graph, start)];
        while let Some(top) = todo.last_mut() {
            let Some(next) = top.pop() else {
                todo.pop();
                if let Some(finished) = path.pop() {
                    done.insert(finished);
                }
                continue;
            };
            if let Some(at) = path.iter().position(|&p| p == next) {
                return Some(path[at..].to_vec());
            }
            if !done.contains(next) {
                path.push(next);
                todo.push(successors(graph, next));
            }
        }
    }
    None
}

fn successors<'a>(graph: &Graph<'a>, node: &str) -> Vec<&'a str> {
    graph
        .get(node)
        .map(|s| s.iter().rev().copied().collect())
        .unwrap_or_default()
}

/// The transactions to abort so that no cycle is left in the waits-for
/// graph `edges` (waiter, holder): the youngest of each cycle.
pub fn victims(edges: &[(String, String)]) -> Vec<String> {
    let mut graph: Graph = BTreeMap::new();
    for (w, h) in edges {
        if w != h {
            graph.entry(w.as_str()).or_default().insert(h.as_str());
        }
    }
    let mut out = Vec::new();
    while let Some(cycle) = find_cycle(&graph) {
        let Some(victim) = cycle.into_iter().max_by_key(|g| age_key(g)) else {
            break;
        };
        graph.remove(victim);
        for succ in graph.values_mut() {
            succ.remove(victim);
        }
        out.push(victim.to_owned());
    }
    out
}

impl Cluster {
    /// One pass of the detector (see the module docs); returns the victims.
    pub async fn detect_deadlocks(&self) -> Vec<String> {
        let workers = self.worker_addrs();
        let asks = workers
            .iter()
            .map(|a| self.clients.control(a, &Action::LockWaits));
        let edges: Vec<(String, String)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flat_map(|r| r.waits)
            .collect();
        if edges.len() < 2 {
            return Vec::new();
        }
        let chosen = victims(&edges);
        for gid in &chosen {
            tracing::info!(%gid, "deadlock between workers: aborting the youngest transaction");
            let action = Action::BreakWait { gid: gid.clone() };
            let breaks = workers.iter().map(|a| self.clients.control(a, &action));
            futures::future::join_all(breaks).await;
        }
        chosen
    }

    /// Runs [`Cluster::detect_deadlocks`] every [`EVERY`] until `shutdown`.
    pub async fn deadlock_loop(self: Arc<Self>, shutdown: crate::server::shutdown::ShutdownSignal) {
        while shutdown.sleep(EVERY).await {
            self.detect_deadlocks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn no_cycle_no_victim() {
        assert!(victims(&edges(&[
            ("qa-1", "qa-2"),
            ("qa-2", "qa-3"),
            ("qa-1", "qa-3")
        ]))
        .is_empty());
        assert!(victims(&[]).is_empty());
    }

    #[test]
    fn the_youngest_of_a_cycle_is_the_victim() {
        // counters compare as numbers: 10 is younger than 9
        assert_eq!(
            victims(&edges(&[("qa-9", "qa-10"), ("qa-10", "qa-9")])),
            ["qa-10"]
        );
        let ring = edges(&[
            ("qa-1", "qa-2"),
            ("qa-2", "qa-3"),
            ("qa-3", "qa-1"),
            ("qa-4", "qa-1"),
        ]);
        assert_eq!(victims(&ring), ["qa-3"]);
        // a dead end explored first does not hide the cycle behind it
        let branch = edges(&[
            ("qa-1", "qa-2"),
            ("qa-2", "qa-4"),
            ("qa-1", "qa-3"),
            ("qa-3", "qa-1"),
        ]);
        assert_eq!(victims(&branch), ["qa-3"]);
    }

    #[test]
    fn every_cycle_loses_one_and_a_shared_member_can_break_two() {
        let two = edges(&[
            ("qa-1", "qa-2"),
            ("qa-2", "qa-1"),
            ("qa-5", "qa-6"),
            ("qa-6", "qa-5"),
        ]);
        assert_eq!(victims(&two), ["qa-2", "qa-6"]);
        // qa-7 is in both cycles: aborting it breaks both
        let shared = edges(&[
            ("qa-1", "qa-7"),
            ("qa-7", "qa-1"),
            ("qa-7", "qa-3"),
            ("qa-3", "qa-7"),
        ]);
        assert_eq!(victims(&shared), ["qa-7"]);
    }
}
