//! What the store's unit tests share: a store of their own, and a user to create in it.

use crate::testing::TemporaryStore;
use crate::{IdentityKind, NewIdentity, SqlStore};

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

/// The temporary store must outlive the open one, so both are returned.
pub async fn open_temporary() -> (TemporaryStore, SqlStore) {
    let temporary = TemporaryStore::new();
    let store = temporary.open().await.unwrap();
    (temporary, store)
}
