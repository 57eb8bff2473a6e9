//! Stores for tests, this crate's and other crates': SQLite in a temporary directory by default or, when
//! `DEPUTY_TEST_POSTGRES_URL` names a PostgreSQL server, a database of their own on it. One switch runs the same
//! tests on either database.

use crate::{SqlStore, StoreResult};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The switch: a `postgres://` URL of a server (its path, if any, is replaced by a fresh database's name).
pub const POSTGRES_SWITCH: &str = "DEPUTY_TEST_POSTGRES_URL";

/// A temporary directory and the database URL of a store nothing else uses. The directory must outlive the store.
pub struct TemporaryStore {
    dir: tempfile::TempDir,
    url: String,
}

impl TemporaryStore {
    /// Panics without a temporary directory or with a switch that is not a URL: a test cannot run without them.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn new() -> TemporaryStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = fresh_postgres_database()
            .unwrap_or_else(|| SqlStore::sqlite_url(&dir.path().join("metadata.db")));
        TemporaryStore { dir, url }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens the store; again after it was closed, to see what survived.
    pub async fn open(&self) -> StoreResult<SqlStore> {
        SqlStore::connect(&self.url).await
    }
}

impl Default for TemporaryStore {
    fn default() -> TemporaryStore {
        TemporaryStore::new()
    }
}

/// A URL naming a database no one has used, on the switch's PostgreSQL server; `None` when the switch is off.
pub fn fresh_postgres_database() -> Option<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let next = NEXT.fetch_add(1, Ordering::Relaxed);
    postgres_database(&format!("{}_{next}_{nanos}", std::process::id()))
}

/// The database of a server started on `data_dir` under the switch: the same for every start on that directory,
/// so a restarted server finds its state, and a different one for every other directory.
pub fn postgres_database_for(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.to_owned())
        .hash(&mut hasher);
    postgres_database(&format!("{:016x}", hasher.finish()))
}

#[allow(clippy::panic)]
fn postgres_database(suffix: &str) -> Option<String> {
    let server = std::env::var(POSTGRES_SWITCH)
        .ok()
        .filter(|url| !url.is_empty())?;
    let mut url = url::Url::parse(&server)
        .unwrap_or_else(|error| panic!("{POSTGRES_SWITCH} is not a URL: {error}"));
    url.set_path(&format!("/deputy_test_{suffix}"));
    Some(url.to_string())
}
