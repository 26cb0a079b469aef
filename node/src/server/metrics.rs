//! Node metrics: one [`Metrics`] per process, shared as `Arc<Metrics>` by the
//! frontend (queries, connections), the storage engine (rows, WAL, bytes on
//! disk) and the HTTP server, which renders it for Prometheus at `/metrics`.
//!
//! Every update method is a handful of relaxed atomic operations with no lock
//! and no allocation (query errors aside), because they sit on the query and
//! WAL hot paths.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors from rendering the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric failed to encode.
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] fmt::Error),
}

/// The statement classes counted by `quiver_queries_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `SELECT`, `WITH ... SELECT`, `VALUES`, `SHOW`, `EXPLAIN`.
    Select,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`, `TRUNCATE`.
    Delete,
    /// `COPY`.
    Copy,
    /// `CREATE`, `DROP`, `ALTER`.
    Ddl,
    /// Everything else (`SET`, `BEGIN`, ...).
    Other,
}

impl QueryKind {
    /// Every kind, in label order.
    pub const ALL: [QueryKind; 7] = [
        QueryKind::Select,
        QueryKind::Insert,
        QueryKind::Update,
        QueryKind::Delete,
        QueryKind::Copy,
        QueryKind::Ddl,
        QueryKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Select => "select",
            QueryKind::Insert => "insert",
            QueryKind::Update => "update",
            QueryKind::Delete => "delete",
            QueryKind::Copy => "copy",
            QueryKind::Ddl => "ddl",
            QueryKind::Other => "other",
        }
    }

    /// A best-effort class from the statement's first keyword, for callers
    /// that have no parsed statement at hand. `WITH` counts as a select even
    /// when it wraps a write.
    pub fn classify(sql: &str) -> QueryKind {
        let mut rest = sql.trim_start();
        // Skip leading comments and parentheses.
        loop {
            if let Some(r) = rest.strip_prefix("--") {
                rest = r
                    .split_once('\n')
                    .map_or("", |(_, after)| after)
                    .trim_start();
            } else if let Some(r) = rest.strip_prefix("/*") {
                rest = r
                    .split_once("*/")
                    .map_or("", |(_, after)| after)
                    .trim_start();
            } else if let Some(r) = rest.strip_prefix('(') {
                rest = r.trim_start();
            } else {
                break;
            }
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .take(10)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match word.as_str() {
            "select" | "with" | "values" | "table" | "show" | "explain" => QueryKind::Select,
            "insert" => QueryKind::Insert,
            "update" => QueryKind::Update,
            "delete" | "truncate" => QueryKind::Delete,
            "copy" => QueryKind::Copy,
            "create" | "drop" | "alter" => QueryKind::Ddl,
            _ => QueryKind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds, in seconds, of the query duration buckets (`+Inf` is added).
pub const QUERY_DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A fixed-bucket histogram of durations made of atomics only (the one in
/// `prometheus-client` takes a lock on every observation).
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in nanoseconds, ascending.
    bounds_ns: Vec<u64>,
    /// Upper bounds in seconds, as rendered.
    bounds_s: Vec<f64>,
    /// Non-cumulative counts; one more than `bounds_ns` for `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of all observations in nanoseconds.
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with the given upper bounds in seconds (ascending).
    pub fn new(bounds_seconds: &[f64]) -> Self {
        let bounds_ns = bounds_seconds
            .iter()
            .map(|s| Duration::from_secs_f64(s.max(0.0)).as_nanos() as u64)
            .collect::<Vec<_>>();
        let counts = (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(HistogramInner {
                bounds_ns,
                bounds_s: bounds_seconds.to_vec(),
                counts,
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let inner = &self.inner;
        let i = inner.bounds_ns.partition_point(|&b| b < ns);
        if let Some(c) = inner.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let inner = &self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds_s
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&std::collections::HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type ErrorLabels = [(&'static str, String); 1];
type KindLabels = [(&'static str, &'static str); 1];

/// The process's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    queries: [Counter; 7],
    query_errors: Family<ErrorLabels, Counter>,
    query_duration: DurationHistogram,
    rows_written: Counter,
    wal_fsyncs: Counter,
    wal_bytes: Counter,
    storage_bytes: Gauge<u64, AtomicU64>,
    connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every `quiver_*` metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let queries_family = Family::<KindLabels, Counter>::default();
        let queries = QueryKind::ALL.map(|k| {
            queries_family
                .get_or_create(&[("kind", k.as_str())])
                .clone()
        });
        // Counters get `_total` appended by the encoder.
        registry.register(
            "quiver_queries",
            "Statements executed, by kind",
            queries_family,
        );
        let query_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "quiver_query_errors",
            "Statements that failed, by SQLSTATE class (first two characters)",
            query_errors.clone(),
        );
        let query_duration = DurationHistogram::new(&QUERY_DURATION_BUCKETS);
        registry.register(
            "quiver_query_duration_seconds",
            "Statement execution time in seconds",
            query_duration.clone(),
        );
        let rows_written = Counter::default();
        registry.register(
            "quiver_rows_written",
            "Rows inserted, updated or deleted",
            rows_written.clone(),
        );
        let wal_fsyncs = Counter::default();
        registry.register(
            "quiver_wal_fsyncs",
            "fsync calls on the write-ahead log",
            wal_fsyncs.clone(),
        );
        let wal_bytes = Counter::default();
        registry.register(
            "quiver_wal_bytes",
            "Bytes appended to the write-ahead log",
            wal_bytes.clone(),
        );
        let storage_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "quiver_storage_bytes",
            "Bytes on disk in the data directory",
            storage_bytes.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "quiver_connections",
            "Open client connections",
            connections.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            queries,
            query_errors,
            query_duration,
            rows_written,
            wal_fsyncs,
            wal_bytes,
            storage_bytes,
            connections,
        }
    }

    /// Records one finished statement: its kind, how long it took and, when
    /// it failed, its SQLSTATE (only the class, the first two characters, is
    /// kept as a label).
    pub fn observe_query(&self, kind: QueryKind, duration: Duration, sqlstate: Option<&str>) {
        if let Some(c) = self.queries.get(kind.index()) {
            c.inc();
        }
        self.query_duration.observe(duration);
        if let Some(state) = sqlstate {
            self.query_errors
                .get_or_create(&[("sqlstate", sqlstate_class(state))])
                .inc();
        }
    }

    /// Adds to `quiver_rows_written_total`.
    pub fn add_rows_written(&self, n: u64) {
        self.rows_written.inc_by(n);
    }

    /// Counts one WAL fsync.
    pub fn inc_wal_fsync(&self) {
        self.wal_fsyncs.inc();
    }

    /// Adds to `quiver_wal_bytes_total`.
    pub fn add_wal_bytes(&self, n: u64) {
        self.wal_bytes.inc_by(n);
    }

    /// Sets `quiver_storage_bytes` (the storage layer owns the number).
    pub fn set_storage_bytes(&self, n: u64) {
        self.storage_bytes.set(n);
    }

    /// A client connected.
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// A client disconnected.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// Statements seen so far, all kinds.
    pub fn queries_total(&self) -> u64 {
        self.queries.iter().map(Counter::get).sum()
    }

    /// Registers another metric (e.g. from a later subsystem). Names must be
    /// unique; counters get `_total` appended.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// Renders everything in the OpenMetrics text format
    /// ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())?;
        Ok(out)
    }
}

/// The two-character SQLSTATE class, or `XX` for something malformed.
fn sqlstate_class(state: &str) -> String {
    match state.get(..2) {
        Some(c) if c.bytes().all(|b| b.is_ascii_alphanumeric()) => c.to_ascii_uppercase(),
        _ => "XX".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::new();
        m.observe_query(QueryKind::Select, Duration::from_micros(300), None);
        m.observe_query(QueryKind::Insert, Duration::from_millis(3), Some("23505"));
        m.observe_query(QueryKind::Other, Duration::from_secs(120), Some("42P01"));
        m.add_rows_written(10);
        m.inc_wal_fsync();
        m.add_wal_bytes(4096);
        m.set_storage_bytes(1 << 20);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        let text = m.encode().unwrap();
        for line in [
            "quiver_queries_total{kind=\"select\"} 1",
            "quiver_queries_total{kind=\"insert\"} 1",
            "quiver_queries_total{kind=\"ddl\"} 0",
            "quiver_query_errors_total{sqlstate=\"23\"} 1",
            "quiver_query_errors_total{sqlstate=\"42\"} 1",
            "quiver_query_duration_seconds_count 3",
            "quiver_query_duration_seconds_bucket{le=\"0.0005\"} 1",
            "quiver_query_duration_seconds_bucket{le=\"0.005\"} 2",
            "quiver_query_duration_seconds_bucket{le=\"60.0\"} 2",
            "quiver_query_duration_seconds_bucket{le=\"+Inf\"} 3",
            "quiver_rows_written_total 10",
            "quiver_wal_fsyncs_total 1",
            "quiver_wal_bytes_total 4096",
            "quiver_storage_bytes 1048576",
            "quiver_connections 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.queries_total(), 3);
        let sum_line = text
            .lines()
            .find(|l| l.starts_with("quiver_query_duration_seconds_sum "))
            .unwrap();
        let sum: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 120.0033).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn classifies_statements() {
        for (sql, kind) in [
            ("SELECT 1", QueryKind::Select),
            ("  with x as (select 1) select * from x", QueryKind::Select),
            ("-- hi\n/* c */ (SELECT 1)", QueryKind::Select),
            ("insert into t values (1)", QueryKind::Insert),
            ("UPDATE t SET a = 1", QueryKind::Update),
            ("delete from t", QueryKind::Delete),
            ("TRUNCATE t", QueryKind::Delete),
            ("COPY t FROM STDIN", QueryKind::Copy),
            ("create table t (a int)", QueryKind::Ddl),
            ("DROP TABLE t", QueryKind::Ddl),
            ("BEGIN", QueryKind::Other),
            ("", QueryKind::Other),
        ] {
            assert_eq!(QueryKind::classify(sql), kind, "{sql}");
        }
        assert_eq!(sqlstate_class("x"), "XX");
        assert_eq!(sqlstate_class("0a000"), "0A");
    }

    #[test]
    fn extra_metrics_can_be_registered() {
        let m = Metrics::new();
        let c = Counter::<u64>::default();
        m.register("quiver_test_things", "Things", c.clone());
        c.inc();
        assert!(m.encode().unwrap().contains("quiver_test_things_total 1"));
    }
}
