//! Hash indexes over unique keys (PRIMARY KEY and UNIQUE).
//!
//! An index maps the encoded key (Arrow row format, so multi-column keys and
//! every type compare by bytes) to the row ids that ever carried it, oldest
//! first. It is not versioned: readers check each candidate row id against
//! their own snapshot, so an index entry for a row that a snapshot cannot see is
//! harmless. Entries are added when a commit is applied; entries for rows
//! that were physically removed are dropped at compaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use parking_lot::RwLock;

use super::table::{rowids, TableMeta};
use super::StorageError;

/// One unique key's index.
#[derive(Debug)]
pub struct KeyIndex {
    pub columns: Vec<usize>,
    converter: RowConverter,
    map: RwLock<HashMap<Box<[u8]>, Vec<u64>>>,
    /// Snapshots older than this LSN may miss pruned entries and must not
    /// use the index.
    pruned_lsn: AtomicU64,
}

impl KeyIndex {
    pub fn new(meta: &TableMeta, columns: Vec<usize>) -> Result<Self, StorageError> {
        let fields = columns
            .iter()
            .map(|&i| SortField::new(meta.columns[i].ty.arrow_type()))
            .collect();
        Ok(KeyIndex {
            columns,
            converter: RowConverter::new(fields)?,
            map: RwLock::new(HashMap::new()),
            pruned_lsn: AtomicU64::new(0),
        })
    }

    /// Encodes the key columns of `batch` (user column positions).
    pub fn encode(&self, batch: &RecordBatch) -> Result<Rows, StorageError> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// Encodes key values given as one array per key column.
    pub fn encode_arrays(&self, cols: &[ArrayRef]) -> Result<Rows, StorageError> {
        Ok(self.converter.convert_columns(cols)?)
    }

    /// The newest row id that had this key and that `visible` accepts.
    ///
    /// A key is unique, so a snapshot sees at most one live row with it:
    /// asking from the newest entry back stops at that row at once, however
    /// many older versions of it (each UPDATE adds one) wait for the next
    /// checkpoint to prune them. A key whose row is gone still walks them
    /// all.
    pub fn newest(&self, key: &[u8], mut visible: impl FnMut(u64) -> bool) -> Option<u64> {
        let map = self.map.read();
        map.get(key)?.iter().rev().copied().find(|&r| visible(r))
    }

    /// Adds every row of a stored batch.
    pub fn add_batch(&self, batch: &RecordBatch) -> Result<(), StorageError> {
        let rows = self.encode(batch)?;
        let ids = rowids(batch)?;
        let mut map = self.map.write();
        for (i, row) in rows.iter().enumerate() {
            map.entry(row.as_ref().into())
                .or_default()
                .push(ids.value(i));
        }
        Ok(())
    }

    /// Keeps only the row ids for which `keep` is true; snapshots older than
    /// `lsn` stop using the index.
    pub fn prune(&self, lsn: u64, keep: impl Fn(u64) -> bool) {
        let mut map = self.map.write();
        self.pruned_lsn.fetch_max(lsn, Ordering::SeqCst);
        map.retain(|_, ids| {
            ids.retain(|&r| keep(r));
            !ids.is_empty()
        });
    }

    /// True when a snapshot at `lsn` may use this index.
    pub fn usable_at(&self, lsn: u64) -> bool {
        lsn >= self.pruned_lsn.load(Ordering::SeqCst)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// True when a key column is NULL in this row (NULLs never conflict).
    pub fn has_null(&self, batch: &RecordBatch, row: usize) -> bool {
        self.columns.iter().any(|&c| batch.column(c).is_null(row))
    }
}

/// All unique indexes of one table.
#[derive(Debug, Default)]
pub struct TableIndexes {
    pub keys: Vec<KeyIndex>,
}

impl TableIndexes {
    pub fn new(meta: &TableMeta) -> Result<Self, StorageError> {
        let keys = meta
            .unique_keys()
            .into_iter()
            .map(|cols| KeyIndex::new(meta, cols))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableIndexes { keys })
    }

    pub fn add_batch(&self, batch: &RecordBatch) -> Result<(), StorageError> {
        for k in &self.keys {
            k.add_batch(batch)?;
        }
        Ok(())
    }
}
