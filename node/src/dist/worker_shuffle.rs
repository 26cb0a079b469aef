//! A worker's side of a shuffle: map tasks and intermediate results.
//!
//! Step in the flow: the coordinator's [`super::shuffle`] sends each shard a
//! [`ShuffleMap`] action. The worker runs the fragment, splits the rows by
//! the hash of the key columns into one bucket per target worker
//! ([`split`]), and sends every bucket (even an empty one, so its schema is
//! known) with `do_put` to that bucket's worker. There the batches become
//! (part of) an in-memory table `__shuffle_<qid>_<side>_<bucket>`
//! ([`Intermediates`]), which the reduce fragment (a join over the two
//! sides of one bucket) reads by name. The coordinator drops a query's
//! intermediates when it is done with them; leftovers of a query that never
//! finished are dropped after [`TTL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::MemTable;
use parking_lot::Mutex;

use super::client::WorkerClients;
use super::hash::hash_array;
use super::wire::{PutCommand, ShuffleMap};
use crate::sql::{Database, SqlError};

/// How long an intermediate result may outlive its query.
pub const TTL: Duration = Duration::from_secs(600);

/// Prefix of every intermediate table's name.
pub const PREFIX: &str = "__shuffle_";

/// Name of the intermediate table of bucket `bucket` of one side of a shuffle.
pub fn intermediate_name(qid: &str, side: &str, bucket: usize) -> String {
    format!("{PREFIX}{qid}_{side}_{bucket}")
}

struct Entry {
    schema: SchemaRef,
    /// One partition per sender.
    parts: Vec<Vec<RecordBatch>>,
    created: Instant,
}

/// The intermediate results held by this worker, readable by name in SQL.
pub struct Intermediates {
    db: Arc<Database>,
    entries: Mutex<HashMap<String, Entry>>,
}

fn internal(e: impl std::fmt::Display) -> SqlError {
    SqlError::new("XX000", e.to_string())
}

impl Intermediates {
    pub fn new(db: Arc<Database>) -> Self {
        Intermediates {
            db,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Adds one sender's rows to intermediate `name`.
    pub fn add(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(), SqlError> {
        if !name.starts_with(PREFIX) {
            return Err(SqlError::new(
                "42602",
                format!("\"{name}\" is not an intermediate result's name"),
            ));
        }
        let mut entries = self.entries.lock();
        self.purge_expired(&mut entries);
        let entry = entries.entry(name.to_owned()).or_insert_with(|| Entry {
            schema: Arc::new(Schema::new(schema.fields().clone())),
            parts: Vec::new(),
            created: Instant::now(),
        });
        let mut part = Vec::with_capacity(batches.len());
        for b in batches {
            let cols = super::scan::cast_columns(&b, &entry.schema).map_err(internal)?;
            part.push(RecordBatch::try_new(entry.schema.clone(), cols).map_err(internal)?);
        }
        entry.parts.push(part);
        let table = MemTable::try_new(entry.schema.clone(), entry.parts.clone())?;
        self.db.put_external(name, Arc::new(table));
        Ok(())
    }

    /// Forgets every intermediate of shuffle `qid`.
    pub fn drop_query(&self, qid: &str) {
        let prefix = format!("{PREFIX}{qid}_");
        let mut entries = self.entries.lock();
        let names: Vec<String> = entries
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        for n in names {
            entries.remove(&n);
            self.db.remove_external(&n);
        }
    }

    fn purge_expired(&self, entries: &mut HashMap<String, Entry>) {
        let old: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.created.elapsed() > TTL)
            .map(|(n, _)| n.clone())
            .collect();
        for n in old {
            tracing::warn!(table = %n, "dropping an intermediate result its query left behind");
            entries.remove(&n);
            self.db.remove_external(&n);
        }
    }
}

/// Splits `batch` into `n` buckets by the hash of its `keys` columns.
pub fn split(
    batch: &RecordBatch,
    keys: &[usize],
    n: usize,
) -> Result<Vec<Option<RecordBatch>>, SqlError> {
    let rows = batch.num_rows();
    let mut h = vec![0u64; rows];
    for &k in keys {
        let col = batch
            .columns()
            .get(k)
            .ok_or_else(|| internal(format!("no key column {k}")))?;
        for (acc, x) in h.iter_mut().zip(hash_array(col).map_err(internal)?) {
            *acc = acc
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add(u64::from(x as u32));
        }
    }
    let mut per: Vec<Vec<u32>> = vec![Vec::new(); n.max(1)];
    for (row, x) in h.into_iter().enumerate() {
        per[(x % n.max(1) as u64) as usize].push(row as u32);
    }
    per.into_iter()
        .map(|rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            take_record_batch(batch, &UInt32Array::from(rows))
                .map(Some)
                .map_err(internal)
        })
        .collect()
}

/// Sends the result of a map task, split into buckets, to their workers.
pub async fn send_buckets(
    clients: &WorkerClients,
    task: &ShuffleMap,
    batches: Vec<RecordBatch>,
) -> Result<u64, SqlError> {
    let schema = Arc::new(
        Schema::try_from(arrow_flight::IpcMessage(task.schema.clone().into())).map_err(internal)?,
    );
    let n = task.targets.len();
    let mut per: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    let mut rows = 0u64;
    for b in &batches {
        rows += b.num_rows() as u64;
        for (i, part) in split(b, &task.keys, n)?.into_iter().enumerate() {
            if let Some(p) = part {
                per[i].push(p);
            }
        }
    }
    let calls = per.into_iter().enumerate().map(|(bucket, parts)| {
        let cmd = PutCommand {
            gid: String::new(),
            table: intermediate_name(&task.qid, &task.side, bucket),
            intermediate: true,
        };
        let addr = task.targets[bucket].clone();
        let schema = schema.clone();
        async move {
            clients
                .put_with_schema(&addr, &cmd, Some(schema), parts)
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn equal_keys_meet_in_one_bucket() {
        let a = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)])),
            vec![Arc::new(Int32Array::from((0..100).collect::<Vec<_>>()))],
        )
        .unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(
                (0..100).rev().collect::<Vec<i64>>(),
            ))],
        )
        .unwrap();
        let bucket_of = |batch: &RecordBatch| {
            let mut m = std::collections::BTreeMap::new();
            for (i, part) in split(batch, &[0], 3).unwrap().into_iter().enumerate() {
                let Some(p) = part else { continue };
                let col = datafusion::arrow::compute::cast(p.column(0), &DataType::Int64).unwrap();
                let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
                for v in col.values() {
                    m.insert(*v, i);
                }
            }
            m
        };
        let (ma, mb) = (bucket_of(&a), bucket_of(&b));
        assert_eq!(ma.len(), 100);
        assert_eq!(ma, mb);
        // every bucket gets some of 100 keys
        assert_eq!(
            ma.values().collect::<std::collections::BTreeSet<_>>().len(),
            3
        );
    }
}
