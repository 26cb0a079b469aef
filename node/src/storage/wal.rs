//! Write-ahead log: the first place a committed transaction lands.
//!
//! The log is a sequence of files `wal/<first-lsn>.log`. Each record is
//! framed as `[len: u32 LE][crc32c of payload: u32 LE][lsn: u64 LE][payload]`
//! where `len` counts the lsn and the payload. A record is acknowledged only
//! after the file holding it has been fsynced.
//!
//! Group commit: committers hand their encoded record to one writer thread;
//! the writer takes every record that is waiting, writes them in LSN order,
//! issues one `fdatasync`, then runs the caller's `on_durable` hook (which
//! publishes the new database version) and wakes every committer.
//!
//! Staged records ([`WalWriter::stage`]) carry the rows of a large
//! transaction that has not committed yet: the writer appends them with LSN
//! 0 and no fsync, so a long COPY streams its data to disk while it is still
//! reading; the transaction's commit record, fsynced as usual, makes them
//! count (see `engine.rs`). Writeback of what was appended is started every
//! [`WRITEBACK_BYTES`], so that the fsync at commit finds little left to do.
//!
//! Recovery reads records in order and stops at the first frame that is
//! short or fails its checksum: that torn tail is cut off (the file is
//! truncated) and never replayed.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::oneshot;

/// Bytes in a frame header (len + crc + lsn).
const HEADER: usize = 16;
/// Largest record accepted when reading: guards against a corrupt length.
const MAX_RECORD: usize = 1 << 31;
/// Appended bytes after which the writer asks the kernel to start writing
/// them back (without waiting), so dirty pages do not pile up until fsync.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Errors of the write-ahead log.
#[derive(Debug, Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL writer has stopped after an earlier failure; the node must restart")]
    Stopped,
    #[error("WAL record too large ({0} bytes)")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record read back during recovery.
#[derive(Debug)]
pub struct WalRecord {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

/// A record's payload, in pieces that are written back to back (so a
/// caller never concatenates large buffers just to log them).
pub type Payload = Vec<Vec<u8>>;

/// Checks a payload's size; returns the frame's `len` field.
fn frame_len(payload: &Payload) -> Result<u32, WalError> {
    let len = payload.iter().map(Vec::len).sum::<usize>() + 8;
    if len > MAX_RECORD {
        return Err(WalError::TooLarge(len));
    }
    Ok(len as u32)
}

/// The frame header of a record.
fn header(lsn: u64, len: u32, payload: &Payload) -> [u8; HEADER] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    for p in payload {
        hasher.update(p);
    }
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h
}

/// Encodes one whole frame (tests and small records).
#[cfg(test)]
fn frame(lsn: u64, payload: &[u8]) -> Result<Vec<u8>, WalError> {
    let payload = vec![payload.to_vec()];
    let len = frame_len(&payload)?;
    let mut buf = header(lsn, len, &payload).to_vec();
    buf.extend_from_slice(&payload[0]);
    Ok(buf)
}

/// Lists WAL files in the directory ordered by their first LSN.
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(first) = stem.parse::<u64>() {
                files.push((first, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every intact record of one file, truncating a torn tail in place.
/// Returns the records and whether a tail was cut.
pub fn read_file(path: &Path) -> Result<(Vec<WalRecord>, bool), WalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let total = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = Vec::new();
    let mut good_end: u64 = 0;
    loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut reader, &mut header) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io_err(path)(e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(8..=MAX_RECORD).contains(&len) || good_end + 8 + len as u64 > total {
            break;
        }
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let mut payload = vec![0u8; len - 8];
        match read_full(&mut reader, &mut payload) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io_err(path)(e)),
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn_bytes);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        good_end += (8 + len) as u64;
        records.push(WalRecord {
            lsn: u64::from_le_bytes(lsn_bytes),
            payload,
        });
    }
    let torn = good_end < total;
    if torn {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(good_end).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok((records, torn))
}

/// Fills `buf` completely; `Ok(false)` on a clean or partial end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut off = 0;
    while off < buf.len() {
        let n = r.read(&mut buf[off..])?;
        if n == 0 {
            return Ok(false);
        }
        off += n;
    }
    Ok(true)
}

/// What the writer thread calls after a group of records is durable.
pub type DurableHook = Box<dyn FnMut(u64) + Send>;

enum Request {
    Append {
        lsn: u64,
        len: u32,
        payload: Payload,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    /// A staged record: appended with LSN 0, nobody waits for it.
    Stage {
        len: u32,
        payload: Payload,
    },
    /// Start a new file whose first record will be `first_lsn`.
    Rotate {
        first_lsn: u64,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    Stop,
}

/// Handle to the group-commit writer thread.
pub struct WalWriter {
    tx: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

/// Counters the writer reports through the hook owner.
pub trait WalObserver: Send + Sync {
    fn fsynced(&self, bytes: u64);
}

impl WalWriter {
    /// Opens (or creates) `dir/<first_lsn>.log` for appending and starts the
    /// writer thread. `on_durable(lsn)` runs on the writer thread after each
    /// fsync with the highest durable LSN.
    pub fn start(
        dir: &Path,
        first_lsn: u64,
        mut on_durable: DurableHook,
        observer: Option<std::sync::Arc<dyn WalObserver>>,
    ) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut file = open_segment(dir, first_lsn)?;
        let (tx, rx) = mpsc::channel::<Request>();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("quiver-wal".into())
            .spawn(move || {
                let mut failed = false;
                // Bytes written since the last fsync (staged records too).
                let mut bytes_written = 0u64;
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let mut waiters = Vec::new();
                    let mut max_lsn = None;
                    let mut result: Result<(), WalError> =
                        if failed { Err(WalError::Stopped) } else { Ok(()) };
                    let mut stop = false;
                    for req in batch {
                        match req {
                            Request::Append {
                                lsn,
                                len,
                                payload,
                                done,
                            } => {
                                if result.is_ok() {
                                    result = file.append(lsn, len, &payload);
                                    bytes_written += u64::from(len) + 8;
                                    max_lsn = Some(lsn);
                                }
                                waiters.push(done);
                            }
                            Request::Stage { len, payload } => {
                                if result.is_ok() {
                                    result = file.append(0, len, &payload);
                                    bytes_written += u64::from(len) + 8;
                                }
                            }
                            Request::Rotate { first_lsn, done } => {
                                // Make what was written so far durable first.
                                let r = result
                                    .as_ref()
                                    .map_err(|_| WalError::Stopped)
                                    .and_then(|_| file.sync())
                                    .and_then(|_| open_segment(&dir, first_lsn));
                                match r {
                                    Ok(f) => {
                                        file = f;
                                        let _ = done.send(Ok(()));
                                    }
                                    Err(e) => {
                                        let _ = done.send(Err(e));
                                    }
                                }
                            }
                            Request::Stop => stop = true,
                        }
                    }
                    if result.is_ok() && !waiters.is_empty() {
                        result = file.sync();
                    } else if result.is_ok() {
                        file.start_writeback();
                    }
                    match &result {
                        Ok(()) => {
                            if !waiters.is_empty() {
                                if let Some(obs) = &observer {
                                    obs.fsynced(bytes_written);
                                }
                                bytes_written = 0;
                            }
                            if let Some(lsn) = max_lsn {
                                on_durable(lsn);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "WAL write failed; refusing further commits");
                            failed = true;
                        }
                    }
                    for w in waiters {
                        let _ = w.send(match &result {
                            Ok(()) => Ok(()),
                            Err(_) => Err(WalError::Stopped),
                        });
                    }
                    if stop {
                        break;
                    }
                }
            })
            .map_err(io_err(Path::new("wal thread")))?;
        Ok(WalWriter {
            tx,
            thread: Some(thread),
        })
    }

    /// Queues a record; the returned receiver resolves once it is durable.
    /// Callers must submit records in LSN order (they do so under the commit
    /// lock).
    pub fn submit(
        &self,
        lsn: u64,
        payload: Payload,
    ) -> Result<oneshot::Receiver<Result<(), WalError>>, WalError> {
        let len = frame_len(&payload)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Append {
                lsn,
                len,
                payload,
                done,
            })
            .map_err(|_| WalError::Stopped)?;
        Ok(rx)
    }

    /// Queues a staged record (LSN 0): it is written in submission order,
    /// before any record submitted after it, and becomes durable with the
    /// next fsync. Nothing waits for it.
    pub fn stage(&self, payload: Payload) -> Result<(), WalError> {
        let len = frame_len(&payload)?;
        self.tx
            .send(Request::Stage { len, payload })
            .map_err(|_| WalError::Stopped)
    }

    /// Asks the writer to switch to a new file whose first record is
    /// `first_lsn`; resolves once everything before it is durable.
    pub fn rotate_request(
        &self,
        first_lsn: u64,
    ) -> Result<oneshot::Receiver<Result<(), WalError>>, WalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Rotate { first_lsn, done })
            .map_err(|_| WalError::Stopped)?;
        Ok(rx)
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file the writer appends to.
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    pos: u64,
    /// Bytes whose writeback has been started (or synced).
    flushed: u64,
}

impl Segment {
    fn append(&mut self, lsn: u64, len: u32, payload: &Payload) -> Result<(), WalError> {
        let h = header(lsn, len, payload);
        self.file.write_all(&h).map_err(io_err(&self.path))?;
        for p in payload {
            self.file.write_all(p).map_err(io_err(&self.path))?;
        }
        self.pos += HEADER as u64 + u64::from(len) - 8;
        if self.pos - self.flushed >= WRITEBACK_BYTES {
            self.start_writeback();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.file.sync_data().map_err(io_err(&self.path))?;
        self.flushed = self.pos;
        Ok(())
    }

    /// Asks the kernel to start writing back what was appended since the
    /// last call; does not wait. Best effort: an error here only means the
    /// next fsync has more to do.
    fn start_writeback(&mut self) {
        if self.pos == self.flushed {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(off), Ok(n)) = (
                libc::off64_t::try_from(self.flushed),
                libc::off64_t::try_from(self.pos - self.flushed),
            ) else {
                return;
            };
            // SAFETY: the descriptor is open for as long as `self.file` is;
            // sync_file_range only reads its arguments.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        self.flushed = self.pos;
    }
}

fn open_segment(dir: &Path, first_lsn: u64) -> Result<Segment, WalError> {
    let path = dir.join(format!("{first_lsn:020}.log"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let pos = file.metadata().map_err(io_err(&path))?.len();
    // Make the new file's directory entry durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(Segment {
        path,
        file,
        pos,
        flushed: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A writer on a fresh directory and the highest LSN it reported durable.
    fn writer() -> (tempfile::TempDir, WalWriter, Arc<AtomicU64>) {
        let dir = tempfile::tempdir().unwrap();
        let durable = Arc::new(AtomicU64::new(0));
        let d2 = durable.clone();
        let w = WalWriter::start(
            dir.path(),
            1,
            Box::new(move |lsn| d2.store(lsn, Ordering::SeqCst)),
            None,
        )
        .unwrap();
        (dir, w, durable)
    }

    #[tokio::test]
    async fn write_read_and_cut_torn_tail() {
        let (dir, w, durable) = writer();
        let mut rxs = Vec::new();
        for i in 1..=50u64 {
            rxs.push(w.submit(i, vec![format!("rec{i}").into_bytes()]).unwrap());
        }
        for rx in rxs {
            rx.await.unwrap().unwrap();
        }
        assert_eq!(durable.load(Ordering::SeqCst), 50);
        drop(w);
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        // Tear the tail: drop the last 3 bytes.
        let path = &files[0].1;
        let len = fs::metadata(path).unwrap().len();
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len - 3).unwrap();
        let (recs, torn) = read_file(path).unwrap();
        assert!(torn);
        assert_eq!(recs.len(), 49);
        assert_eq!(recs[48].payload, b"rec49");
        // Second read sees a clean file.
        let (recs, torn) = read_file(path).unwrap();
        assert!(!torn);
        assert_eq!(recs.len(), 49);
    }

    #[tokio::test]
    async fn staged_records_precede_and_share_the_next_fsync() {
        let (dir, w, durable) = writer();
        // A large staged record, in two pieces, then a commit record.
        let big = vec![7u8; (WRITEBACK_BYTES as usize) + 5];
        w.stage(vec![b"head".to_vec(), big.clone()]).unwrap();
        assert_eq!(durable.load(Ordering::SeqCst), 0);
        w.submit(1, vec![b"commit".to_vec()])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(durable.load(Ordering::SeqCst), 1);
        drop(w);
        let files = list_files(dir.path()).unwrap();
        let (recs, torn) = read_file(&files[0].1).unwrap();
        assert!(!torn);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].lsn, 0);
        assert_eq!(&recs[0].payload[..4], b"head");
        assert_eq!(&recs[0].payload[4..], &big[..]);
        assert_eq!(
            (recs[1].lsn, recs[1].payload.as_slice()),
            (1, &b"commit"[..])
        );
    }

    #[test]
    fn corrupt_byte_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.log");
        let mut data = frame(1, b"hello").unwrap();
        data.extend(frame(2, b"world").unwrap());
        data.extend(frame(3, b"again").unwrap());
        let second = HEADER + 5;
        data[second + HEADER + 1] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let (recs, torn) = read_file(&path).unwrap();
        assert!(torn);
        assert_eq!(recs.len(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), second as u64);
    }
}
