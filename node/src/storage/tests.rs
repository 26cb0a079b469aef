//! Engine tests: commit, recovery, checkpoints, compaction, constraints.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int32Array, RecordBatch, StringArray};

use super::engine::{Engine, EngineOptions, TableWrites, WriteSet};
use super::table::{ColumnMeta, SqlType, TableMeta};
use super::StorageError;

pub(super) fn meta() -> TableMeta {
    TableMeta {
        id: 0,
        name: "t".into(),
        columns: vec![
            ColumnMeta {
                name: "id".into(),
                ty: SqlType::Int4,
                nullable: false,
                default: None,
            },
            ColumnMeta {
                name: "v".into(),
                ty: SqlType::Text,
                nullable: true,
                default: None,
            },
        ],
        primary_key: Some(vec![0]),
        uniques: vec![],
    }
}

fn batch(ids: &[i32]) -> RecordBatch {
    let mut m = meta();
    m.id = 1;
    RecordBatch::try_new(
        m.schema(),
        vec![
            Arc::new(Int32Array::from(ids.to_vec())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("v{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

pub(super) fn ids(engine: &Engine) -> Vec<i32> {
    let snap = engine.snapshot();
    let t = snap.table_by_name("t").unwrap();
    let mut out = Vec::new();
    for b in t.live_batches().unwrap() {
        let a = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        out.extend(a.values().iter().copied());
    }
    out.sort();
    out
}

pub(super) async fn insert(engine: &Engine, rows: &[i32]) -> Result<(), StorageError> {
    let id = engine.snapshot().names["t"];
    let mut ws = WriteSet::default();
    ws.tables.insert(
        id,
        TableWrites {
            inserts: vec![batch(rows)],
            ..Default::default()
        },
    );
    engine.commit(ws).await.map(|_| ())
}

pub(super) async fn delete_where(engine: &Engine, pred: impl Fn(i32) -> bool) {
    let snap = engine.snapshot();
    let t = snap.table_by_name("t").unwrap();
    let mut del = std::collections::BTreeSet::new();
    for b in t.live_batches().unwrap() {
        let a = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        let r = super::table::rowids(&b).unwrap();
        for i in 0..a.len() {
            if pred(a.value(i)) {
                del.insert(r.value(i));
            }
        }
    }
    let mut ws = WriteSet::default();
    ws.tables.insert(
        t.meta.id,
        TableWrites {
            deletes: del,
            ..Default::default()
        },
    );
    engine.commit(ws).await.unwrap();
}

#[tokio::test]
async fn commit_survives_reopen_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        assert!(e.create_table(meta(), false).await.unwrap());
        insert(&e, &[1, 2, 3]).await.unwrap();
        insert(&e, &[4, 5]).await.unwrap();
        delete_where(&e, |i| i == 2).await;
    }
    // WAL replay only.
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 3, 4, 5]);
    let e2 = e.clone();
    let stats = tokio::task::spawn_blocking(move || e2.checkpoint())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.parts_written, 1);
    insert(&e, &[6]).await.unwrap();
    delete_where(&e, |i| i == 4).await;
    drop(e);
    // Manifest + parts + deletion file + WAL tail.
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 3, 5, 6]);
    // Only the WAL after the checkpoint remains.
    let wal = super::wal::list_files(&dir.path().join("wal")).unwrap();
    assert!(wal.iter().all(|(first, _)| *first > stats.lsn));
}

#[tokio::test]
async fn unique_key_is_enforced_and_freed_by_delete() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    e.create_table(meta(), false).await.unwrap();
    insert(&e, &[1, 2]).await.unwrap();
    match insert(&e, &[3, 2]).await {
        Err(StorageError::UniqueViolation { detail, .. }) => {
            assert_eq!(detail, "Key (id)=(2) already exists.")
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert!(matches!(
        insert(&e, &[7, 7]).await,
        Err(StorageError::UniqueViolation { .. })
    ));
    assert_eq!(ids(&e), vec![1, 2]);
    delete_where(&e, |i| i == 2).await;
    insert(&e, &[2]).await.unwrap();
    assert_eq!(ids(&e), vec![1, 2]);
}

/// The row with key `id` that `snap` sees, by the unique index.
fn by_key(e: &Engine, snap: &super::DbVersion, id: i32) -> Option<String> {
    let t = snap.table_by_name("t")?;
    let idx = e.indexes(t.meta.id)?;
    let key = idx.keys[0]
        .encode_arrays(&[Arc::new(Int32Array::from(vec![id]))])
        .unwrap();
    let r = idx.keys[0].newest(key.row(0).as_ref(), |r| t.is_live(r))?;
    let b = t.row(r)?;
    let v = b.column(1).as_any().downcast_ref::<StringArray>()?;
    Some(v.value(0).to_string())
}

#[tokio::test]
async fn index_lookup_finds_the_version_each_snapshot_sees() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    e.create_table(meta(), false).await.unwrap();
    insert(&e, &[1, 2]).await.unwrap();
    let first = e.snapshot();
    // Many versions of key 1 (an UPDATE each: delete + insert).
    let mut middle = None;
    for n in 0..50 {
        delete_where(&e, |i| i == 1).await;
        insert(&e, &[1]).await.unwrap();
        if n == 25 {
            middle = Some(e.snapshot());
        }
    }
    let newest = e.snapshot();
    for snap in [&first, middle.as_ref().unwrap(), &newest] {
        assert_eq!(by_key(&e, snap, 1).as_deref(), Some("v1"));
        assert_eq!(by_key(&e, snap, 2).as_deref(), Some("v2"));
        assert_eq!(by_key(&e, snap, 3), None);
    }
    // A snapshot between the delete and the insert sees no row.
    delete_where(&e, |i| i == 1).await;
    assert_eq!(by_key(&e, &e.snapshot(), 1), None);
    assert_eq!(by_key(&e, &newest, 1).as_deref(), Some("v1"));
    insert(&e, &[1]).await.unwrap();
    // The unique check still meets the newest version.
    assert!(matches!(
        insert(&e, &[1]).await,
        Err(StorageError::UniqueViolation { .. })
    ));
    assert_eq!(ids(&e), vec![1, 2]);
}

#[tokio::test]
async fn small_commits_grow_one_tail_segment_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        for i in 0..20 {
            insert(&e, &[i]).await.unwrap();
        }
        delete_where(&e, |i| i % 3 == 0).await;
        let snap = e.snapshot();
        let t = snap.table_by_name("t").unwrap();
        assert_eq!(t.segments.len(), 1);
        assert_eq!(t.segments[0].batches.len(), 1);
        assert_eq!((t.segments[0].rows, t.live_rows()), (20, 13));
        let e2 = e.clone();
        tokio::task::spawn_blocking(move || e2.checkpoint())
            .await
            .unwrap()
            .unwrap();
        // A flushed segment takes no more rows: the next commit starts one.
        insert(&e, &[100]).await.unwrap();
        insert(&e, &[101]).await.unwrap();
        let snap = e.snapshot();
        let t = snap.table_by_name("t").unwrap();
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[1].part, None);
        delete_where(&e, |i| i == 100 || i == 1).await;
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let want: Vec<i32> = (0..20)
        .filter(|i| i % 3 != 0 && *i != 1)
        .chain([101])
        .collect();
    assert_eq!(ids(&e), want);
    assert!(insert(&e, &[101]).await.is_err());
    insert(&e, &[100]).await.unwrap();
}

#[tokio::test]
async fn deleting_a_deleted_row_is_a_serialization_failure() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    e.create_table(meta(), false).await.unwrap();
    insert(&e, &[1]).await.unwrap();
    let snap = e.snapshot();
    let t = snap.table_by_name("t").unwrap().clone();
    let rowid = super::table::rowids(&t.live_batches().unwrap()[0])
        .unwrap()
        .value(0);
    let ws = || {
        let mut ws = WriteSet::default();
        ws.tables.insert(
            t.meta.id,
            TableWrites {
                deletes: [rowid].into_iter().collect(),
                ..Default::default()
            },
        );
        ws
    };
    e.commit(ws()).await.unwrap();
    assert!(matches!(
        e.commit(ws()).await,
        Err(StorageError::SerializationFailure)
    ));
}

#[tokio::test]
async fn compaction_keeps_live_rows_and_later_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    e.create_table(meta(), false).await.unwrap();
    for i in 0..10 {
        insert(&e, &[i * 2, i * 2 + 1]).await.unwrap();
        let e2 = e.clone();
        tokio::task::spawn_blocking(move || e2.checkpoint())
            .await
            .unwrap()
            .unwrap();
    }
    delete_where(&e, |i| i % 2 == 0).await;
    let e2 = e.clone();
    let stats = tokio::task::spawn_blocking(move || e2.checkpoint())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.tables_compacted, 1);
    let snap = e.snapshot();
    assert_eq!(snap.table_by_name("t").unwrap().segments.len(), 1);
    drop(snap);
    // Duplicates are still caught after compaction pruned the index.
    assert!(insert(&e, &[3]).await.is_err());
    insert(&e, &[4]).await.unwrap();
    drop(e);
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 3, 4, 5, 7, 9, 11, 13, 15, 17, 19]);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("tables/1"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "old parts were removed: {files:?}");
}

#[tokio::test]
async fn torn_wal_tail_is_cut_and_earlier_commits_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        insert(&e, &[1]).await.unwrap();
        insert(&e, &[2]).await.unwrap();
    }
    let wal = super::wal::list_files(&dir.path().join("wal")).unwrap();
    let (_, last) = wal.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1]);
    insert(&e, &[3]).await.unwrap();
    drop(e);
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 3]);
}

/// Stages `rows` of table `t` under `ticket`; returns the user batch.
fn stage(e: &Engine, ticket: &super::engine::StageTicket, rows: &[i32]) -> RecordBatch {
    let id = e.snapshot().names["t"];
    let b = batch(rows);
    let ipc = super::codec::ipc_stream(std::slice::from_ref(&b)).unwrap();
    e.stage(ticket, id, rows.len() as u64, ipc).unwrap();
    b
}

async fn commit_staged(
    e: &Engine,
    ticket: Arc<super::engine::StageTicket>,
    staged_rows: u64,
    inserts: Vec<RecordBatch>,
) -> Result<(), StorageError> {
    let id = e.snapshot().names["t"];
    let mut ws = WriteSet::default();
    ws.tables.insert(
        id,
        TableWrites {
            inserts,
            staged: Some(super::engine::StagedWrites {
                ticket,
                rows: staged_rows,
            }),
            ..Default::default()
        },
    );
    e.commit(ws).await.map(|_| ())
}

fn rowid_count(e: &Engine) -> (usize, usize) {
    let snap = e.snapshot();
    let t = snap.table_by_name("t").unwrap();
    let mut all = Vec::new();
    for b in t.live_batches().unwrap() {
        all.extend(super::table::rowids(&b).unwrap().values().iter().copied());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    (n, all.len())
}

async fn checkpoint(e: &Arc<Engine>) -> super::checkpoint::CheckpointStats {
    let e2 = e.clone();
    tokio::task::spawn_blocking(move || e2.checkpoint())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn staged_rows_count_once_committed_across_checkpoint_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        insert(&e, &[1]).await.unwrap();
        let ticket = e.begin_stage();
        let b1 = stage(&e, &ticket, &[10, 11]);
        let b2 = stage(&e, &ticket, &[12]);
        // Not visible before the commit.
        assert_eq!(ids(&e), vec![1]);
        // A checkpoint while the stage is open must keep its WAL file.
        checkpoint(&e).await;
        insert(&e, &[2]).await.unwrap();
        commit_staged(&e, ticket, 3, vec![b1, b2, batch(&[13])])
            .await
            .unwrap();
        assert_eq!(ids(&e), vec![1, 2, 10, 11, 12, 13]);
        assert!(e.stages.lock().is_empty());
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 2, 10, 11, 12, 13]);
    assert_eq!(rowid_count(&e), (6, 6));
    // Folded into parts, the staged records' files can go.
    let stats = checkpoint(&e).await;
    drop(e);
    let wal = super::wal::list_files(&dir.path().join("wal")).unwrap();
    assert!(wal.iter().all(|(first, _)| *first > stats.lsn));
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![1, 2, 10, 11, 12, 13]);
}

#[tokio::test]
async fn uncommitted_stage_is_ignored_and_its_id_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let old_txn;
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        let ticket = e.begin_stage();
        old_txn = ticket.txn();
        stage(&e, &ticket, &[20, 21]);
        drop(ticket);
        assert!(e.stages.lock().is_empty());
        insert(&e, &[3]).await.unwrap();
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![3]);
    // A new transaction must not pick up the dead one's staged rows.
    let ticket = e.begin_stage();
    assert!(ticket.txn() > old_txn);
    let b = stage(&e, &ticket, &[30]);
    commit_staged(&e, ticket, 1, vec![b]).await.unwrap();
    drop(e);
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![3, 30]);
}

#[tokio::test]
async fn a_commit_takes_the_staged_prefix_it_names() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        let ticket = e.begin_stage();
        let b = stage(&e, &ticket, &[40, 41]);
        // A statement that staged more was rolled back.
        stage(&e, &ticket, &[42]);
        commit_staged(&e, ticket, 2, vec![b]).await.unwrap();
        assert_eq!(ids(&e), vec![40, 41]);
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![40, 41]);
}

#[tokio::test]
async fn a_failed_staged_commit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        insert(&e, &[50]).await.unwrap();
        let ticket = e.begin_stage();
        let b = stage(&e, &ticket, &[51, 50]);
        let err = commit_staged(&e, ticket, 2, vec![b]).await.unwrap_err();
        assert!(matches!(err, StorageError::UniqueViolation { .. }), "{err}");
        assert!(e.stages.lock().is_empty());
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![50]);
}

#[tokio::test]
async fn a_checkpointed_staged_commit_replays_without_its_removed_stage_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        let b_ticket = e.begin_stage();
        let b = stage(&e, &b_ticket, &[60, 61]);
        // Rotates to a new WAL file; B's staged records stay in the first.
        checkpoint(&e).await;
        insert(&e, &[62]).await.unwrap();
        // A second staging transaction starts in the new file and stays
        // open, so the next checkpoint keeps that file (not the first).
        let a_ticket = e.begin_stage();
        commit_staged(&e, b_ticket, 2, vec![b]).await.unwrap();
        let stats = checkpoint(&e).await;
        let wal = super::wal::list_files(&dir.path().join("wal")).unwrap();
        assert!(
            wal.len() >= 2,
            "the open stage keeps the file with B's commit"
        );
        assert!(wal[0].0 > 1, "the file with B's staged records is gone");
        assert!(stats.lsn >= 3);
        drop(a_ticket);
    }
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(ids(&e), vec![60, 61, 62]);
}
