//! Durability of an index: an append-only operation log plus a periodic snapshot, in the index's directory.
//!
//! - `config.json`: the index's [`IndexConfig`](crate::IndexConfig), written once at creation.
//! - `snapshot.json`: every row as of operation `seq`, replaced atomically (temporary file, fsync, rename, fsync of
//!   the directory).
//! - `ops.log`: records `[length u32 LE][CRC-32 u32 LE][JSON payload]`, each an [`Operation`] with its sequence
//!   number, fsynced before the write is acknowledged.
//!
//! Loading reads the snapshot, then replays the log records newer than it. A crash while appending leaves a torn
//! last record (short, or failing its checksum): it was never acknowledged, so loading stops there and truncates the
//! file, and later appends follow the last good record. A crash between writing a snapshot and emptying the log
//! leaves records the snapshot already holds; their sequence numbers say so and they are skipped.

use crate::VectorError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub(crate) const CONFIG_FILE: &str = "config.json";
const SNAPSHOT_FILE: &str = "snapshot.json";
const LOG_FILE: &str = "ops.log";
const HEADER_BYTES: usize = 8;
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

pub(crate) struct OperationLog {
    dir: PathBuf,
    file: File,
    seq: u64,
    bytes: u64,
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

impl OperationLog {
    /// Opens (creating if needed) the log of `dir` and recovers what it and the snapshot hold.
    pub(crate) fn open(dir: &Path) -> Result<(OperationLog, Recovered), VectorError> {
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
        if good_length < bytes.len() {
            tracing::warn!(
                path = %log_path.display(),
                dropped_bytes = bytes.len() - good_length,
                "ignoring a torn record at the end of a vector index's operation log"
            );
            file.set_len(good_length as u64).map_err(io(&log_path))?;
            file.sync_all().map_err(io(&log_path))?;
        }
        let mut seq = snapshot.seq;
        let mut operations = Vec::new();
        for payload in records {
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
            bytes: good_length as u64,
        };
        Ok((
            log,
            Recovered {
                rows: snapshot.rows,
                operations,
            },
        ))
    }

    /// Appends one operation and fsyncs it: once this returns, the operation survives a crash.
    pub(crate) fn append(&mut self, operation: Operation) -> Result<(), VectorError> {
        let record = Record {
            seq: self.seq + 1,
            operation,
        };
        let payload =
            serde_json::to_vec(&record).map_err(|error| VectorError::Engine(error.to_string()))?;
        let length = u32::try_from(payload.len())
            .map_err(|_| VectorError::InvalidRequest("one write is larger than 4 GiB".into()))?;
        let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
        frame.extend_from_slice(&length.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let path = self.dir.join(LOG_FILE);
        self.file.write_all(&frame).map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.seq = record.seq;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    pub(crate) fn wants_compaction(&self) -> bool {
        self.bytes >= COMPACT_AFTER_BYTES
    }

    /// Replaces the snapshot with `rows` (the state after every appended operation) and empties the log.
    pub(crate) fn compact(&mut self, rows: Vec<Map<String, Value>>) -> Result<(), VectorError> {
        let snapshot = Snapshot {
            seq: self.seq,
            rows,
        };
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|error| VectorError::Engine(error.to_string()))?;
        write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)?;
        let path = self.dir.join(LOG_FILE);
        self.file.set_len(0).map_err(io(&path))?;
        self.file.sync_all().map_err(io(&path))?;
        self.bytes = 0;
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
            let (mut log, _) = OperationLog::open(dir.path()).unwrap();
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
            let (mut log, recovered) = OperationLog::open(dir.path()).unwrap();
            assert_eq!(upserted(&recovered), vec!["\"a\""]);
            log.append(Operation::Upsert {
                rows: vec![row("c")],
            })
            .unwrap();
        }
        let (_, recovered) = OperationLog::open(dir.path()).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\"", "\"c\""]);
    }

    #[test]
    fn a_corrupted_checksum_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = OperationLog::open(dir.path()).unwrap();
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
        let (_, recovered) = OperationLog::open(dir.path()).unwrap();
        assert_eq!(recovered.operations.len(), 1);
    }

    #[test]
    fn compaction_keeps_the_state_and_skips_records_the_snapshot_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = OperationLog::open(dir.path()).unwrap();
        log.append(Operation::Upsert {
            rows: vec![row("a")],
        })
        .unwrap();
        let before = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        log.compact(vec![row("a")]).unwrap();
        // As if the crash came after the snapshot was renamed into place but before the log was emptied.
        std::fs::write(dir.path().join(LOG_FILE), before).unwrap();
        drop(log);
        let (mut log, recovered) = OperationLog::open(dir.path()).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\""]);
        log.append(Operation::Upsert {
            rows: vec![row("b")],
        })
        .unwrap();
        drop(log);
        let (_, recovered) = OperationLog::open(dir.path()).unwrap();
        assert_eq!(upserted(&recovered), vec!["\"a\"", "\"b\""]);
    }
}
