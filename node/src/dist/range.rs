//! Range-distributed (time-series) tables: keys, intervals, shard creation
//! as rows arrive, pruning on comparisons, and retention.
//!
//! Step in the flow: `create_distributed_table('metrics', 'ts',
//! partition_by => 'range', interval => '1 day')` records a table with no
//! shards ([`parse_interval`] turns the interval into the column's own
//! units). Every write first calls [`ensure_shards`]: values whose range
//! has no shard yet get one, aligned to the interval (`[k*i, (k+1)*i)`),
//! recorded in Raft (`AddRangeShards`) and created on its workers before a
//! row is sent. Scans prune with [`prune`]: `=`, `IN`, `<`, `<=`, `>`, `>=`
//! and `BETWEEN` on the range column keep only the shards whose range can
//! hold a match. `quiver_drop_old_shards(table, older_than)` drops the
//! shards whose whole range lies before a value ([`drop_older`]).
//!
//! A range column is a signed integer, a date or a timestamp; its key is
//! the value's own `i64` representation (days for a date, the column's time
//! unit for a timestamp), so bounds compare without conversion.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::coord::{meta_err, Cluster};
use super::route::TableLayout;
use crate::meta::command::{MetaCommand, MetaResponse, ShardSpec};
use crate::meta::placement::plan_placements;
use crate::meta::state::{ShardId, TableKind};
use crate::sql::SqlError;
use crate::storage::table::TableMeta;

/// Whether a column of type `ty` can be a range distribution column.
pub fn supported(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Date32
    ) || matches!(ty, DataType::Timestamp(_, _))
}

fn bad(msg: impl Into<String>) -> SqlError {
    SqlError::new("22023", msg)
}

/// The width of a range shard, in the units of a column of type `ty`:
/// an interval such as `'1 day'` or `'6 hours'` for a timestamp, whole days
/// for a date, a positive integer for an integer column.
pub fn parse_interval(text: &str, ty: &DataType) -> Result<i64, SqlError> {
    let text = text.trim();
    if matches!(ty, DataType::Int16 | DataType::Int32 | DataType::Int64) {
        return text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            bad(format!(
                "interval must be a positive integer, not \"{text}\""
            ))
        });
    }
    let parsed = cast(
        &(Arc::new(StringArray::from(vec![text])) as ArrayRef),
        &DataType::Interval(IntervalUnit::MonthDayNano),
    )
    .ok()
    .filter(|a| a.null_count() == 0)
    .ok_or_else(|| bad(format!("invalid interval \"{text}\"")))?;
    let v = parsed.as_primitive::<IntervalMonthDayNanoType>().value(0);
    if v.months != 0 {
        return Err(bad(format!(
            "interval \"{text}\" has months or years, which vary in length; use days, hours, \
             minutes or seconds"
        )));
    }
    let nanos = i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds);
    let per_unit: i128 = match ty {
        DataType::Date32 => 86_400_000_000_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        other => {
            return Err(bad(format!(
                "a range distribution column must be an integer, date or timestamp, not {other}"
            )))
        }
    };
    if nanos <= 0 || nanos % per_unit != 0 {
        return Err(bad(format!(
            "interval \"{text}\" must be positive and a whole number of {}",
            if matches!(ty, DataType::Date32) {
                "days for a date column"
            } else {
                "the column's time unit"
            }
        )));
    }
    i64::try_from(nanos / per_unit).map_err(|_| bad(format!("interval \"{text}\" is too large")))
}

/// The keys of a range column's values (`None` for NULL).
pub fn keys(arr: &ArrayRef) -> Result<Vec<Option<i64>>, SqlError> {
    let as_int = match arr.data_type() {
        DataType::Date32 => cast(&cast(arr, &DataType::Int32)?, &DataType::Int64)?,
        _ => cast(arr, &DataType::Int64)?,
    };
    let ints = as_int.as_primitive::<Int64Type>();
    Ok((0..ints.len())
        .map(|i| ints.is_valid(i).then(|| ints.value(i)))
        .collect())
}

/// The key of a literal compared with a column of type `ty`.
fn scalar_key(v: &ScalarValue, ty: &DataType) -> Option<i64> {
    let v = v.cast_to(ty).ok()?;
    let arr = v.to_array().ok()?;
    keys(&arr).ok()?.first().copied().flatten()
}

/// The text of key `v` of a column of type `ty` (for `pg_dist_shard`).
pub fn render(v: i64, ty: &DataType) -> String {
    let arr: ArrayRef = Arc::new(Int64Array::from(vec![v]));
    let typed = match ty {
        DataType::Date32 => cast(&arr, &DataType::Int32).and_then(|a| cast(&a, ty)),
        _ => cast(&arr, ty),
    };
    let text = typed
        .and_then(|a| cast(&a, &DataType::Utf8))
        .ok()
        .and_then(|a| a.as_string_opt::<i32>().map(|s| s.value(0).to_owned()))
        .unwrap_or_else(|| v.to_string());
    // PostgreSQL writes a space between date and time.
    if matches!(ty, DataType::Timestamp(_, _)) {
        text.replacen('T', " ", 1)
    } else {
        text
    }
}

/// The range `[start, end)` of width `interval` that holds `key`.
pub fn bucket(key: i64, interval: i64) -> (i64, i64) {
    let start = key.div_euclid(interval).saturating_mul(interval);
    (start, start.saturating_add(interval))
}

/// The position (in `layout.shards`) of the shard holding each key.
pub fn locate(layout: &TableLayout, keys: &[Option<i64>]) -> Result<Vec<usize>, SqlError> {
    let mut order: Vec<usize> = (0..layout.shards.len()).collect();
    order.sort_by_key(|&i| layout.shards[i].min);
    let column = layout.column().unwrap_or_default();
    keys.iter()
        .map(|k| {
            let k = k.ok_or_else(|| {
                SqlError::new(
                    "23502",
                    format!(
                        "null value in distribution column \"{column}\" of relation \"{}\"",
                        layout.info.name
                    ),
                )
            })?;
            let p = order.partition_point(|&i| layout.shards[i].min <= k);
            p.checked_sub(1)
                .map(|p| order[p])
                .filter(|&i| k < layout.shards[i].max)
                .ok_or_else(|| {
                    SqlError::new(
                        "XX000",
                        format!("no shard of table {} holds key {k}", layout.info.name),
                    )
                })
        })
        .collect()
}

/// The intervals `[lo, hi]` (inclusive) a filter on `column` allows.
type Span = (i64, i64);

fn bare_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == name)
}

use super::route::literal;

/// Spans allowed by one conjunct. A literal of another type than the
/// column's may lose precision when cast, so `<` and `>` against it are
/// kept inclusive; against a literal of the column's own type they are exact.
fn spans_of(f: &Expr, column: &str, ty: &DataType) -> Option<Vec<Span>> {
    let key = |e: &Expr| literal(e).and_then(|v| scalar_key(&v, ty));
    let exact = |e: &Expr| literal(e).is_some_and(|v| v.data_type() == *ty);
    match f {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            // DataFusion writes a short IN list as ORs.
            let mut spans = spans_of(left, column, ty)?;
            spans.extend(spans_of(right, column, ty)?);
            Some(spans)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, lit) = if bare_column(left, column) {
                (*op, right.as_ref())
            } else if bare_column(right, column) {
                (op.swap()?, left.as_ref())
            } else {
                return None;
            };
            let k = key(lit)?;
            let step = i64::from(exact(lit));
            match op {
                Operator::Eq => Some(vec![(k, k)]),
                Operator::LtEq => Some(vec![(i64::MIN, k)]),
                Operator::Lt => Some(vec![(i64::MIN, k.saturating_sub(step))]),
                Operator::GtEq => Some(vec![(k, i64::MAX)]),
                Operator::Gt => Some(vec![(k.saturating_add(step), i64::MAX)]),
                _ => None,
            }
        }
        Expr::InList(l) if !l.negated && bare_column(&l.expr, column) => {
            l.list.iter().map(|e| key(e).map(|k| (k, k))).collect()
        }
        Expr::Between(b) if !b.negated && bare_column(&b.expr, column) => {
            Some(vec![(key(&b.low)?, key(&b.high)?)])
        }
        _ => None,
    }
}

fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(alo, ahi) in a {
        for &(blo, bhi) in b {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out
}

/// The positions (in `layout.shards`) a scan with `filters` must read.
pub fn prune(layout: &TableLayout, filters: &[Expr], ty: &DataType) -> Vec<usize> {
    let Some(column) = layout.column() else {
        return (0..layout.shards.len()).collect();
    };
    let mut allowed = vec![(i64::MIN, i64::MAX)];
    for f in filters {
        if let Some(spans) = spans_of(f, column, ty) {
            allowed = intersect(&allowed, &spans);
        }
    }
    layout
        .shards
        .iter()
        .enumerate()
        .filter(|(_, s)| allowed.iter().any(|&(lo, hi)| s.min <= hi && lo < s.max))
        .map(|(i, _)| i)
        .collect()
}

fn interval_and_factor(layout: &TableLayout) -> Option<(i64, u32)> {
    match layout.info.kind {
        TableKind::Range {
            interval: Some(i),
            replication_factor,
            ..
        } => Some((i, replication_factor)),
        _ => None,
    }
}

/// The starts of the ranges `keys` need that have no shard yet.
fn missing(layout: &TableLayout, keys: &[Option<i64>], interval: i64) -> BTreeSet<i64> {
    keys.iter()
        .flatten()
        .filter(|&&k| !layout.shards.iter().any(|s| s.min <= k && k < s.max))
        .map(|&k| bucket(k, interval).0)
        .collect()
}

/// Creates the shards that rows of `batches` need and do not have yet; the
/// layout to route them with when anything changed. `column` is the range
/// column's position in the batches.
pub async fn ensure_shards(
    cluster: &Cluster,
    shell: &TableMeta,
    layout: &TableLayout,
    column: usize,
    batches: &[RecordBatch],
) -> Result<Option<TableLayout>, SqlError> {
    let Some((interval, rf)) = interval_and_factor(layout) else {
        return Ok(None);
    };
    let mut all = Vec::new();
    for b in batches {
        all.extend(keys(b.column(column))?);
    }
    if missing(layout, &all, interval).is_empty() {
        // `layout` may show a shard another writer has recorded but not yet
        // created on its workers: that writer holds the lock until it has.
        drop(cluster.range_lock.lock().await);
        return Ok(None);
    }
    // One creator at a time, so concurrent writers never race for a range.
    let _guard = cluster.range_lock.lock().await;
    let fresh = cluster
        .layout(&layout.info.name)
        .ok_or_else(|| SqlError::new("42P01", format!("table {} was dropped", layout.info.name)))?;
    let starts = missing(&fresh, &all, interval);
    if starts.is_empty() {
        return Ok(Some(fresh));
    }
    let first_index = fresh.shards.iter().map(|s| s.index + 1).max().unwrap_or(0);
    let shards: Vec<ShardSpec> = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| ShardSpec {
            index: first_index + i as u32,
            min: start,
            max: bucket(start, interval).1,
        })
        .collect();
    let placements = plan_placements(&cluster.snapshot(), first_index, shards.len() as u32, rf)
        .map_err(|e| SqlError::new("55000", e.to_string()))?;
    let MetaResponse::ShardsAdded { shard_ids, .. } = cluster
        .propose(
            MetaCommand::AddRangeShards {
                table_id: fresh.table_id,
                shards,
                placements,
            },
            "55000",
        )
        .await?
    else {
        return Err(meta_err("unexpected answer to adding range shards"));
    };
    let grown = cluster
        .layout(&layout.info.name)
        .ok_or_else(|| meta_err("the table is missing from the catalogue"))?;
    let new: BTreeSet<ShardId> = shard_ids.into_iter().collect();
    let created: Vec<_> = grown
        .shards
        .iter()
        .filter(|s| new.contains(&s.shard_id))
        .cloned()
        .collect();
    tracing::info!(table = %layout.info.name, shards = created.len(), "created range shards");
    if let Err(e) =
        super::ddl::create_shard_tables(cluster, shell, &grown.info.name, &created).await
    {
        let _ = cluster
            .propose(
                MetaCommand::DropShards {
                    table_id: grown.table_id,
                    shard_ids: new.into_iter().collect(),
                },
                "XX000",
            )
            .await;
        super::ddl::drop_shard_tables(cluster, &grown.info.name, &created).await;
        return Err(e);
    }
    Ok(Some(grown))
}

/// Drops the shards of range table `layout` whose whole range lies before
/// `older_than` (text of a value of the column's type `ty`); returns how
/// many were dropped.
pub async fn drop_older(
    cluster: &Cluster,
    layout: &TableLayout,
    older_than: &str,
    ty: &DataType,
) -> Result<usize, SqlError> {
    if !matches!(layout.info.kind, TableKind::Range { .. }) {
        return Err(SqlError::new(
            "0A000",
            format!("table \"{}\" is not range-distributed", layout.info.name),
        ));
    }
    let text: ArrayRef = Arc::new(StringArray::from(vec![older_than]));
    let limit = cast(&text, ty)
        .ok()
        .filter(|a| a.null_count() == 0)
        .and_then(|a| keys(&a).ok())
        .and_then(|k| k.first().copied().flatten())
        .ok_or_else(|| {
            SqlError::new(
                "22007",
                format!("invalid value \"{older_than}\" for a column of type {ty}"),
            )
        })?;
    let old: Vec<_> = layout
        .shards
        .iter()
        .filter(|s| s.max <= limit)
        .cloned()
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    cluster
        .propose(
            MetaCommand::DropShards {
                table_id: layout.table_id,
                shard_ids: old.iter().map(|s| s.shard_id).collect(),
            },
            "55000",
        )
        .await?;
    super::ddl::drop_shard_tables(cluster, &layout.info.name, &old).await;
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, TimestampMicrosecondArray};

    const TS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

    #[test]
    fn intervals_are_in_the_column_units() {
        assert_eq!(parse_interval("1 day", &TS).unwrap(), 86_400_000_000);
        assert_eq!(parse_interval("6 hours", &TS).unwrap(), 21_600_000_000);
        assert_eq!(parse_interval("7 days", &DataType::Date32).unwrap(), 7);
        assert_eq!(parse_interval("1000", &DataType::Int64).unwrap(), 1000);
        assert!(parse_interval("1 month", &TS).is_err());
        assert!(parse_interval("12 hours", &DataType::Date32).is_err());
        assert!(parse_interval("0", &DataType::Int32).is_err());
        assert!(parse_interval("soon", &TS).is_err());
    }

    #[test]
    fn keys_and_buckets() {
        let d: ArrayRef = Arc::new(Date32Array::from(vec![Some(19_000), None]));
        assert_eq!(keys(&d).unwrap(), vec![Some(19_000), None]);
        let t: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![5]));
        assert_eq!(keys(&t).unwrap(), vec![Some(5)]);
        assert_eq!(bucket(5, 10), (0, 10));
        assert_eq!(bucket(-1, 10), (-10, 0));
        assert_eq!(bucket(10, 10), (10, 20));
        assert_eq!(render(19_000, &DataType::Date32), "2022-01-08");
        assert_eq!(render(0, &TS), "1970-01-01 00:00:00");
    }

    #[test]
    fn spans_intersect() {
        use datafusion::prelude::{col, lit};
        let ty = DataType::Int64;
        let f1 = col("k").gt_eq(lit(10i64));
        let f2 = lit(20i64).gt(col("k"));
        let a = spans_of(&f1, "k", &ty).unwrap();
        let b = spans_of(&f2, "k", &ty).unwrap();
        assert_eq!(intersect(&a, &b), vec![(10, 19)]);
        // another type than the column's: kept inclusive
        let f3 = col("k").lt(lit(20i32));
        assert_eq!(spans_of(&f3, "k", &ty).unwrap(), vec![(i64::MIN, 20)]);
        let inl = col("k").in_list(vec![lit(1i64), lit(30i64)], false);
        assert_eq!(spans_of(&inl, "k", &ty).unwrap(), vec![(1, 1), (30, 30)]);
        assert!(spans_of(&col("j").eq(lit(1i64)), "k", &ty).is_none());
        let or = col("k").eq(lit(3i64)).or(col("k").eq(lit(9i64)));
        assert_eq!(spans_of(&or, "k", &ty).unwrap(), vec![(3, 3), (9, 9)]);
        let half = col("k").eq(lit(3i64)).or(col("j").eq(lit(9i64)));
        assert!(spans_of(&half, "k", &ty).is_none());
        assert!(spans_of(&col("k").not_eq(lit(1i64)), "k", &ty).is_none());
    }
}
