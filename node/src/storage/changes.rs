//! The changes of one table between two versions, and applying them to a
//! copy of the table: what a shard move ships (ADR 0013).
//!
//! Step in the flow: the source worker of a move computes
//! [`changes_since`] between the version it shipped last (none, for the
//! snapshot copy) and a newer one; the target applies them with
//! [`Engine::apply_changes`]. Rows keep their row ids on both sides, so a
//! later delete on the source names the same row on the target. Row ids
//! only grow and survive checkpoints and compaction, so the changes are
//! exact: rows with an id at or above the old `next_rowid` that are live
//! now were inserted, and rows live then and not now were deleted.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

use super::codec::Op;
use super::engine::{DbVersion, Engine};
use super::table::{rowids, TableData};
use super::StorageError;

/// What changed in a table: deleted row ids and inserted stored rows
/// (user columns and `__rowid`), in row id order.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub deleted: Vec<u64>,
    pub inserted: Vec<RecordBatch>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty() && self.inserted.iter().all(|b| b.num_rows() == 0)
    }

    /// Rows inserted.
    pub fn inserted_rows(&self) -> usize {
        self.inserted.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The changes that turn `old` (`None`: an empty table) into `new`.
pub fn changes_since(old: Option<&TableData>, new: &TableData) -> Result<Changes, StorageError> {
    let from = old.map_or(0, |o| o.next_rowid);
    let mut deleted = Vec::new();
    if let Some(old) = old {
        for seg in &old.segments {
            // A segment both versions share unchanged holds no change.
            if new.segments.iter().any(|s| Arc::ptr_eq(s, seg)) {
                continue;
            }
            for (bi, b) in seg.batches.iter().enumerate() {
                let ids = rowids(b)?;
                for ri in 0..b.num_rows() {
                    let id = ids.value(ri);
                    if seg.is_live(bi, ri) && !new.is_live(id) {
                        deleted.push(id);
                    }
                }
            }
        }
    }
    let mut inserted = Vec::new();
    for seg in &new.segments {
        if seg.last_rowid().is_none_or(|last| last < from) {
            continue;
        }
        for (bi, b) in seg.batches.iter().enumerate() {
            let ids = rowids(b)?;
            let keep: BooleanArray = (0..b.num_rows())
                .map(|ri| Some(ids.value(ri) >= from && seg.is_live(bi, ri)))
                .collect();
            let kept = filter_record_batch(b, &keep)?;
            if kept.num_rows() > 0 {
                inserted.push(kept);
            }
        }
    }
    deleted.sort_unstable();
    Ok(Changes { deleted, inserted })
}

fn diverged(table: &str, what: String) -> StorageError {
    StorageError::Corrupt(format!(
        "copy of table \"{table}\" diverged from its source: {what}"
    ))
}

impl Engine {
    /// Applies `changes` (from [`changes_since`] on another node) to table
    /// `table` in one commit, keeping the row ids. Refused, changing
    /// nothing, when they do not fit: a deleted row that is not live here,
    /// or an inserted row id below the table's next one.
    pub async fn apply_changes(
        &self,
        table: &str,
        changes: &Changes,
    ) -> Result<Arc<DbVersion>, StorageError> {
        self.commit_with(|head, _| {
            let id = *head
                .names
                .get(table)
                .ok_or_else(|| StorageError::UndefinedTable(table.to_owned()))?;
            let t = head
                .tables
                .get(&id)
                .ok_or_else(|| StorageError::UndefinedTable(table.to_owned()))?;
            let mut ops = Vec::new();
            if let Some(r) = changes.deleted.iter().find(|r| !t.is_live(**r)) {
                return Err(diverged(table, format!("row {r} is not live here")));
            }
            if !changes.deleted.is_empty() {
                ops.push(Op::Delete {
                    table: id,
                    rowids: changes.deleted.clone(),
                });
            }
            let stored = t.meta.stored_schema();
            let mut next = t.next_rowid;
            for b in &changes.inserted {
                if b.schema().fields() != stored.fields() {
                    return Err(diverged(table, "the rows have another shape".into()));
                }
                for r in rowids(b)?.values().iter() {
                    if *r < next {
                        return Err(diverged(table, format!("row {r} is below row {next}")));
                    }
                    next = r + 1;
                }
            }
            let batches: Vec<RecordBatch> = changes
                .inserted
                .iter()
                .filter(|b| b.num_rows() > 0)
                .cloned()
                .collect();
            if !batches.is_empty() {
                ops.push(Op::Insert {
                    table: id,
                    batches,
                    staged: None,
                });
            }
            Ok(ops)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use datafusion::arrow::array::{Array, Int32Array, StringArray};

    use super::*;
    use crate::storage::engine::{EngineOptions, TableWrites, WriteSet};
    use crate::storage::tests::meta;

    async fn write(e: &Engine, insert: &[i32], delete: &[i32]) {
        let snap = e.snapshot();
        let t = snap.table_by_name("t").unwrap();
        let mut deletes = BTreeSet::new();
        for b in t.live_batches().unwrap() {
            let ids = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            let rows = rowids(&b).unwrap();
            for i in 0..b.num_rows() {
                if delete.contains(&ids.value(i)) {
                    deletes.insert(rows.value(i));
                }
            }
        }
        let batch = RecordBatch::try_new(
            t.meta.schema(),
            vec![
                Arc::new(Int32Array::from(insert.to_vec())),
                Arc::new(StringArray::from(
                    insert.iter().map(|i| format!("v{i}")).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        let mut ws = WriteSet::default();
        ws.tables.insert(
            t.meta.id,
            TableWrites {
                inserts: if insert.is_empty() {
                    vec![]
                } else {
                    vec![batch]
                },
                deletes,
                ..Default::default()
            },
        );
        e.commit(ws).await.unwrap();
    }

    /// Live (row id, id) pairs of table `t`, sorted.
    fn rows(e: &Engine) -> Vec<(u64, i32)> {
        let snap = e.snapshot();
        let mut out = Vec::new();
        for b in snap.table_by_name("t").unwrap().live_batches().unwrap() {
            let ids = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            let r = rowids(&b).unwrap();
            out.extend((0..b.num_rows()).map(|i| (r.value(i), ids.value(i))));
        }
        out.sort();
        out
    }

    fn table(v: &DbVersion) -> TableData {
        (**v.table_by_name("t").unwrap()).clone()
    }

    #[tokio::test]
    async fn a_copy_plus_changes_equals_the_source_and_survives_a_restart() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Engine::open(src_dir.path(), EngineOptions::default()).unwrap();
        src.create_table(meta(), false).await.unwrap();
        write(&src, &[1, 2, 3, 4], &[]).await;
        write(&src, &[5], &[2]).await;
        let v1 = src.snapshot();
        {
            let dst = Engine::open(dst_dir.path(), EngineOptions::default()).unwrap();
            dst.create_table(meta(), false).await.unwrap();
            // the snapshot copy
            let copy = changes_since(None, &table(&v1)).unwrap();
            assert_eq!((copy.inserted_rows(), copy.deleted.len()), (4, 0));
            dst.apply_changes("t", &copy).await.unwrap();
            assert_eq!(rows(&dst), rows(&src));
            // writes after the snapshot, a checkpoint among them
            write(&src, &[6, 7], &[1, 5]).await;
            let s2 = src.clone();
            tokio::task::spawn_blocking(move || s2.checkpoint())
                .await
                .unwrap()
                .unwrap();
            write(&src, &[8], &[6]).await;
            let delta = changes_since(Some(&table(&v1)), &table(&src.snapshot())).unwrap();
            assert_eq!(delta.inserted_rows(), 2, "7 and 8 (6 came and went)");
            assert_eq!(delta.deleted.len(), 2, "1 and 5");
            dst.apply_changes("t", &delta).await.unwrap();
            assert_eq!(rows(&dst), rows(&src));
            // nothing changed: nothing to ship
            let v = src.snapshot();
            assert!(changes_since(Some(&table(&v)), &table(&v))
                .unwrap()
                .is_empty());
            // the same changes twice do not fit any more, and change nothing
            let before = rows(&dst);
            assert!(dst.apply_changes("t", &delta).await.is_err());
            assert_eq!(rows(&dst), before);
        }
        let dst = Engine::open(dst_dir.path(), EngineOptions::default()).unwrap();
        assert_eq!(
            rows(&dst),
            rows(&src),
            "the copy is durable, row ids and all"
        );
        // and the copy goes on taking rows after the source's last id
        let next = table(&dst.snapshot()).next_rowid;
        assert_eq!(next, table(&src.snapshot()).next_rowid);
    }
}
