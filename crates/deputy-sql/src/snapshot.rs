//! Conversions between the store's principal ids and the engine's. The snapshot itself is built by
//! `deputy_catalog::load_snapshot`, shared with the server.

use deputy_authz::PrincipalId;

/// Converts a store id to the engine's. Store ids are SQLite rowids, never negative.
pub(crate) fn authz_principal(id: deputy_store::PrincipalId) -> Result<PrincipalId, String> {
    u64::try_from(id.0)
        .map(PrincipalId)
        .map_err(|_| format!("negative principal id {}", id.0))
}

pub(crate) fn store_principal(id: PrincipalId) -> Result<deputy_store::PrincipalId, String> {
    i64::try_from(id.0)
        .map(deputy_store::PrincipalId)
        .map_err(|_| format!("principal id {} out of range", id.0))
}
