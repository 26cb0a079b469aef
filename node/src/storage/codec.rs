//! Encoding of committed transactions as WAL payloads.
//!
//! A payload is `[n_ops: u32]` followed by `n_ops` times
//! `[tag: u8][len: u32][body]`. Row data travels as an Arrow IPC stream, so
//! encoding and decoding are close to a memory copy; metadata travels as JSON.

use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use super::table::TableMeta;
use super::StorageError;

/// One change inside a committed transaction.
#[derive(Debug, Clone)]
pub enum Op {
    CreateTable(TableMeta),
    DropTable {
        table: u64,
    },
    /// Replace a table's definition; `mapping[i]` is the old position of new
    /// column `i`, or `None` for a new column (filled with NULL).
    AlterTable {
        meta: TableMeta,
        mapping: Vec<Option<usize>>,
    },
    /// Stored batches (user columns + final `__rowid`).
    Insert {
        table: u64,
        batches: Vec<RecordBatch>,
    },
    Delete {
        table: u64,
        rowids: Vec<u64>,
    },
    Truncate {
        table: u64,
    },
}

const CREATE: u8 = 1;
const DROP: u8 = 2;
const ALTER: u8 = 3;
const INSERT: u8 = 4;
const DELETE: u8 = 5;
const TRUNCATE: u8 = 6;

/// Encodes a transaction's operations.
pub fn encode(ops: &[Op]) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        let (tag, body) = match op {
            Op::CreateTable(meta) => (CREATE, serde_json::to_vec(meta)?),
            Op::DropTable { table } => (DROP, table.to_le_bytes().to_vec()),
            Op::AlterTable { meta, mapping } => (ALTER, serde_json::to_vec(&(meta, mapping))?),
            Op::Insert { table, batches } => {
                let mut body = table.to_le_bytes().to_vec();
                if let Some(first) = batches.first() {
                    let mut w = StreamWriter::try_new(&mut body, first.schema_ref())?;
                    for b in batches {
                        w.write(b)?;
                    }
                    w.finish()?;
                }
                (INSERT, body)
            }
            Op::Delete { table, rowids } => {
                let mut body = Vec::with_capacity(8 + rowids.len() * 8);
                body.extend_from_slice(&table.to_le_bytes());
                for r in rowids {
                    body.extend_from_slice(&r.to_le_bytes());
                }
                (DELETE, body)
            }
            Op::Truncate { table } => (TRUNCATE, table.to_le_bytes().to_vec()),
        };
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    }
    Ok(out)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("WAL payload: {what}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, StorageError> {
    let s = b.get(off..off + 8).ok_or_else(|| corrupt("short u64"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Decodes a payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Vec<Op>, StorageError> {
    let n = payload
        .get(0..4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| corrupt("missing op count"))?;
    let mut off = 4;
    let mut ops = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tag = *payload.get(off).ok_or_else(|| corrupt("missing tag"))?;
        let len = payload
            .get(off + 1..off + 5)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
            .ok_or_else(|| corrupt("missing length"))?;
        off += 5;
        let body = payload
            .get(off..off + len)
            .ok_or_else(|| corrupt("short body"))?;
        off += len;
        let op = match tag {
            CREATE => Op::CreateTable(serde_json::from_slice(body)?),
            DROP => Op::DropTable {
                table: u64_at(body, 0)?,
            },
            ALTER => {
                let (meta, mapping) = serde_json::from_slice(body)?;
                Op::AlterTable { meta, mapping }
            }
            INSERT => {
                let table = u64_at(body, 0)?;
                let mut batches = Vec::new();
                if body.len() > 8 {
                    let reader = StreamReader::try_new(Cursor::new(&body[8..]), None)?;
                    for b in reader {
                        batches.push(b?);
                    }
                }
                Op::Insert { table, batches }
            }
            DELETE => {
                let table = u64_at(body, 0)?;
                let rowids = (8..body.len())
                    .step_by(8)
                    .map(|o| u64_at(body, o))
                    .collect::<Result<Vec<_>, _>>()?;
                Op::Delete { table, rowids }
            }
            TRUNCATE => Op::Truncate {
                table: u64_at(body, 0)?,
            },
            other => return Err(corrupt(&format!("unknown op tag {other}"))),
        };
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::{with_rowids, ColumnMeta, SqlType};
    use datafusion::arrow::array::{Int32Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn round_trip() {
        let meta = TableMeta {
            id: 7,
            name: "t".into(),
            columns: vec![
                ColumnMeta {
                    name: "a".into(),
                    ty: SqlType::Int4,
                    nullable: false,
                    default: None,
                },
                ColumnMeta {
                    name: "b".into(),
                    ty: SqlType::Text,
                    nullable: true,
                    default: Some("'x'".into()),
                },
            ],
            primary_key: Some(vec![0]),
            uniques: vec![],
        };
        let user = RecordBatch::try_new(
            meta.schema(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let stored = with_rowids(&user, &meta.stored_schema(), 10).unwrap();
        let ops = vec![
            Op::CreateTable(meta.clone()),
            Op::Insert {
                table: 7,
                batches: vec![stored.clone()],
            },
            Op::Delete {
                table: 7,
                rowids: vec![10, 11],
            },
            Op::Truncate { table: 7 },
            Op::DropTable { table: 7 },
        ];
        let bytes = encode(&ops).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 5);
        match &back[0] {
            Op::CreateTable(m) => assert_eq!(m, &meta),
            other => panic!("{other:?}"),
        }
        match &back[1] {
            Op::Insert { table, batches } => {
                assert_eq!(*table, 7);
                assert_eq!(batches[0], stored);
            }
            other => panic!("{other:?}"),
        }
        match &back[2] {
            Op::Delete { rowids, .. } => assert_eq!(rowids, &vec![10, 11]),
            other => panic!("{other:?}"),
        }
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
