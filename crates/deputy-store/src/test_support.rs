//! What the store's unit tests share: a store in a temporary directory, and a user to create in it.

use crate::{IdentityKind, NewIdentity, SqliteStore};

pub fn user(name: &str) -> NewIdentity {
    NewIdentity {
        kind: IdentityKind::User,
        name: name.into(),
        display_name: name.into(),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    }
}

/// The directory must outlive the store, so both are returned.
pub async fn open_temporary() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("metadata.db"))
        .await
        .unwrap();
    (dir, store)
}
