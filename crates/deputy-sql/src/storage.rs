//! Where a managed table's rows live on disk, and how they change without a reader or a crash ever seeing half a
//! change.
//!
//! A table's rows are the Parquet files of one **version directory**: `tables/<id>/` when the table is created, and
//! `tables/<id>-<uuid>/` after each rewrite (DELETE, UPDATE, CREATE OR REPLACE). The small file `tables/<id>.current`
//! names the current version; without it the version is `tables/<id>/`. Version directories are siblings, never
//! nested, because a listing table reads every Parquet file under its directory.
//!
//! - **Appends** (INSERT, COPY INTO, CTAS) add a file to the current version. [`ParquetFile`] writes it under a hidden
//!   name that no listing picks up (`.part-<uuid>.parquet.partial`), syncs it and renames it into place.
//! - **Rewrites** write the table's new rows into a fresh version directory, which nothing names yet, sync it, then
//!   replace the pointer file by a rename, atomic on POSIX file systems ([`NewVersion::commit`]). A crash or an
//!   error before that rename leaves the old version current and the new directory an orphan; after it, the new
//!   version is complete. Orphans are removed by the next commit or when the [`NewVersion`] is dropped.
//! - **Writers of one table are serialised** ([`TableLocks`]): a rewrite reads the current version and replaces it,
//!   so an append landing in between would be lost. The lock is held across processes too (an exclusive lock on
//!   `tables/<id>.lock`), because replicas sharing one storage directory write the same tables: a commit's
//!   read-modify-publish of the pointer file and an append into the current version never interleave with another
//!   process's. Nothing about a table's files is cached in memory between statements (the pointer is read and the
//!   version directory listed afresh by every statement), so a write by another process is seen by the next
//!   statement that starts after it was acknowledged.
//!
//! The version a commit replaces is kept until the following commit, so a statement that opened it just before the
//! switch can still read its files.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::errors::ParquetError;
use deputy_store::catalog::SecurableId;
use tokio::sync::OwnedMutexGuard;

use crate::SqlError;

/// The `tables/` directory of an engine.
#[derive(Debug)]
pub(crate) struct TableFiles {
    root: PathBuf,
}

impl TableFiles {
    pub(crate) fn new(root: PathBuf) -> TableFiles {
        TableFiles { root }
    }

    fn pointer(&self, id: SecurableId) -> PathBuf {
        self.root.join(format!("{}.current", id.0))
    }

    /// The directory holding the table's current rows.
    pub(crate) fn current(&self, id: SecurableId) -> Result<PathBuf, SqlError> {
        match std::fs::read_to_string(self.pointer(id)) {
            Ok(name) => Ok(self.root.join(name.trim())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.root.join(id.0.to_string()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Creates the first version of a new table.
    pub(crate) fn create(&self, id: SecurableId) -> Result<PathBuf, SqlError> {
        let directory = self.root.join(id.0.to_string());
        std::fs::create_dir_all(&directory)?;
        Ok(directory)
    }

    /// An empty, not yet visible version to write a table's new rows into.
    pub(crate) fn new_version(&self, id: SecurableId) -> Result<NewVersion<'_>, SqlError> {
        let name = format!("{}-{}", id.0, uuid::Uuid::new_v4());
        let directory = self.root.join(&name);
        std::fs::create_dir(&directory)?;
        Ok(NewVersion {
            files: self,
            id,
            name,
            directory,
            committed: false,
        })
    }

    /// The names of every version directory of the table, current or not.
    fn versions(&self, id: SecurableId) -> Result<Vec<String>, SqlError> {
        let first = id.0.to_string();
        let later = format!("{first}-");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && (name == first || name.starts_with(&later))
                && entry.file_type()?.is_dir()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Removes every file of a dropped table.
    pub(crate) fn remove(&self, id: SecurableId) -> Result<(), SqlError> {
        for name in self.versions(id)? {
            std::fs::remove_dir_all(self.root.join(name))?;
        }
        for file in [self.pointer(id), lock_file(&self.root, id)] {
            match std::fs::remove_file(file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error.into());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A version being written; see the module docs. Dropped without [`commit`](NewVersion::commit), it is deleted.
#[derive(Debug)]
pub(crate) struct NewVersion<'a> {
    files: &'a TableFiles,
    id: SecurableId,
    name: String,
    directory: PathBuf,
    committed: bool,
}

impl NewVersion<'_> {
    pub(crate) fn directory(&self) -> &Path {
        &self.directory
    }

    /// Makes this version the table's rows, atomically, then removes the versions older than the one it replaces.
    pub(crate) fn commit(mut self) -> Result<(), SqlError> {
        let replaced = self.files.current(self.id)?;
        sync_directory(&self.directory)?;
        let pointer = self.files.pointer(self.id);
        let staged =
            self.files
                .root
                .join(format!(".{}.current.{}", self.id.0, uuid::Uuid::new_v4()));
        std::fs::write(&staged, &self.name)?;
        File::open(&staged)?.sync_all()?;
        if let Err(error) = std::fs::rename(&staged, &pointer) {
            let _ = std::fs::remove_file(&staged);
            return Err(error.into());
        }
        self.committed = true;
        sync_directory(&self.files.root)?;
        // The switch is done; failing to tidy up must not fail the statement. Orphans are retried next time.
        if let Ok(versions) = self.files.versions(self.id) {
            for name in versions {
                let path = self.files.root.join(&name);
                if name != self.name && path != replaced {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
        Ok(())
    }
}

impl Drop for NewVersion<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }
}

fn sync_directory(directory: &Path) -> Result<(), SqlError> {
    File::open(directory)?.sync_all()?;
    Ok(())
}

/// One Parquet file being written into a table directory, invisible until [`finish`](ParquetFile::finish).
/// Dropped unfinished (an error, a cancelled statement), its partial file is deleted.
pub(crate) struct ParquetFile {
    partial: PathBuf,
    complete: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    rows: usize,
}

impl ParquetFile {
    /// Batches written must have `schema`'s columns and types.
    pub(crate) fn create(directory: &Path, schema: &SchemaRef) -> Result<ParquetFile, SqlError> {
        let id = uuid::Uuid::new_v4();
        let partial = directory.join(format!(".part-{id}.parquet.partial"));
        let complete = directory.join(format!("part-{id}.parquet"));
        let file = File::create(&partial)?;
        let writer = ArrowWriter::try_new(file, Arc::clone(schema), None).map_err(parquet_error)?;
        Ok(ParquetFile {
            partial,
            complete,
            schema: Arc::clone(schema),
            writer: Some(writer),
            rows: 0,
        })
    }

    /// Writes a batch whose columns are the table's, in order, each cast to the table's type: a query's
    /// `Utf8View` or `Int64` literal is stored as the declared `string` or `int`.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), SqlError> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| cast(column, field.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| SqlError::Execution(error.to_string()))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|error| SqlError::Execution(error.to_string()))?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SqlError::Internal("the file is already closed".to_owned()))?;
        writer.write(&batch).map_err(parquet_error)?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Completes the file and gives it its visible name; returns the number of rows written.
    pub(crate) fn finish(mut self) -> Result<usize, SqlError> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| SqlError::Internal("the file is already closed".to_owned()))?;
        let file = writer.into_inner().map_err(parquet_error)?;
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.complete)?;
        Ok(self.rows)
    }
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn parquet_error(error: ParquetError) -> SqlError {
    SqlError::Internal(format!("writing table data: {error}"))
}

/// The file whose exclusive lock (`flock`) a writer of the table holds, in every process sharing the storage.
fn lock_file(root: &Path, id: SecurableId) -> PathBuf {
    root.join(format!("{}.lock", id.0))
}

/// One lock per table, held by every statement that writes the table's files (see the module docs): first this
/// process's own (so its statements queue in memory), then the table's lock file (so other processes' wait).
#[derive(Debug)]
pub(crate) struct TableLocks {
    root: PathBuf,
    locks: Mutex<HashMap<SecurableId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A table's write lock; both locks are released when it is dropped.
#[derive(Debug)]
pub(crate) struct TableLock {
    // Declared first, so the other processes' turn comes before this process's next statement's.
    _file: File,
    _local: OwnedMutexGuard<()>,
}

impl TableLocks {
    /// The locks of the tables under `root` (the `tables/` directory).
    pub(crate) fn new(root: PathBuf) -> TableLocks {
        TableLocks {
            root,
            locks: Mutex::default(),
        }
    }

    pub(crate) async fn lock(&self, id: SecurableId) -> Result<TableLock, SqlError> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| SqlError::Internal("the table lock map is poisoned".to_owned()))?;
            Arc::clone(locks.entry(id).or_default())
        };
        let local = lock.lock_owned().await;
        let path = lock_file(&self.root, id);
        // Waiting for another process blocks a thread, so it is not one of the async workers. Should the statement
        // be cancelled meanwhile, the lock taken later is released as soon as the blocking task ends.
        let file = tokio::task::spawn_blocking(move || lock_exclusively(&path))
            .await
            .map_err(|error| SqlError::Internal(format!("taking a table lock: {error}")))??;
        Ok(TableLock {
            _file: file,
            _local: local,
        })
    }
}

/// Opens (creating) `path` and takes its exclusive lock, waiting as long as another process holds it. Exclusive
/// `flock` locks over NFS need the file open for writing, hence the write mode.
fn lock_exclusively(path: &Path) -> Result<File, SqlError> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.lock()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_visible_only_once_committed() {
        let root = tempfile::tempdir().unwrap();
        let files = TableFiles::new(root.path().to_owned());
        let id = SecurableId(7);
        let first = files.create(id).unwrap();
        assert_eq!(files.current(id).unwrap(), first);

        // Abandoned (an error before the commit): the table is unchanged and the new directory is gone.
        let abandoned = files.new_version(id).unwrap();
        let abandoned_dir = abandoned.directory().to_owned();
        drop(abandoned);
        assert_eq!(files.current(id).unwrap(), first);
        assert!(!abandoned_dir.exists());

        let second = files.new_version(id).unwrap();
        let second_dir = second.directory().to_owned();
        second.commit().unwrap();
        assert_eq!(files.current(id).unwrap(), second_dir);
        // The replaced version survives one more commit, for statements that opened it just before.
        assert!(first.exists());
        let third = files.new_version(id).unwrap();
        let third_dir = third.directory().to_owned();
        third.commit().unwrap();
        assert_eq!(files.current(id).unwrap(), third_dir);
        assert!(!first.exists() && second_dir.exists());

        files.remove(id).unwrap();
        assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
    }

    /// Two engines on one directory stand for two processes sharing the storage: each has its own in-memory locks,
    /// and the lock files' opens are separate, so `flock` keeps them apart exactly as it keeps processes apart.
    #[tokio::test]
    async fn a_table_lock_holds_across_engines_sharing_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let (first, second) = (
            TableLocks::new(root.path().to_owned()),
            TableLocks::new(root.path().to_owned()),
        );
        let id = SecurableId(7);
        let held = first.lock(id).await.unwrap();
        let waiting = tokio::spawn(async move {
            let lock = second.lock(id).await.unwrap();
            drop(lock);
            second
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the second engine took a held lock");
        // Another table's lock is independent.
        drop(first.lock(SecurableId(8)).await.unwrap());
        drop(held);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the lock was not handed over")
            .unwrap();
        drop(second.lock(id).await.unwrap());

        // Dropping the table removes its lock file with its other files.
        TableFiles::new(root.path().to_owned()).remove(id).unwrap();
        assert!(!lock_file(root.path(), id).exists());
    }
}
