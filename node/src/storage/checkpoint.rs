//! Checkpoints: fold the WAL into Parquet parts, compact, trim the WAL.
//!
//! 1. Under the commit lock: take the head version (LSN `x`) and ask the WAL
//!    writer to start a new file at `x + 1`; the rotation fsyncs the old file.
//! 2. Without any lock: write a part for every run of memory-only segments,
//!    rewrite a table into one part when it has too many parts or too many
//!    deleted rows (compaction), write deletion files, then the manifest with
//!    `checkpoint_lsn = x`. Commits carry on meanwhile.
//! 3. Under the commit lock: label the head's segments with their parts (or
//!    swap in the compacted segment, re-applying deletes committed after
//!    `x`), then delete WAL files and parts the manifest no longer needs.
//!
//! A crash at any point leaves either the old manifest (and the full WAL) or
//! the new manifest (and a WAL that holds everything after `x`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::engine::Engine;
use super::parts::{self, Manifest, PartEntry, TableEntry};
use super::table::{Segment, TableData};
use super::wal;
use super::StorageError;

/// A table is compacted when it has more parts than this...
const MAX_PARTS: usize = 8;
/// ...or when more than this fraction of its rows are deleted.
const MAX_DELETED_FRACTION: f64 = 0.3;

/// What a checkpoint did to one table, to install into the head version.
enum Install {
    /// Segments starting at these row ids, with these many rows, now live
    /// in these parts: `(first row id, rows, part)`. A segment that has
    /// grown since (a commit appended to it) is not in the part whole and
    /// stays memory-only.
    Labels(Vec<(u64, usize, u64)>),
    /// The first `replaced` segments were rewritten into `segment`; the
    /// last of them may have grown since, and its newer rows stay after it.
    Compacted {
        replaced: Vec<Arc<Segment>>,
        segment: Arc<Segment>,
    },
}

/// What a checkpoint did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckpointStats {
    pub lsn: u64,
    pub parts_written: usize,
    pub tables_compacted: usize,
    pub disk_bytes: u64,
}

impl Engine {
    /// Runs a checkpoint. Blocking: call it from a blocking thread.
    pub fn checkpoint(&self) -> Result<CheckpointStats, StorageError> {
        let _only_one = self.checkpoint_lock.lock();
        let (snap, rotate_lsn, stage_floor, rotated) = {
            let head = self.head.lock();
            let rx = self.wal.rotate_request(head.next_lsn)?;
            // Staging transactions still open may have records in files
            // before the rotation; their commits come after `snap`.
            let floor = self.stages.lock().values().min().copied();
            (head.version.clone(), head.next_lsn, floor, rx)
        };
        rotated
            .blocking_recv()
            .map_err(|_| StorageError::ShuttingDown)??;
        self.wal_bytes.store(0, Ordering::Relaxed);

        let mut stats = CheckpointStats {
            lsn: snap.lsn,
            ..Default::default()
        };
        let mut manifest = Manifest {
            checkpoint_lsn: snap.lsn,
            next_table_id: snap.next_table_id,
            next_part_id: 0,
            tables: Vec::new(),
        };
        let mut installs: HashMap<u64, Install> = HashMap::new();
        let mut ids: Vec<&u64> = snap.tables.keys().collect();
        ids.sort();
        for id in ids {
            let t = &snap.tables[id];
            let (entry, install, wrote, compacted) = self.checkpoint_table(t, snap.lsn)?;
            stats.parts_written += wrote;
            stats.tables_compacted += usize::from(compacted);
            manifest.tables.push(entry);
            installs.insert(*id, install);
        }
        manifest.next_part_id = self.next_part_id.load(Ordering::SeqCst);
        parts::write_manifest(&self.root, &manifest)?;

        // Install into the head version.
        {
            let mut head = self.head.lock();
            let mut v = (*head.version).clone();
            for (id, install) in installs {
                let Some(t) = v.tables.get(&id) else { continue };
                if let Some(new) = install_into(t, install, snap.lsn, head.version.lsn, self)? {
                    v.tables.insert(id, Arc::new(new));
                }
            }
            head.version = Arc::new(v);
            self.publish_if_durable(&head.version);
        }

        // The WAL before the rotation point and unreferenced files can go,
        // except files that may hold staged records of open transactions.
        let files = wal::list_files(&self.root.join("wal"))?;
        let cutoff = wal_cutoff(&files, rotate_lsn, stage_floor);
        for (first, path) in files {
            if first < cutoff {
                std::fs::remove_file(&path).map_err(|source| StorageError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        stats.disk_bytes = parts::remove_unreferenced(&self.root, &manifest)?;
        self.disk_bytes.store(stats.disk_bytes, Ordering::Relaxed);
        Ok(stats)
    }

    fn checkpoint_table(
        &self,
        t: &TableData,
        lsn: u64,
    ) -> Result<(TableEntry, Install, usize, bool), StorageError> {
        let id = t.meta.id;
        let stored_schema = t.meta.stored_schema();
        let rows: usize = t.segments.iter().map(|s| s.rows).sum();
        let deleted = rows - t.live_rows();
        let mut part_ids: Vec<u64> = t.segments.iter().filter_map(|s| s.part).collect();
        part_ids.dedup();
        let unflushed = t.segments.iter().any(|s| s.part.is_none());
        let would_have = part_ids.len() + usize::from(unflushed);
        let compact = t.segments.len() > 1
            && (would_have > MAX_PARTS
                || (rows > 0 && deleted as f64 / rows as f64 > MAX_DELETED_FRACTION));
        let mut entry = TableEntry {
            meta: (*t.meta).clone(),
            next_rowid: t.next_rowid,
            parts: Vec::new(),
        };
        if compact {
            let live = t.live_batches()?;
            let pid = self.next_part_id.fetch_add(1, Ordering::SeqCst);
            let bytes = parts::write_part(
                &parts::part_path(&self.root, id, pid),
                &stored_schema,
                &live,
            )?;
            let seg = Segment::new(live, Some(pid))?;
            entry.parts.push(PartEntry {
                id: pid,
                rows: seg.rows as u64,
                bytes,
                deletes: None,
            });
            let install = Install::Compacted {
                replaced: t.segments.clone(),
                segment: Arc::new(seg),
            };
            return Ok((entry, install, 1, true));
        }
        // Group consecutive segments: existing parts keep theirs, memory-only
        // ones become one new part.
        let mut labels = Vec::new();
        let mut wrote = 0;
        let mut i = 0;
        while i < t.segments.len() {
            let seg = &t.segments[i];
            match seg.part {
                Some(pid) => {
                    let mut group = vec![seg.clone()];
                    while i + 1 < t.segments.len() && t.segments[i + 1].part == Some(pid) {
                        i += 1;
                        group.push(t.segments[i].clone());
                    }
                    entry.parts.push(self.part_entry(id, pid, &group, lsn)?);
                }
                None => {
                    let mut group = vec![seg.clone()];
                    while i + 1 < t.segments.len() && t.segments[i + 1].part.is_none() {
                        i += 1;
                        group.push(t.segments[i].clone());
                    }
                    let pid = self.next_part_id.fetch_add(1, Ordering::SeqCst);
                    let batches: Vec<_> = group
                        .iter()
                        .flat_map(|s| s.batches.iter().cloned())
                        .collect();
                    parts::write_part(
                        &parts::part_path(&self.root, id, pid),
                        &stored_schema,
                        &batches,
                    )?;
                    wrote += 1;
                    for s in &group {
                        if let Some(first) = s.first_rowid() {
                            labels.push((first, s.rows, pid));
                        }
                    }
                    entry.parts.push(self.part_entry(id, pid, &group, lsn)?);
                }
            }
            i += 1;
        }
        Ok((entry, Install::Labels(labels), wrote, false))
    }

    /// Manifest entry of a part, writing its deletion file when needed.
    fn part_entry(
        &self,
        table: u64,
        pid: u64,
        group: &[Arc<Segment>],
        lsn: u64,
    ) -> Result<PartEntry, StorageError> {
        let mut deleted = Vec::new();
        for s in group {
            deleted.extend(s.deleted_rowids()?);
        }
        let path = parts::part_path(&self.root, table, pid);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deletes = if deleted.is_empty() {
            None
        } else {
            let name = format!("p{pid}.{lsn}.del");
            parts::write_deletes(&parts::table_dir(&self.root, table).join(&name), &deleted)?;
            Some(name)
        };
        Ok(PartEntry {
            id: pid,
            rows: group.iter().map(|s| s.rows as u64).sum(),
            bytes,
            deletes,
        })
    }
}

/// Applies a checkpoint's result to the current head table, if it still
/// has the shape the checkpoint saw.
fn install_into(
    t: &TableData,
    install: Install,
    lsn: u64,
    head_lsn: u64,
    engine: &Engine,
) -> Result<Option<TableData>, StorageError> {
    match install {
        Install::Labels(labels) => {
            // Truncates and deletes leave index entries behind; prune them
            // once they clearly outnumber the live rows.
            if let Some(idx) = engine.indexes(t.meta.id) {
                let live = t.live_rows();
                for k in &idx.keys {
                    if k.len() > 2 * live + 1024 {
                        k.prune(head_lsn, |r| t.is_live(r));
                    }
                }
            }
            let map: HashMap<u64, (usize, u64)> = labels
                .into_iter()
                .map(|(first, rows, pid)| (first, (rows, pid)))
                .collect();
            let mut new = t.clone();
            for seg in new.segments.iter_mut() {
                if seg.part.is_none() {
                    let label = seg.first_rowid().and_then(|f| map.get(&f));
                    if let Some(&(_, pid)) = label.filter(|(rows, _)| *rows == seg.rows) {
                        let mut s = (**seg).clone();
                        s.part = Some(pid);
                        *seg = Arc::new(s);
                    }
                }
            }
            Ok(Some(new))
        }
        Install::Compacted { replaced, segment } => {
            let n = replaced.len();
            let same_prefix = t.segments.len() >= n
                && t.segments
                    .iter()
                    .zip(&replaced)
                    .enumerate()
                    .all(|(i, (h, r))| {
                        h.first_rowid() == r.first_rowid()
                            && (h.rows == r.rows
                                || (i + 1 == n && h.rows > r.rows && h.part.is_none()))
                    });
            if !same_prefix {
                return Ok(None);
            }
            // Rows appended to the last replaced segment since.
            let grown = match (t.segments.get(n.wrapping_sub(1)), replaced.last()) {
                (Some(h), Some(r)) if h.rows > r.rows => match r.last_rowid() {
                    Some(last) => h.after(last)?,
                    None => None,
                },
                _ => None,
            };
            // Deletes committed after the checkpoint snapshot.
            let mut later = Vec::new();
            for (h, r) in t.segments.iter().zip(&replaced) {
                let before: std::collections::HashSet<u64> =
                    r.deleted_rowids()?.into_iter().collect();
                later.extend(
                    h.deleted_rowids()?
                        .into_iter()
                        .filter(|x| !before.contains(x)),
                );
            }
            let pos: Vec<_> = later.iter().filter_map(|&r| segment.locate(r)).collect();
            let seg = if pos.is_empty() {
                segment
            } else {
                Arc::new(segment.with_deleted(&pos))
            };
            let mut new = t.clone();
            new.segments.splice(
                0..n,
                std::iter::once(seg.clone()).chain(grown.map(Arc::new)),
            );
            // Rows physically gone: prune them from the unique indexes.
            if let Some(idx) = engine.indexes(t.meta.id) {
                let first_new = new.segments.get(1).and_then(|s| s.first_rowid());
                for k in &idx.keys {
                    k.prune(lsn, |r| {
                        seg.locate(r).is_some() || first_new.is_some_and(|f| r >= f)
                    });
                }
            }
            Ok(Some(new))
        }
    }
}
/// WAL files whose first LSN is below the returned value may be deleted.
///
/// A staging transaction that began when the head's next LSN was `floor`
/// wrote its records into the file that was current then (the newest file
/// starting below `floor`, or one starting at `floor`) or a later one: keep
/// from that file on.
fn wal_cutoff(files: &[(u64, std::path::PathBuf)], rotate_lsn: u64, floor: Option<u64>) -> u64 {
    let Some(floor) = floor else {
        return rotate_lsn;
    };
    let keep_from = files
        .iter()
        .map(|(first, _)| *first)
        .filter(|&first| first < floor)
        .max()
        .unwrap_or(floor);
    rotate_lsn.min(keep_from)
}

#[cfg(test)]
mod tests {
    use super::{install_into, wal_cutoff, Install};
    use crate::storage::tests::{delete_where, ids, insert, meta};
    use crate::storage::{Engine, EngineOptions};
    use std::path::PathBuf;

    /// Checkpoints table `t` as of now, then runs `meanwhile` (commits
    /// that land while the parts are written), then installs.
    async fn checkpoint_racing(
        e: &Engine,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> (Install, crate::storage::table::TableData) {
        let snap = e.snapshot();
        let t = snap.table_by_name("t").unwrap().clone();
        let (_, install, _, _) = e.checkpoint_table(&t, snap.lsn).unwrap();
        let kind = match &install {
            Install::Labels(l) => Install::Labels(l.clone()),
            Install::Compacted { replaced, segment } => Install::Compacted {
                replaced: replaced.clone(),
                segment: segment.clone(),
            },
        };
        meanwhile.await;
        let head = e.snapshot();
        let ht = head.table_by_name("t").unwrap();
        let new = install_into(ht, install, snap.lsn, head.lsn, e)
            .unwrap()
            .unwrap();
        (kind, new)
    }

    #[tokio::test]
    async fn a_tail_grown_during_a_checkpoint_is_not_labelled_with_its_part() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        insert(&e, &[1]).await.unwrap();
        insert(&e, &[2]).await.unwrap();
        let (kind, new) = checkpoint_racing(&e, async {
            insert(&e, &[3]).await.unwrap();
        })
        .await;
        assert!(matches!(kind, Install::Labels(_)));
        // The part holds rows 1 and 2 only: the segment (now 3 rows) stays
        // memory-only, so the next checkpoint writes it whole.
        assert_eq!(new.segments.len(), 1);
        assert_eq!((new.segments[0].rows, new.segments[0].part), (3, None));
    }

    #[tokio::test]
    async fn compaction_keeps_rows_appended_to_the_tail_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        e.create_table(meta(), false).await.unwrap();
        insert(&e, &[1, 2]).await.unwrap();
        let e2 = e.clone();
        tokio::task::spawn_blocking(move || e2.checkpoint())
            .await
            .unwrap()
            .unwrap();
        insert(&e, &[3]).await.unwrap();
        insert(&e, &[4]).await.unwrap();
        delete_where(&e, |i| i < 4).await;
        let (kind, new) = checkpoint_racing(&e, async {
            insert(&e, &[5]).await.unwrap();
            delete_where(&e, |i| i == 4).await;
            insert(&e, &[6]).await.unwrap();
        })
        .await;
        assert!(matches!(kind, Install::Compacted { .. }));
        let live: Vec<u64> = new
            .segments
            .iter()
            .flat_map(|s| s.live_batches().unwrap())
            .flat_map(|b| crate::storage::table::rowids(&b).unwrap().values().to_vec())
            .collect();
        // Rows 5 and 6 (row ids 5, 6) kept after the compacted segment;
        // row 4's later delete applied to it.
        assert_eq!(live, vec![5, 6]);
        assert_eq!(new.segments.len(), 2);
        assert!(new.segments[1].part.is_none());
        assert!(new.is_live(6) && !new.is_live(4));
        drop(e);
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        assert_eq!(ids(&e), vec![5, 6]);
    }

    #[test]
    fn open_stages_keep_their_wal_files() {
        let files: Vec<(u64, PathBuf)> = [1u64, 40, 90]
            .iter()
            .map(|&f| (f, PathBuf::from(format!("{f}.log"))))
            .collect();
        // No staging: everything before the rotation goes.
        assert_eq!(wal_cutoff(&files, 120, None), 120);
        // A stage that began at next LSN 60 wrote into file 40 or later.
        assert_eq!(wal_cutoff(&files, 120, Some(60)), 40);
        // ...and one that began at 40 may have written into file 1 (file
        // 40 may have been created after it began).
        assert_eq!(wal_cutoff(&files, 120, Some(40)), 1);
        // The rotation point still bounds it.
        assert_eq!(wal_cutoff(&files, 30, Some(60)), 30);
    }
}
