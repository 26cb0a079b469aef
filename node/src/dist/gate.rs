//! How many streams one query runs on one worker at a time.
//!
//! Step in the flow: [`super::table::DistributedTable::scan`] (and the
//! pushed-down fragment scans) build a [`QueryGates`] from the session's
//! `quiver.max_adaptive_executor_pool_size` and
//! `quiver.executor_slow_start_interval`, and every fragment stream of the
//! scan enters the gate of its worker before it opens. A worker's gate lets
//! one stream run at first; while streams wait, the ceiling rises by one per
//! slow-start interval, up to the pool size. A stream that finishes lets
//! the next one start at once. A fast query thus runs its fragments one
//! after another over one stream, and a long one ramps up to the full pool,
//! as Citus's adaptive executor does with connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct GateState {
    running: usize,
    first_start: Option<Instant>,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Notify,
}

/// The gates of one query, one per worker address.
#[derive(Debug)]
pub struct QueryGates {
    pool_size: usize,
    slow_start: Duration,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// A running stream's place in its worker's gate; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut st = self.gate.state.lock();
            st.running = st.running.saturating_sub(1);
        }
        self.gate.changed.notify_waiters();
    }
}

impl QueryGates {
    /// At most `pool_size` streams per worker, ramped up by one per
    /// `slow_start` (zero: no ramp).
    pub fn new(pool_size: usize, slow_start: Duration) -> Arc<Self> {
        Arc::new(QueryGates {
            pool_size: pool_size.max(1),
            slow_start,
            gates: Mutex::new(HashMap::new()),
        })
    }

    /// No limit at all.
    pub fn unbounded() -> Arc<Self> {
        Self::new(usize::MAX, Duration::ZERO)
    }

    /// Waits until a stream to `addr` may start.
    pub async fn enter(&self, addr: &str) -> Slot {
        let gate = self
            .gates
            .lock()
            .entry(addr.to_owned())
            .or_default()
            .clone();
        loop {
            // Registered before the check, so a release in between is seen.
            let notified = gate.changed.notified();
            let next_step = {
                let mut st = gate.state.lock();
                let now = Instant::now();
                let first = *st.first_start.get_or_insert(now);
                let ceiling = if self.slow_start.is_zero() {
                    self.pool_size
                } else {
                    let steps = now.duration_since(first).as_nanos() / self.slow_start.as_nanos();
                    self.pool_size
                        .min(1usize.saturating_add(usize::try_from(steps).unwrap_or(usize::MAX)))
                };
                if st.running < ceiling {
                    st.running += 1;
                    return Slot { gate: gate.clone() };
                }
                // The ceiling passes `running` after `running` intervals.
                (st.running < self.pool_size && !self.slow_start.is_zero()).then(|| {
                    first
                        + self
                            .slow_start
                            .saturating_mul(u32::try_from(st.running).unwrap_or(u32::MAX))
                })
            };
            match next_step {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn slow_start_ramps_up_to_the_pool_size() {
        let gates = QueryGates::new(3, 20 * MS);
        let t0 = Instant::now();
        let a = gates.enter("w1").await;
        // the second waits one interval, the third two, the fourth for a release
        let b = gates.enter("w1").await;
        assert!(t0.elapsed() >= 20 * MS);
        let c = gates.enter("w1").await;
        assert!(t0.elapsed() >= 40 * MS);
        let g = gates.clone();
        let fourth = tokio::spawn(async move {
            let _d = g.enter("w1").await;
        });
        tokio::time::sleep(100 * MS).await;
        assert!(
            !fourth.is_finished(),
            "a full pool must make the fourth stream wait"
        );
        drop(b);
        fourth.await.unwrap();
        // other workers have gates of their own: no wait there
        let t1 = Instant::now();
        let _w2 = gates.enter("w2").await;
        assert!(t1.elapsed() < 20 * MS);
        drop((a, c));
    }

    #[tokio::test]
    async fn a_finished_stream_lets_the_next_start_at_once() {
        let gates = QueryGates::new(4, Duration::from_secs(30));
        let a = gates.enter("w").await;
        let g = gates.clone();
        let next = tokio::spawn(async move {
            let _b = g.enter("w").await;
            Instant::now()
        });
        tokio::time::sleep(5 * MS).await;
        assert!(!next.is_finished());
        let released = Instant::now();
        drop(a);
        // well before the 30 s ramp step
        let started = next.await.unwrap();
        assert!(started.duration_since(released) < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn unbounded_never_waits() {
        let gates = QueryGates::unbounded();
        let slots: Vec<Slot> = futures::future::join_all((0..50).map(|_| gates.enter("w"))).await;
        assert_eq!(slots.len(), 50);
        assert_eq!(gates.gates.lock()["w"].state.lock().running, 50);
        drop(slots);
        assert_eq!(gates.gates.lock()["w"].state.lock().running, 0);
    }
}
