//! Immutable Parquet parts, deletion files and the manifest that names them.
//!
//! Layout under the data directory:
//! - `MANIFEST`: JSON, replaced atomically (write temp, fsync, rename, fsync
//!   directory). It is the single source of truth for what is on disk: the
//!   catalog, every table's parts and deletion files, and the LSN up to which
//!   the WAL has been folded in (`checkpoint_lsn`).
//! - `tables/<table-id>/p<part-id>.parquet`: rows with their `__rowid`.
//! - `tables/<table-id>/p<part-id>.<lsn>.del`: deleted row ids of that part
//!   as of checkpoint `lsn` (little-endian u64s followed by a crc32).
//!
//! A part plus its deletion file is also the unit a shard snapshot is built
//! from when shards move between nodes.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::table::{TableMeta, BATCH_ROWS};
use super::StorageError;

/// One part of a table as listed in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartEntry {
    pub id: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Deletion file name, when some rows of the part are deleted.
    pub deletes: Option<String>,
}

/// One table as listed in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    pub meta: TableMeta,
    pub next_rowid: u64,
    pub parts: Vec<PartEntry>,
}

/// The manifest: what a restart loads before replaying the WAL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub checkpoint_lsn: u64,
    pub next_table_id: u64,
    pub next_part_id: u64,
    pub tables: Vec<TableEntry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn table_dir(root: &Path, table: u64) -> PathBuf {
    root.join("tables").join(table.to_string())
}

pub fn part_path(root: &Path, table: u64, part: u64) -> PathBuf {
    table_dir(root, table).join(format!("p{part}.parquet"))
}

/// Fsyncs a directory so renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `batches` as a Parquet part and fsyncs it. Returns its size.
pub fn write_part(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<u64, StorageError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    let file = writer.into_inner()?;
    file.sync_all().map_err(io(&tmp))?;
    let bytes = file.metadata().map_err(io(&tmp))?.len();
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(bytes)
}

/// Reads a part back into batches of at most [`BATCH_ROWS`] rows.
pub fn read_part(path: &Path) -> Result<Vec<RecordBatch>, StorageError> {
    let file = File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(BATCH_ROWS)
        .build()?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

/// Writes a deletion file (row ids + crc32) and fsyncs it.
pub fn write_deletes(path: &Path, rowids: &[u64]) -> Result<(), StorageError> {
    let mut buf = Vec::with_capacity(rowids.len() * 8 + 4);
    for r in rowids {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(&buf).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}

/// Reads a deletion file, verifying its checksum.
pub fn read_deletes(path: &Path) -> Result<Vec<u64>, StorageError> {
    let buf = fs::read(path).map_err(io(path))?;
    if buf.len() < 4 || (buf.len() - 4) % 8 != 0 {
        return Err(StorageError::Corrupt(format!(
            "deletion file {} has a bad length",
            path.display()
        )));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(StorageError::Corrupt(format!(
            "deletion file {} fails its checksum",
            path.display()
        )));
    }
    Ok(body
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
}

/// Reads the manifest; `None` for a fresh data directory.
pub fn read_manifest(root: &Path) -> Result<Option<Manifest>, StorageError> {
    let path = root.join("MANIFEST");
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::Corrupt(format!("{}: {e}", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Replaces the manifest atomically.
pub fn write_manifest(root: &Path, manifest: &Manifest) -> Result<(), StorageError> {
    let path = root.join("MANIFEST");
    let tmp = root.join("MANIFEST.tmp");
    let bytes = serde_json::to_vec_pretty(manifest)?;
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(root)
}

/// Removes files under `tables/` that the manifest no longer references.
pub fn remove_unreferenced(root: &Path, manifest: &Manifest) -> Result<u64, StorageError> {
    let mut keep = std::collections::HashSet::new();
    for t in &manifest.tables {
        let dir = table_dir(root, t.meta.id);
        for p in &t.parts {
            keep.insert(dir.join(format!("p{}.parquet", p.id)));
            if let Some(d) = &p.deletes {
                keep.insert(dir.join(d));
            }
        }
    }
    let tables = root.join("tables");
    let mut on_disk = 0u64;
    let Ok(entries) = fs::read_dir(&tables) else {
        return Ok(0);
    };
    for dir in entries.flatten() {
        let dir_path = dir.path();
        let Ok(files) = fs::read_dir(&dir_path) else {
            continue;
        };
        let mut empty = true;
        for f in files.flatten() {
            let p = f.path();
            if keep.contains(&p) {
                empty = false;
                on_disk += f.metadata().map(|m| m.len()).unwrap_or(0);
            } else {
                fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        if empty {
            fs::remove_dir(&dir_path).map_err(io(&dir_path))?;
        }
    }
    Ok(on_disk)
}
