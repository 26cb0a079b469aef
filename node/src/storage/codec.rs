//! Encoding of committed transactions as WAL payloads.
//!
//! A payload is `[n_ops: u32]` followed by `n_ops` times
//! `[tag: u8][len: u32][body]`. Row data travels as an Arrow IPC stream, so
//! encoding and decoding are close to a memory copy; metadata travels as JSON.
//!
//! A large transaction may log its rows ahead of its commit, in staged
//! records (one `Stage` op each, LSN 0, see `wal.rs`); its commit record
//! then says which staged rows belong to it ([`StagedRows`]) and carries only
//! the rest.

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
    /// column `i`, or `None` for a new column. Existing rows get a new
    /// column's value from `fill` (one row over the new user columns; the
    /// value of its DEFAULT, computed once when the ALTER ran), or NULL.
    AlterTable {
        meta: TableMeta,
        mapping: Vec<Option<usize>>,
        fill: Option<RecordBatch>,
    },
    /// Stored batches (user columns + final `__rowid`). With `staged`, the
    /// first `staged.rows` rows were logged ahead in staged records and the
    /// encoding carries only the rest (decoding returns only the rest).
    Insert {
        table: u64,
        batches: Vec<RecordBatch>,
        staged: Option<StagedRows>,
    },
    /// Rows of an uncommitted transaction logged ahead (user columns only).
    Stage {
        txn: u64,
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
const STAGE: u8 = 7;
const INSERT_STAGED: u8 = 8;
/// ALTER TABLE with the values existing rows take in new columns.
const ALTER_FILL: u8 = 9;

/// Rows of an insert that were logged ahead by staged records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedRows {
    /// The staging transaction's id (unique within the data directory).
    pub txn: u64,
    /// How many leading rows of the insert were staged, in staging order.
    pub rows: u64,
    /// The row id of the first staged row; the others follow one by one.
    pub first_rowid: u64,
}

/// An Arrow IPC stream of `batches`, sized up front.
pub fn ipc_stream(batches: &[RecordBatch]) -> Result<Vec<u8>, StorageError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut out = Vec::with_capacity(size + 4096);
    let mut w = StreamWriter::try_new(&mut out, first.schema_ref())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

fn op_header(out: &mut Vec<u8>, tag: u8, len: usize) -> Result<(), StorageError> {
    let len = u32::try_from(len).map_err(|_| corrupt("operation larger than 4 GiB"))?;
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The payload of a staged record: `ipc` is [`ipc_stream`] of the user
/// batches (made wherever is convenient, e.g. on a decoder thread).
pub fn stage_payload(txn: u64, table: u64, ipc: Vec<u8>) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut head = Vec::with_capacity(4 + 5 + 16);
    head.extend_from_slice(&1u32.to_le_bytes());
    op_header(&mut head, STAGE, 16 + ipc.len())?;
    head.extend_from_slice(&txn.to_le_bytes());
    head.extend_from_slice(&table.to_le_bytes());
    Ok(vec![head, ipc])
}

/// The first `n` rows of `batches`.
pub fn take_rows(batches: &[RecordBatch], n: u64) -> Vec<RecordBatch> {
    let mut left = n as usize;
    let mut out = Vec::new();
    for b in batches {
        if left == 0 {
            break;
        }
        let k = b.num_rows().min(left);
        out.push(if k == b.num_rows() {
            b.clone()
        } else {
            b.slice(0, k)
        });
        left -= k;
    }
    out
}

/// The stored rows of `batches` after the first `skip` rows.
fn skip_rows(batches: &[RecordBatch], skip: u64) -> Vec<RecordBatch> {
    let mut left = skip as usize;
    let mut out = Vec::new();
    for b in batches {
        let n = b.num_rows();
        if left >= n {
            left -= n;
            continue;
        }
        out.push(b.slice(left, n - left));
        left = 0;
    }
    out
}

/// Encodes a transaction's operations, as pieces to be logged back to back
/// (row data is not copied into one buffer).
pub fn encode(ops: &[Op]) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut out = vec![(ops.len() as u32).to_le_bytes().to_vec()];
    for op in ops {
        let (tag, head, ipc) = match op {
            Op::CreateTable(meta) => (CREATE, serde_json::to_vec(meta)?, Vec::new()),
            Op::DropTable { table } => (DROP, table.to_le_bytes().to_vec(), Vec::new()),
            Op::AlterTable {
                meta,
                mapping,
                fill: None,
            } => (ALTER, serde_json::to_vec(&(meta, mapping))?, Vec::new()),
            Op::AlterTable {
                meta,
                mapping,
                fill: Some(fill),
            } => {
                let json = serde_json::to_vec(&(meta, mapping))?;
                let len = u32::try_from(json.len()).map_err(|_| corrupt("ALTER too large"))?;
                let mut head = len.to_le_bytes().to_vec();
                head.extend_from_slice(&json);
                (ALTER_FILL, head, ipc_stream(std::slice::from_ref(fill))?)
            }
            Op::Insert {
                table,
                batches,
                staged: None,
            } => (INSERT, table.to_le_bytes().to_vec(), ipc_stream(batches)?),
            Op::Insert {
                table,
                batches,
                staged: Some(st),
            } => {
                let mut head = Vec::with_capacity(32);
                for v in [*table, st.txn, st.rows, st.first_rowid] {
                    head.extend_from_slice(&v.to_le_bytes());
                }
                (
                    INSERT_STAGED,
                    head,
                    ipc_stream(&skip_rows(batches, st.rows))?,
                )
            }
            Op::Stage {
                txn,
                table,
                batches,
            } => {
                let mut head = txn.to_le_bytes().to_vec();
                head.extend_from_slice(&table.to_le_bytes());
                (STAGE, head, ipc_stream(batches)?)
            }
            Op::Delete { table, rowids } => {
                let mut body = Vec::with_capacity(8 + rowids.len() * 8);
                body.extend_from_slice(&table.to_le_bytes());
                for r in rowids {
                    body.extend_from_slice(&r.to_le_bytes());
                }
                (DELETE, body, Vec::new())
            }
            Op::Truncate { table } => (TRUNCATE, table.to_le_bytes().to_vec(), Vec::new()),
        };
        let mut piece = Vec::with_capacity(5 + head.len());
        op_header(&mut piece, tag, head.len() + ipc.len())?;
        piece.extend_from_slice(&head);
        out.push(piece);
        if !ipc.is_empty() {
            out.push(ipc);
        }
    }
    Ok(out)
}

/// Decodes the batches of an IPC stream (empty input: none).
fn read_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>, StorageError> {
    let mut batches = Vec::new();
    if !bytes.is_empty() {
        let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        for b in reader {
            batches.push(b?);
        }
    }
    Ok(batches)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("WAL payload: {what}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<usize, StorageError> {
    let s = b.get(off..off + 4).ok_or_else(|| corrupt("short u32"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, StorageError> {
    let s = b.get(off..off + 8).ok_or_else(|| corrupt("short u64"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Decodes a payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Vec<Op>, StorageError> {
    let n = u32_at(payload, 0)?;
    let mut off = 4;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = *payload.get(off).ok_or_else(|| corrupt("missing tag"))?;
        let len = u32_at(payload, off + 1)?;
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
                Op::AlterTable {
                    meta,
                    mapping,
                    fill: None,
                }
            }
            ALTER_FILL => {
                let len = u32_at(body, 0)?;
                let json = body.get(4..4 + len).ok_or_else(|| corrupt("short ALTER"))?;
                let (meta, mapping) = serde_json::from_slice(json)?;
                Op::AlterTable {
                    meta,
                    mapping,
                    fill: read_ipc(body.get(4 + len..).unwrap_or_default())?
                        .into_iter()
                        .next(),
                }
            }
            INSERT => Op::Insert {
                table: u64_at(body, 0)?,
                batches: read_ipc(body.get(8..).unwrap_or_default())?,
                staged: None,
            },
            INSERT_STAGED => Op::Insert {
                table: u64_at(body, 0)?,
                staged: Some(StagedRows {
                    txn: u64_at(body, 8)?,
                    rows: u64_at(body, 16)?,
                    first_rowid: u64_at(body, 24)?,
                }),
                batches: read_ipc(body.get(32..).unwrap_or_default())?,
            },
            STAGE => Op::Stage {
                txn: u64_at(body, 0)?,
                table: u64_at(body, 8)?,
                batches: read_ipc(body.get(16..).unwrap_or_default())?,
            },
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
                staged: None,
            },
            Op::Delete {
                table: 7,
                rowids: vec![10, 11],
            },
            Op::Truncate { table: 7 },
            Op::DropTable { table: 7 },
            Op::AlterTable {
                meta: meta.clone(),
                mapping: vec![Some(0), None],
                fill: Some(user.slice(0, 1)),
            },
            Op::AlterTable {
                meta: meta.clone(),
                mapping: vec![None, Some(0)],
                fill: None,
            },
        ];
        let bytes = encode(&ops).unwrap().concat();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 7);
        match (&back[5], &back[6]) {
            (
                Op::AlterTable {
                    meta: m5,
                    mapping: p5,
                    fill: Some(f5),
                },
                Op::AlterTable {
                    mapping: p6,
                    fill: None,
                    ..
                },
            ) => {
                assert_eq!(m5, &meta);
                assert_eq!(p5, &vec![Some(0), None]);
                assert_eq!(f5, &user.slice(0, 1));
                assert_eq!(p6, &vec![None, Some(0)]);
            }
            other => panic!("{other:?}"),
        }
        match &back[0] {
            Op::CreateTable(m) => assert_eq!(m, &meta),
            other => panic!("{other:?}"),
        }
        match &back[1] {
            Op::Insert {
                table,
                batches,
                staged,
            } => {
                assert_eq!(*table, 7);
                assert_eq!(batches[0], stored);
                assert_eq!(*staged, None);
            }
            other => panic!("{other:?}"),
        }
        match &back[2] {
            Op::Delete { rowids, .. } => assert_eq!(rowids, &vec![10, 11]),
            other => panic!("{other:?}"),
        }
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn staged_insert_carries_only_the_rest() {
        let meta = TableMeta {
            id: 3,
            name: "s".into(),
            columns: vec![ColumnMeta {
                name: "a".into(),
                ty: SqlType::Int4,
                nullable: true,
                default: None,
            }],
            primary_key: None,
            uniques: vec![],
        };
        let user = |v: Vec<i32>| {
            RecordBatch::try_new(meta.schema(), vec![Arc::new(Int32Array::from(v))]).unwrap()
        };
        let staged_user = user(vec![1, 2, 3]);
        // A staged record made from a separately built IPC stream decodes
        // like an encoded Stage op.
        let ipc = ipc_stream(std::slice::from_ref(&staged_user)).unwrap();
        let rec = stage_payload(9, 3, ipc).unwrap().concat();
        let direct = encode(&[Op::Stage {
            txn: 9,
            table: 3,
            batches: vec![staged_user.clone()],
        }])
        .unwrap()
        .concat();
        assert_eq!(rec, direct);
        match &decode(&rec).unwrap()[0] {
            Op::Stage {
                txn,
                table,
                batches,
            } => {
                assert_eq!((*txn, *table), (9, 3));
                assert_eq!(batches, &vec![staged_user.clone()]);
            }
            other => panic!("{other:?}"),
        }
        // The commit: rows 1..3 staged, 4..5 inline; rows split across
        // stored batches in a way that needs a slice.
        let stored = meta.stored_schema();
        let b1 = with_rowids(&user(vec![1, 2]), &stored, 100).unwrap();
        let b2 = with_rowids(&user(vec![3, 4, 5]), &stored, 102).unwrap();
        let st = StagedRows {
            txn: 9,
            rows: 3,
            first_rowid: 100,
        };
        let bytes = encode(&[Op::Insert {
            table: 3,
            batches: vec![b1, b2.clone()],
            staged: Some(st),
        }])
        .unwrap()
        .concat();
        match &decode(&bytes).unwrap()[0] {
            Op::Insert {
                table,
                batches,
                staged,
            } => {
                assert_eq!(*table, 3);
                assert_eq!(*staged, Some(st));
                assert_eq!(batches, &vec![b2.slice(1, 2)]);
            }
            other => panic!("{other:?}"),
        }
    }
}
