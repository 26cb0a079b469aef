//! The leader's view of worker liveness.
//!
//! Step in the flow: workers send `Heartbeat` to the metadata leader every
//! second. Heartbeats are not Raft entries (ADR 0005): the leader keeps the
//! time of the last one per node in memory, here, and derives HEALTHY or
//! SUSPECT from it. Only FAILED (`MarkNodeFailed`) is committed, so it is
//! read from the catalogue ([`NodeInfo::failed`]). A coordinator that becomes
//! leader has seen no heartbeat yet, so every node starts SUSPECT.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::state::{NodeId, NodeInfo, NodeRole};

/// How long after its last heartbeat a node stays HEALTHY.
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_secs(3);

/// Health of a node as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heartbeats arrive on time.
    Healthy,
    /// Heartbeats are late (or none was seen since this leader started).
    Suspect,
    /// Declared failed (committed in the catalogue).
    Failed,
}

impl Health {
    /// The lower-case name shown in `pg_dist_node.health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Suspect => "suspect",
            Health::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Beat {
    at: Instant,
    unix_ms: i64,
}

/// Last heartbeat per node, in memory.
#[derive(Debug)]
pub struct HealthTracker {
    suspect_after: Duration,
    beats: Mutex<HashMap<NodeId, Beat>>,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new(DEFAULT_SUSPECT_AFTER)
    }
}

impl HealthTracker {
    /// A tracker that calls a node SUSPECT `suspect_after` its last heartbeat.
    pub fn new(suspect_after: Duration) -> Self {
        Self {
            suspect_after,
            beats: Mutex::new(HashMap::new()),
        }
    }

    /// Records a heartbeat of `node` now.
    pub fn beat(&self, node: NodeId) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.beats.lock().insert(
            node,
            Beat {
                at: Instant::now(),
                unix_ms,
            },
        );
    }

    /// Forgets `node` (it was removed).
    pub fn forget(&self, node: NodeId) {
        self.beats.lock().remove(&node);
    }

    /// Health of `node` whose catalogue row is `info`. A coordinator row is
    /// HEALTHY while it is in the catalogue: coordinators do not heartbeat.
    pub fn health(&self, node: NodeId, info: &NodeInfo) -> Health {
        if info.failed.is_some() {
            return Health::Failed;
        }
        if info.role == NodeRole::Coordinator {
            return Health::Healthy;
        }
        match self.beats.lock().get(&node) {
            Some(b) if b.at.elapsed() <= self.suspect_after => Health::Healthy,
            _ => Health::Suspect,
        }
    }

    /// Unix time in milliseconds of the last heartbeat of `node`; 0 if none.
    pub fn last_heartbeat_unix_ms(&self, node: NodeId) -> i64 {
        self.beats.lock().get(&node).map_or(0, |b| b.unix_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> NodeInfo {
        NodeInfo {
            host: "w".into(),
            port: 1,
            role: NodeRole::Worker,
            group: String::new(),
            active: true,
            draining: false,
            failed: None,
            version: 1,
        }
    }

    #[test]
    fn heartbeats_drive_health() {
        let t = HealthTracker::new(Duration::from_millis(50));
        let w = worker();
        assert_eq!(t.health(1, &w), Health::Suspect);
        assert_eq!(t.last_heartbeat_unix_ms(1), 0);
        t.beat(1);
        assert_eq!(t.health(1, &w), Health::Healthy);
        assert!(t.last_heartbeat_unix_ms(1) > 0);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.health(1, &w), Health::Suspect);
        let failed = NodeInfo {
            failed: Some("gone".into()),
            ..worker()
        };
        t.beat(1);
        assert_eq!(t.health(1, &failed), Health::Failed);
        t.forget(1);
        assert_eq!(t.health(1, &w), Health::Suspect);
    }
}
