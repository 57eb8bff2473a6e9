//! Durability of an index: an append-only operation log plus a periodic snapshot, in the index's directory.
//!
//! - `config.json`: the index's [`IndexConfig`](crate::IndexConfig), written once at creation. It is also the
//!   index's lock file (see below): it exists exactly as long as the index and is never rewritten.
//! - `snapshot.json`: every row as of operation `seq`, replaced atomically (temporary file, fsync, rename, fsync of
//!   the directory).
//! - `ops.log`: records `[length u32 LE][CRC-32 u32 LE][JSON payload]`, each an [`Operation`] with its sequence
//!   number, fsynced before the write is acknowledged. A log written by a compaction starts with a header record,
//!   `{"base": seq}`, naming the snapshot it continues.
//!
//! Loading reads the snapshot, then replays the log records newer than it. A crash while appending leaves a torn
//! last record (short, or failing its checksum): it was never acknowledged, so loading stops there and truncates the
//! file, and later appends follow the last good record. A crash between writing a snapshot and emptying the log
//! leaves records the snapshot already holds; their sequence numbers say so and they are skipped.
//!
//! **Several processes** (replicas sharing one storage directory) may hold the same index open. Every write takes
//! an exclusive `flock` on `config.json`, first applies what other processes appended since this one last looked
//! ([`OperationLog::catch_up`]), then appends with the next sequence number: records never interleave and sequence
//! numbers never repeat. Readers take the lock shared to check the log for others' writes: the log's length and
//! its header together say whether anything changed (a log only grows, except when a compaction empties it, and a
//! compaction writes a new header). New records are read from where this process stopped and applied; only when
//! another process compacted past what this one had applied is the index loaded again from the snapshot.

use crate::VectorError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub(crate) const CONFIG_FILE: &str = "config.json";
const SNAPSHOT_FILE: &str = "snapshot.json";
const LOG_FILE: &str = "ops.log";
const HEADER_BYTES: usize = 8;
/// A header record is `{"base":N}`: well under this many bytes.
const MAX_HEADER_PAYLOAD: usize = 64;
/// The log is folded into a new snapshot once it holds this many bytes.
const COMPACT_AFTER_BYTES: u64 = 64 * 1024 * 1024;

/// One acknowledged change. Rows are stored as the client sent them (the vector as a JSON array).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Operation {
    Upsert { rows: Vec<Map<String, Value>> },
    Delete { keys: Vec<String> },
}

#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    #[serde(flatten)]
    operation: Operation,
}

/// The first record of a log a compaction wrote: the sequence number of the snapshot the log continues.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    base: u64,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    rows: Vec<Map<String, Value>>,
}

/// What loading found: the snapshot's rows, then the operations to replay on top, in order.
pub(crate) struct Recovered {
    pub(crate) rows: Vec<Map<String, Value>>,
    pub(crate) operations: Vec<Operation>,
}

/// What another process changed since this one last read the log.
#[derive(Debug)]
pub(crate) enum CatchUp {
    /// These operations, in order (none: nothing changed).
    Apply(Vec<Operation>),
    /// Another process compacted the log past what this one applied: load the index again.
    Reload,
}

#[cfg(test)]
impl CatchUp {
    fn is_reload(&self) -> bool {
        matches!(self, CatchUp::Reload)
    }
}

/// How a lock on the index's files is held.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockMode {
    /// Reading the log to catch up.
    Shared,
    /// Loading, appending, compacting.
    Exclusive,
}

pub(crate) struct OperationLog {
    dir: PathBuf,
    file: File,
    /// The sequence number of the last operation applied.
    seq: u64,
    /// The bytes of the log read and applied (or, for a header, skipped): the end of its last good record.
    offset: u64,
    /// The log's header, if it has one: what tells a compacted log from the one read before.
    base: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VectorError + '_ {
    move |source| VectorError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> VectorError {
    VectorError::Corrupt {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old file or the new one, never a mix.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VectorError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), VectorError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io(dir))
}

/// Takes the lock of the index in `dir`, waiting while another process (or another open of this process) holds it
/// incompatibly; dropping the returned file releases it. An index whose directory is gone, before or while waiting
/// (see [`delete_locked`]), is [`VectorError::Deleted`]. The file is opened for writing because `flock` over NFS is
/// emulated with `fcntl` locks, whose exclusive kind needs it; it is never written through this handle, nor created
/// by it.
pub(crate) fn lock(dir: &Path, mode: LockMode) -> Result<File, VectorError> {
    let path = dir.join(CONFIG_FILE);
    let deleted = || VectorError::Deleted {
        path: dir.to_owned(),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => deleted(),
            _ => VectorError::Io {
                path: path.clone(),
                source,
            },
        })?;
    match mode {
        LockMode::Shared => file.lock_shared(),
        LockMode::Exclusive => file.lock(),
    }
    .map_err(io(&path))?;
    // The lock was granted after a deletion released it: the file is no longer the index's.
    if !path.exists() {
        return Err(deleted());
    }
    Ok(file)
}

/// Deletes the index in `dir` under its exclusive lock, so a write in progress in any process finishes first and one
/// waiting for the lock then finds the index deleted instead of acknowledging a write into removed files.
pub(crate) fn delete_locked(dir: &Path) -> Result<(), VectorError> {
    let _lock = match lock(dir, LockMode::Exclusive) {
        Err(VectorError::Deleted { .. }) => return Ok(()),
        locked => locked?,
    };
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(error)),
        _ => Ok(()),
    }
}

/// The header's payload as a frame (length, checksum, payload).
fn frame(payload: &[u8]) -> Result<Vec<u8>, VectorError> {
    let length = u32::try_from(payload.len())
        .map_err(|_| VectorError::InvalidRequest("one write is larger than 4 GiB".into()))?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// The header a log's first record holds, if it is one.
fn header_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Header>(payload)
        .ok()
        .map(|header| header.base)
}

impl OperationLog {
    /// Opens (creating if needed) the log of `dir` and recovers what it and the snapshot hold. The caller holds the
    /// index's lock; `repair` (an exclusive lock) cuts a torn last record off the file, otherwise it is only skipped.
    pub(crate) fn open(dir: &Path, repair: bool) -> Result<(OperationLog, Recovered), VectorError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice::<Snapshot>(&bytes)
                .map_err(|error| corrupt(&snapshot_path, error))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Snapshot {
                seq: 0,
                rows: Vec::new(),
            },
            Err(error) => return Err(io(&snapshot_path)(error)),
        };
        let log_path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&log_path))?;
        let (records, good_length) = read_records(&bytes);
        if good_length < bytes.len() && repair {
            tracing::warn!(
                path = %log_path.display(),
                dropped_bytes = bytes.len() - good_length,
                "ignoring a torn record at the end of a vector index's operation log"
            );
            file.set_len(good_length as u64).map_err(io(&log_path))?;
            file.sync_all().map_err(io(&log_path))?;
        }
        let mut seq = snapshot.seq;
        let mut base = None;
        let mut operations = Vec::new();
        for (position, payload) in records.into_iter().enumerate() {
            if position == 0
                && let Some(header) = header_of(payload)
            {
                base = Some(header);
                continue;
            }
            let record: Record =
                serde_json::from_slice(payload).map_err(|error| corrupt(&log_path, error))?;
            if record.seq > seq {
                seq = record.seq;
                operations.push(record.operation);
            }
        }
        let log = OperationLog {
            dir: dir.to_owned(),
            file,
            seq,
            offset: good_length as u64,
            base,
        };
        Ok((
            log,
            Recovered {
                rows: snapshot.rows,
                operations,
            },
        ))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn length(&self) -> Result<u64, VectorError> {
        Ok(self.file.metadata().map_err(io(&self.path()))?.len())
    }

    /// The bytes of the log from `offset` to `end`.
    fn read_range(&self, offset: u64, end: u64) -> Result<Vec<u8>, VectorError> {
        let path = self.path();
        let mut reader = &self.file;
        reader.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
        let mut bytes = Vec::new();
        reader
            .take(end.saturating_sub(offset))
            .read_to_end(&mut bytes)
            .map_err(io(&path))?;
        Ok(bytes)
    }

    /// The log's header now, and the length of its record: `(None, 0)` for a log without one.
    fn current_header(&self, length: u64) -> Result<(Option<u64>, u64), VectorError> {
        let bytes = self.read_range(0, length.min((HEADER_BYTES + MAX_HEADER_PAYLOAD) as u64))?;
        let (records, _) = read_records(&bytes);
        let first = records
            .first()
            .and_then(|payload| header_of(payload).map(|base| (base, payload.len())));
        Ok(match first {
            Some((base, payload)) => (Some(base), (HEADER_BYTES + payload) as u64),
            None => (None, 0),
        })
    }

    /// Whether the log holds nothing this process has not applied. The caller holds the index's lock (shared).
    pub(crate) fn is_current(&self) -> Result<bool, VectorError> {
        let length = self.length()?;
        Ok(length == self.offset && self.current_header(length)?.0 == self.base)
    }

    /// What other processes wrote since this one last read the log. The caller holds the index's lock, and applies
    /// what is returned (or loads the index again) before anything else; `repair` (an exclusive lock) cuts a torn
    /// last record off the file, so that the next append follows the last good record.
    pub(crate) fn catch_up(&mut self, repair: bool) -> Result<CatchUp, VectorError> {
        let length = self.length()?;
        let (base, header_length) = self.current_header(length)?;
        if base != self.base {
            // Compacted by another process. If the new snapshot is exactly the state applied here, the log after
            // its header continues from here; otherwise the snapshot holds operations never applied here.
            match base {
                Some(base) if base == self.seq => {
                    self.base = Some(base);
                    self.offset = header_length;
                }
                _ => return Ok(CatchUp::Reload),
            }
        }
        if length < self.offset {
            return Ok(CatchUp::Reload);
        }
        if length == self.offset {
            return Ok(CatchUp::Apply(Vec::new()));
        }
        let path = self.path();
        let bytes = self.read_range(self.offset, length)?;
        let (records, good_length) = read_records(&bytes);
        let mut operations = Vec::new();
        for payload in records {
            let record: Record =
                serde_json::from_slice(payload).map_err(|error| corrupt(&path, error))?;
            if record.seq <= self.seq {
                continue;
            }
            if record.seq != self.seq + 1 {
                // A gap: never written so, but loading again is always right.
                return Ok(CatchUp::Reload);
            }
            self.seq = record.seq;
            operations.push(record.operation);
        }
        self.offset += good_length as u64;
        if good_length < bytes.len() && repair {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - good_length,
                "ignoring a torn record at the end of a vector index's operation log"
            );
            self.file.set_len(self.offset).map_err(io(&path))?;
            self.file.sync_all().map_err(io(&path))?;
        }
        Ok(CatchUp::Apply(operations))
    }

    /// Appends one operation and fsyncs it: once this returns, the operation survives a crash. The caller holds the
    /// index's lock (exclusive) and has caught up.
    pub(crate) fn append(&mut self, operation: Operation) -> Result<(), VectorError> {
        let record = Record {
            seq: self.seq + 1,
            operation,
        };
        let payload =
            serde_json::to_vec(&record).map_err(|error| VectorError::Engine(error.to_string()))?;
        let frame = frame(&payload)?;
        let path = self.path();
        self.file.write_all(&frame).map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.seq = record.seq;
        self.offset += frame.len() as u64;
        Ok(())
    }

    pub(crate) fn wants_compaction(&self) -> bool {
        self.offset >= COMPACT_AFTER_BYTES
    }

    /// Replaces the snapshot with `rows` (the state after every appended operation) and empties the log but for a
    /// header naming the snapshot. The caller holds the index's lock (exclusive).
    pub(crate) fn compact(&mut self, rows: Vec<Map<String, Value>>) -> Result<(), VectorError> {
        let snapshot = Snapshot {
            seq: self.seq,
            rows,
        };
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|error| VectorError::Engine(error.to_string()))?;
        write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)?;
        let header = serde_json::to_vec(&Header { base: self.seq })
            .map_err(|error| VectorError::Engine(error.to_string()))?;
        let header = frame(&header)?;
        let path = self.path();
        self.file.set_len(0).map_err(io(&path))?;
        self.file.write_all(&header).map_err(io(&path))?;
        self.file.sync_all().map_err(io(&path))?;
        self.base = Some(self.seq);
        self.offset = header.len() as u64;
        Ok(())
    }
}

/// The payloads of the well-formed records at the start of `bytes`, and how many bytes they span.
fn read_records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + HEADER_BYTES) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = offset + HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + length) else {
            break;
        };
        if crc32fast::hash(payload) != checksum {
            break;
        }
        records.push(payload);
        offset = start + length;
    }
    (records, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: &str) -> Map<String, Value> {
        json!({ "id": id }).as_object().cloned().unwrap_or_default()
    }

    fn upserted(recovered: &Recovered) -> Vec<String> {
        let mut ids: Vec<String> = recovered
            .rows
            .iter()
            .map(|row| row["id"].to_string())
            .collect();
        for operation in &recovered.operations {
            if let Operation::Upsert { rows } = operation {
                ids.extend(rows.iter().map(|row| row["id"].to_string()));
            }
        }
        ids
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = OperationLog::open(dir.path(), true).unwrap();
            log.append(Operation::Upsert {
                rows: vec![row("a")],
            })
            .unwrap();
            log.append(Operation::Upsert {
                rows: vec![row("b")],
            })
            .unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let length = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the second record's payload.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        {
            let (mut log, recovered) = OperationLog::open(dir.path(), true).unwrap();
            assert_eq!(upserted(&recovered), vec!["\"a\""]);
            log.append(Operation::Upsert {
                rows: vec![row("c")],
            })
            .unwrap();
        }
        let (_, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\"", "\"c\""]);
    }

    #[test]
    fn a_corrupted_checksum_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = OperationLog::open(dir.path(), true).unwrap();
            log.append(Operation::Upsert {
                rows: vec![row("a")],
            })
            .unwrap();
            log.append(Operation::Delete {
                keys: vec!["a".into()],
            })
            .unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (_, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(recovered.operations.len(), 1);
    }

    #[test]
    fn compaction_keeps_the_state_and_skips_records_the_snapshot_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = OperationLog::open(dir.path(), true).unwrap();
        log.append(Operation::Upsert {
            rows: vec![row("a")],
        })
        .unwrap();
        let before = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        log.compact(vec![row("a")]).unwrap();
        // As if the crash came after the snapshot was renamed into place but before the log was emptied.
        std::fs::write(dir.path().join(LOG_FILE), before).unwrap();
        drop(log);
        let (mut log, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\""]);
        log.append(Operation::Upsert {
            rows: vec![row("b")],
        })
        .unwrap();
        drop(log);
        let (_, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\"", "\"b\""]);
    }

    fn applied(catch_up: CatchUp) -> Option<usize> {
        match catch_up {
            CatchUp::Apply(operations) => Some(operations.len()),
            CatchUp::Reload => None,
        }
    }

    #[test]
    fn another_process_compaction_is_followed_or_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) = OperationLog::open(dir.path(), true).unwrap();
        let (mut b, _) = OperationLog::open(dir.path(), true).unwrap();
        a.append(Operation::Upsert {
            rows: vec![row("a")],
        })
        .unwrap();
        assert!(!b.is_current().unwrap());
        assert_eq!(applied(b.catch_up(false).unwrap()), Some(1));
        assert!(b.is_current().unwrap());

        // A compacts what B already applied: B continues after the new header, without loading again.
        a.compact(vec![row("a")]).unwrap();
        assert!(!b.is_current().unwrap(), "a compaction changes the header");
        assert_eq!(applied(b.catch_up(false).unwrap()), Some(0));
        assert!(b.is_current().unwrap());
        a.append(Operation::Delete {
            keys: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(applied(b.catch_up(false).unwrap()), Some(1));

        // B writes next (it has caught up), then A compacts past an operation B never read: B must load again.
        b.append(Operation::Upsert {
            rows: vec![row("b")],
        })
        .unwrap();
        assert_eq!(applied(a.catch_up(true).unwrap()), Some(1));
        a.append(Operation::Upsert {
            rows: vec![row("c")],
        })
        .unwrap();
        a.compact(vec![row("b"), row("c")]).unwrap();
        assert!(b.catch_up(false).unwrap().is_reload());

        // Whatever happened, a fresh load has every operation once.
        let (_, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"b\"", "\"c\""]);
        assert!(recovered.operations.is_empty());
    }

    #[test]
    fn a_writer_waiting_while_the_index_is_deleted_finds_it_deleted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("index");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), b"{}").unwrap();
        // Another process's write in progress holds the lock; a deletion waits for it, and a writer after it.
        let in_progress = lock(&dir, LockMode::Exclusive).unwrap();
        let deleting = {
            let dir = dir.clone();
            std::thread::spawn(move || delete_locked(&dir))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            dir.exists(),
            "the deletion waited for the write in progress"
        );
        drop(in_progress);
        deleting.join().unwrap().unwrap();
        assert!(!dir.exists());
        assert!(matches!(
            lock(&dir, LockMode::Exclusive),
            Err(VectorError::Deleted { .. })
        ));
        assert!(
            delete_locked(&dir).is_ok(),
            "deleting what is gone succeeds"
        );
    }

    #[test]
    fn a_lock_granted_after_its_file_was_removed_reports_the_index_deleted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("index");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), b"{}").unwrap();
        let held = lock(&dir, LockMode::Exclusive).unwrap();
        let waiting = {
            let dir = dir.clone();
            std::thread::spawn(move || lock(&dir, LockMode::Exclusive).map(|_| ()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Removed while the waiter had the file open and waited for its lock.
        std::fs::remove_dir_all(&dir).unwrap();
        drop(held);
        assert!(matches!(
            waiting.join().unwrap(),
            Err(VectorError::Deleted { .. })
        ));
    }

    #[test]
    fn a_torn_record_is_skipped_by_readers_and_cut_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) = OperationLog::open(dir.path(), true).unwrap();
        let (mut b, _) = OperationLog::open(dir.path(), true).unwrap();
        a.append(Operation::Upsert {
            rows: vec![row("a")],
        })
        .unwrap();
        // A process died in the middle of its next append.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .write_all(&[9, 0, 0, 0, 1])
            .unwrap();
        assert_eq!(applied(b.catch_up(false).unwrap()), Some(1));
        assert_eq!(applied(a.catch_up(true).unwrap()), Some(0));
        a.append(Operation::Upsert {
            rows: vec![row("b")],
        })
        .unwrap();
        assert_eq!(applied(b.catch_up(false).unwrap()), Some(1));
        let (_, recovered) = OperationLog::open(dir.path(), true).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\"", "\"b\""]);
    }
}
