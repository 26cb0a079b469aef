//! Table metadata and the in-memory, immutable representation of a table's
//! rows at one version.
//!
//! Every stored row carries a hidden `__rowid` (UInt64, last column) that is
//! assigned at commit in increasing order, so row ids grow along the list of
//! segments and inside each segment. Deletes, the WAL and the unique-key
//! index all name rows by row id, which stays stable across flushes and
//! compactions.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::StorageError;

/// Name of the hidden row-id column.
pub const ROWID: &str = "__rowid";
/// Rows per batch inside a segment.
pub const BATCH_ROWS: usize = 8192;
/// A commit's rows join the table's last segment while it is memory-only
/// and holds fewer rows than this (see [`Segment::appended`]).
pub const TAIL_ROWS: usize = BATCH_ROWS;
/// A batch this small at a segment's end takes the next rows into itself.
const SMALL_BATCH: usize = 1024;

/// A column type as SQL sees it; each maps to one Arrow type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p,s)`: `Decimal128`, or `Decimal256` above 38 digits.
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// Unconstrained `numeric`: `Decimal256(76,16)` (see
    /// [`quiver_copy::UNCONSTRAINED_PRECISION`]).
    NumericAny,
    Text,
    Varchar(Option<u32>),
    Char(Option<u32>),
    Date,
    Timestamp,
    Timestamptz,
    Interval,
    Bytea,
    Json,
}

impl SqlType {
    /// The Arrow type rows of this column are stored as.
    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Bool => DataType::Boolean,
            SqlType::Int2 => DataType::Int16,
            SqlType::Int4 => DataType::Int32,
            SqlType::Int8 => DataType::Int64,
            SqlType::Float4 => DataType::Float32,
            SqlType::Float8 => DataType::Float64,
            SqlType::Numeric { precision, scale } if *precision > 38 => {
                DataType::Decimal256(*precision, *scale)
            }
            SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::NumericAny => DataType::Decimal256(
                quiver_copy::UNCONSTRAINED_PRECISION,
                quiver_copy::UNCONSTRAINED_SCALE,
            ),
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) | SqlType::Json => {
                DataType::Utf8
            }
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::Timestamptz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            }
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            SqlType::Bytea => DataType::Binary,
        }
    }

    /// The PostgreSQL spelling, for catalogs and `\d`.
    pub fn pg_name(&self) -> String {
        match self {
            SqlType::Bool => "boolean".into(),
            SqlType::Int2 => "smallint".into(),
            SqlType::Int4 => "integer".into(),
            SqlType::Int8 => "bigint".into(),
            SqlType::Float4 => "real".into(),
            SqlType::Float8 => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::NumericAny => "numeric".into(),
            SqlType::Text => "text".into(),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Char(None) => "character(1)".into(),
            SqlType::Char(Some(n)) => format!("character({n})"),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::Timestamptz => "timestamp with time zone".into(),
            SqlType::Interval => "interval".into(),
            SqlType::Bytea => "bytea".into(),
            SqlType::Json => "json".into(),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// Default expression as SQL text, evaluated at insert time.
    pub default: Option<String>,
}

/// A table's definition, persisted in the manifest and the WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    /// Column positions of the primary key, if any.
    pub primary_key: Option<Vec<usize>>,
    /// Column positions of each UNIQUE constraint (besides the primary key).
    pub uniques: Vec<Vec<usize>>,
}

/// Field metadata key naming the PostgreSQL type where Arrow's type alone
/// does not tell (varchar, char, json all store as Utf8).
pub const PG_TYPE_KEY: &str = "quiver.pg_type";
/// Field metadata key holding `n` of a `character(n)` column (results are
/// blank-padded to it, see `sql/chars.rs`).
pub const CHAR_LENGTH_KEY: &str = "quiver.char_length";

impl ColumnMeta {
    /// The Arrow field of this column.
    pub fn field(&self) -> Field {
        let f = Field::new(&self.name, self.ty.arrow_type(), self.nullable);
        let tag = match self.ty {
            SqlType::Varchar(_) => "varchar",
            SqlType::Char(_) => "bpchar",
            SqlType::Json => "json",
            _ => return f,
        };
        let mut md = std::collections::HashMap::from([(PG_TYPE_KEY.to_string(), tag.to_string())]);
        if let SqlType::Char(Some(n)) = self.ty {
            md.insert(CHAR_LENGTH_KEY.to_string(), n.to_string());
        }
        f.with_metadata(md)
    }
}

impl TableMeta {
    /// The user-visible Arrow schema (no row id).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| c.field()).collect::<Vec<_>>(),
        ))
    }

    /// The stored schema: user columns then `__rowid`.
    pub fn stored_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self.columns.iter().map(|c| c.field()).collect();
        fields.push(Field::new(ROWID, DataType::UInt64, false));
        Arc::new(Schema::new(fields))
    }

    /// Every unique key (primary key first) as column positions.
    pub fn unique_keys(&self) -> Vec<Vec<usize>> {
        let mut keys = Vec::new();
        if let Some(pk) = &self.primary_key {
            keys.push(pk.clone());
        }
        keys.extend(self.uniques.iter().cloned());
        keys
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// An immutable run of rows with increasing row ids, plus which are deleted.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Stored batches (user columns + `__rowid`).
    pub batches: Vec<RecordBatch>,
    /// First row id of each batch, for binary search.
    pub first_rowids: Vec<u64>,
    /// Per batch: `None` when every row is live, else a live mask.
    pub live: Vec<Option<BooleanBuffer>>,
    /// Id of the Parquet part that holds these rows on disk, if flushed.
    pub part: Option<u64>,
    pub rows: usize,
    pub live_rows: usize,
}

impl Segment {
    /// Builds a segment from stored batches whose row ids are increasing.
    pub fn new(batches: Vec<RecordBatch>, part: Option<u64>) -> Result<Self, StorageError> {
        let mut first_rowids = Vec::with_capacity(batches.len());
        let mut rows = 0;
        let mut kept = Vec::with_capacity(batches.len());
        for b in batches {
            if b.num_rows() == 0 {
                continue;
            }
            let ids = rowids(&b)?;
            first_rowids.push(ids.value(0));
            rows += b.num_rows();
            kept.push(b);
        }
        let live = vec![None; kept.len()];
        Ok(Segment {
            batches: kept,
            first_rowids,
            live,
            part,
            rows,
            live_rows: rows,
        })
    }

    pub fn first_rowid(&self) -> Option<u64> {
        self.first_rowids.first().copied()
    }

    pub fn last_rowid(&self) -> Option<u64> {
        let b = self.batches.last()?;
        let ids = rowids(b).ok()?;
        Some(ids.value(ids.len() - 1))
    }

    /// Finds `(batch, row)` holding `rowid`.
    pub fn locate(&self, rowid: u64) -> Option<(usize, usize)> {
        let bi = match self.first_rowids.binary_search(&rowid) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let ids = rowids(&self.batches[bi]).ok()?;
        let ri = ids.values().binary_search(&rowid).ok()?;
        Some((bi, ri))
    }

    pub fn is_live(&self, batch: usize, row: usize) -> bool {
        match &self.live[batch] {
            None => true,
            Some(mask) => mask.value(row),
        }
    }

    /// A copy with `batches` (stored, row ids above this segment's) added at
    /// the end; rows that fit are merged into a small last batch. Small
    /// commits (an UPDATE of one row) so grow one segment and one batch
    /// instead of adding a segment each: a table's segment list, which
    /// every commit copies, stays short between checkpoints.
    pub fn appended(&self, batches: &[RecordBatch]) -> Result<Segment, StorageError> {
        let mut seg = self.clone();
        for b in batches {
            let n = b.num_rows();
            if n == 0 {
                continue;
            }
            let merge = seg
                .batches
                .last()
                .filter(|l| l.num_rows() + n <= SMALL_BATCH && l.schema() == b.schema())
                .cloned();
            match (merge, seg.live.pop()) {
                (Some(last), Some(mask)) => {
                    seg.batches.pop();
                    seg.batches
                        .push(concat_batches(&last.schema(), [&last, b])?);
                    seg.live.push(mask.map(|m| {
                        let mut v: Vec<bool> = m.iter().collect();
                        v.resize(v.len() + n, true);
                        BooleanBuffer::from(v)
                    }));
                }
                (_, mask) => {
                    if let Some(m) = mask {
                        seg.live.push(m);
                    }
                    seg.first_rowids.push(rowids(b)?.value(0));
                    seg.batches.push(b.clone());
                    seg.live.push(None);
                }
            }
            seg.rows += n;
            seg.live_rows += n;
        }
        Ok(seg)
    }

    /// The rows after `rowid` (with their deletions), or `None` when there
    /// are none.
    pub fn after(&self, rowid: u64) -> Result<Option<Segment>, StorageError> {
        let mut batches = Vec::new();
        let mut live = Vec::new();
        for (b, m) in self.batches.iter().zip(&self.live) {
            let start = rowids(b)?.values().partition_point(|&r| r <= rowid);
            let len = b.num_rows() - start;
            if len > 0 {
                batches.push(b.slice(start, len));
                live.push(m.as_ref().map(|m| m.slice(start, len)));
            }
        }
        if batches.is_empty() {
            return Ok(None);
        }
        let mut seg = Segment::new(batches, None)?;
        seg.live_rows = live
            .iter()
            .zip(&seg.batches)
            .map(|(m, b)| m.as_ref().map_or(b.num_rows(), |m| m.count_set_bits()))
            .sum();
        seg.live = live;
        Ok(Some(seg))
    }

    /// A copy with the given `(batch, row)` positions marked deleted.
    pub fn with_deleted(&self, positions: &[(usize, usize)]) -> Segment {
        let mut seg = self.clone();
        let mut masks: Vec<Option<Vec<bool>>> = vec![None; seg.batches.len()];
        for &(bi, ri) in positions {
            let mask = masks[bi].get_or_insert_with(|| {
                let n = seg.batches[bi].num_rows();
                match &seg.live[bi] {
                    None => vec![true; n],
                    Some(m) => m.iter().collect(),
                }
            });
            if mask[ri] {
                mask[ri] = false;
                seg.live_rows -= 1;
            }
        }
        for (bi, m) in masks.into_iter().enumerate() {
            if let Some(m) = m {
                seg.live[bi] = Some(BooleanBuffer::from(m));
            }
        }
        seg
    }

    /// Live rows of each batch (row ids kept), dropping deleted ones.
    pub fn live_batches(&self) -> Result<Vec<RecordBatch>, StorageError> {
        let mut out = Vec::with_capacity(self.batches.len());
        for (b, mask) in self.batches.iter().zip(&self.live) {
            match mask {
                None => out.push(b.clone()),
                Some(m) => {
                    let f = filter_record_batch(b, &BooleanArray::new(m.clone(), None))?;
                    if f.num_rows() > 0 {
                        out.push(f);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deleted row ids, for persisting deletion files.
    pub fn deleted_rowids(&self) -> Result<Vec<u64>, StorageError> {
        let mut out = Vec::new();
        for (b, mask) in self.batches.iter().zip(&self.live) {
            if let Some(m) = mask {
                let ids = rowids(b)?;
                for (i, live) in m.iter().enumerate() {
                    if !live {
                        out.push(ids.value(i));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The `__rowid` column of a stored batch.
pub fn rowids(batch: &RecordBatch) -> Result<&UInt64Array, StorageError> {
    batch
        .columns()
        .last()
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or_else(|| StorageError::Corrupt("stored batch without __rowid column".into()))
}

/// Splits `batch` into slices of at most [`BATCH_ROWS`] rows.
pub fn chunk(batch: &RecordBatch) -> Vec<RecordBatch> {
    let n = batch.num_rows();
    if n <= BATCH_ROWS {
        return vec![batch.clone()];
    }
    (0..n)
        .step_by(BATCH_ROWS)
        .map(|off| batch.slice(off, BATCH_ROWS.min(n - off)))
        .collect()
}

/// Appends a `__rowid` column numbered from `first` to a user batch.
pub fn with_rowids(
    batch: &RecordBatch,
    stored: &SchemaRef,
    first: u64,
) -> Result<RecordBatch, StorageError> {
    let n = batch.num_rows() as u64;
    let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(first..first + n));
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols.push(ids);
    Ok(RecordBatch::try_new(stored.clone(), cols)?)
}

/// The rows of one table at one version.
#[derive(Debug, Clone)]
pub struct TableData {
    pub meta: Arc<TableMeta>,
    pub segments: Vec<Arc<Segment>>,
    /// Row id the next committed row gets.
    pub next_rowid: u64,
}

impl TableData {
    pub fn new(meta: Arc<TableMeta>) -> Self {
        TableData {
            meta,
            segments: Vec::new(),
            next_rowid: 1,
        }
    }

    pub fn live_rows(&self) -> usize {
        self.segments.iter().map(|s| s.live_rows).sum()
    }

    /// Finds `(segment, batch, row)` holding `rowid`.
    pub fn locate(&self, rowid: u64) -> Option<(usize, usize, usize)> {
        let si = match self
            .segments
            .binary_search_by_key(&rowid, |s| s.first_rowid().unwrap_or(u64::MAX))
        {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (bi, ri) = self.segments[si].locate(rowid)?;
        Some((si, bi, ri))
    }

    /// True when `rowid` exists and is not deleted.
    pub fn is_live(&self, rowid: u64) -> bool {
        match self.locate(rowid) {
            Some((si, bi, ri)) => self.segments[si].is_live(bi, ri),
            None => false,
        }
    }

    /// The live row with `rowid` as a one-row stored batch.
    pub fn row(&self, rowid: u64) -> Option<RecordBatch> {
        let (si, bi, ri) = self.locate(rowid)?;
        let seg = &self.segments[si];
        if !seg.is_live(bi, ri) {
            return None;
        }
        Some(seg.batches[bi].slice(ri, 1))
    }

    /// All live stored batches.
    pub fn live_batches(&self) -> Result<Vec<RecordBatch>, StorageError> {
        let mut out = Vec::new();
        for s in &self.segments {
            out.extend(s.live_batches()?);
        }
        Ok(out)
    }

    /// Number of null values per column would go here; kept small on purpose.
    pub fn stored_bytes(&self) -> usize {
        self.segments
            .iter()
            .flat_map(|s| s.batches.iter())
            .map(|b| b.get_array_memory_size())
            .sum()
    }
}

/// Checks that no row of `batch` has NULL in a NOT NULL column.
pub fn check_not_null(meta: &TableMeta, batch: &RecordBatch) -> Result<(), StorageError> {
    for (i, col) in meta.columns.iter().enumerate() {
        if !col.nullable {
            if let Some(arr) = batch.columns().get(i) {
                if arr.null_count() > 0 {
                    return Err(StorageError::NotNull {
                        table: meta.name.clone(),
                        column: col.name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The value existing rows take in column `i` of an ALTER TABLE's `fill`
/// (its one row), when there is one and it is not NULL.
pub fn fill_value(fill: Option<&RecordBatch>, i: usize) -> Option<&ArrayRef> {
    fill.and_then(|f| f.columns().get(i))
        .filter(|c| c.is_valid(0))
}

/// The first column an ALTER TABLE adds (`mapping[i]` is `None`) that is
/// NOT NULL and gets no value from `fill`: existing rows would hold NULL.
pub fn unfilled_not_null<'a>(
    meta: &'a TableMeta,
    mapping: &[Option<usize>],
    fill: Option<&RecordBatch>,
) -> Option<&'a ColumnMeta> {
    meta.columns.iter().enumerate().find_map(|(i, c)| {
        (mapping.get(i) == Some(&None) && !c.nullable && fill_value(fill, i).is_none()).then_some(c)
    })
}

/// Rebuilds a stored batch for a new column layout; a new column takes its
/// value from `fill`'s one row, or is NULL.
pub fn remap(
    b: &RecordBatch,
    mapping: &[Option<usize>],
    fill: Option<&RecordBatch>,
    stored: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, StorageError> {
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(mapping.len() + 1);
    for (i, m) in mapping.iter().enumerate() {
        let ty = stored.field(i).data_type();
        cols.push(match (m, fill_value(fill, i)) {
            (Some(old), _) => datafusion::arrow::compute::cast(b.column(*old), ty)?,
            (None, Some(v)) => {
                let v = datafusion::arrow::compute::cast(v, ty)?;
                let first = datafusion::arrow::array::UInt32Array::from(vec![0; n]);
                datafusion::arrow::compute::take(&v, &first, None)?
            }
            (None, None) => datafusion::arrow::array::new_null_array(ty, n),
        });
    }
    cols.push(b.column(b.num_columns() - 1).clone());
    Ok(RecordBatch::try_new(stored.clone(), cols)?)
}
