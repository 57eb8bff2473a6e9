//! Unity Catalog state shared by the REST API and the SQL engine: how securable kinds map to stored rows, and how
//! the authorization [`Snapshot`] is rebuilt from the store.
//!
//! **Architecture invariant:** the store is the source of truth and the snapshot a derived, in-memory view of it.
//! Whoever writes identities, memberships, securables, grants or ACLs publishes a snapshot brought up to date *after*
//! the write committed, before answering; so a decision never sees a state the store does not have. A snapshot is
//! brought up to date from the store's authorization change log ([`changes`]): only what changed is read and
//! applied, and anything the log cannot express (a rename, a pruned log) rebuilds it whole ([`snapshot_of`]).

pub mod changes;

pub use changes::{SnapshotPosition, apply_delta};

use deputy_authz::{
    PermissionLevel, PrincipalId, PrincipalType, Privilege, PrivilegeSet, SecurableKind,
    SecurableRef, Snapshot, WorkspaceObjectKind, WorkspaceObjectRef,
};
use deputy_store::catalog::{
    AclEntry, AuthorizationRows, GrantRecord, NewSecurable, SecurableRecord,
};
use deputy_store::{IdentityKind, Store, StoreError};
use std::collections::BTreeMap;

/// The metastore every catalog and connection hangs off. There is one per workspace.
pub const METASTORE_NAME: &str = "metastore";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored catalog state is inconsistent: {0}")]
    Inconsistent(String),
    /// A change the change log does not carry enough to apply in place: the snapshot must be rebuilt whole.
    #[error("{0}: the authorization snapshot is rebuilt whole")]
    RebuildNeeded(&'static str),
}

/// The stored `namespace` of a kind: kinds whose names collide share one.
pub fn namespace_of(kind: SecurableKind) -> &'static str {
    match kind {
        SecurableKind::Table | SecurableKind::View | SecurableKind::VectorIndex => "relation",
        other => other.name(),
    }
}

/// The `object_type` of workspace objects in the store and in `/api/2.0/permissions/{object_type}/{id}`.
pub fn object_type_of(kind: WorkspaceObjectKind) -> &'static str {
    match kind {
        WorkspaceObjectKind::ServingEndpoint => "serving-endpoints",
        WorkspaceObjectKind::Warehouse => "warehouses",
        WorkspaceObjectKind::VectorSearchEndpoint => "vector-search-endpoints",
        WorkspaceObjectKind::GenieSpace => "genie",
    }
}

pub fn object_kind_from_type(object_type: &str) -> Option<WorkspaceObjectKind> {
    WorkspaceObjectKind::ALL
        .into_iter()
        .find(|kind| object_type_of(*kind) == object_type)
}

pub fn principal_id(id: deputy_store::PrincipalId) -> PrincipalId {
    // Store ids come from SQLite's AUTOINCREMENT: positive and never reused, as the engine requires.
    PrincipalId(id.0.unsigned_abs())
}

pub fn store_principal_id(id: PrincipalId) -> deputy_store::PrincipalId {
    deputy_store::PrincipalId(i64::try_from(id.0).unwrap_or(i64::MAX))
}

/// A securable to store, with no comment, properties or spec yet; its creator owns it.
pub fn new_securable(
    kind: SecurableKind,
    full_name: &str,
    parent: Option<deputy_store::catalog::SecurableId>,
    owner: deputy_store::PrincipalId,
) -> NewSecurable {
    NewSecurable {
        kind: kind.name().into(),
        namespace: namespace_of(kind).into(),
        full_name: full_name.into(),
        parent_id: parent,
        owner_id: owner,
        comment: None,
        properties: "{}".into(),
        spec: "{}".into(),
        created_by: owner,
    }
}

pub fn securable_ref(record: &SecurableRecord) -> Result<SecurableRef, CatalogError> {
    let kind = SecurableKind::from_name(&record.kind).ok_or_else(|| {
        CatalogError::Inconsistent(format!("unknown securable kind `{}`", record.kind))
    })?;
    Ok(SecurableRef::new(kind, &record.full_name))
}

/// Builds the whole authorization snapshot from the store, read at one moment: principals and memberships, the metastore (owned by the
/// `admins` group), securables in creation order (parents first), grants, and workspace-object ACLs.
pub async fn load_snapshot(store: &dyn Store) -> Result<Snapshot, CatalogError> {
    snapshot_of(&store.authorization_rows().await?).map(|(snapshot, _)| snapshot)
}

/// The snapshot of rows read at one moment ([`deputy_store::catalog::AuthorizationRows`]), and where it stands
/// against the change log.
pub fn snapshot_of(rows: &AuthorizationRows) -> Result<(Snapshot, SnapshotPosition), CatalogError> {
    let identities = &rows.identities;
    let admins = identities
        .iter()
        .find(|identity| {
            identity.kind == IdentityKind::Group && identity.name.eq_ignore_ascii_case("admins")
        })
        .map(|identity| principal_id(identity.id))
        .ok_or_else(|| CatalogError::Inconsistent("the `admins` group does not exist".into()))?;
    let mut snapshot = Snapshot::new(METASTORE_NAME, admins).map_err(inconsistent)?;
    for identity in identities {
        snapshot
            .add_principal(
                principal_id(identity.id),
                principal_type_of(identity.kind),
                &identity.name,
            )
            .map_err(inconsistent)?;
    }
    for &(group, member) in &rows.memberships {
        snapshot
            .add_member(principal_id(group), principal_id(member))
            .map_err(inconsistent)?;
    }

    let mut references = std::collections::HashMap::new();
    for record in &rows.securables {
        let reference = securable_ref(record)?;
        snapshot
            .add_securable(&reference, principal_id(record.owner_id))
            .map_err(inconsistent)?;
        references.insert(record.id, reference);
    }
    let mut grants: BTreeMap<(deputy_store::catalog::SecurableId, PrincipalId), PrivilegeSet> =
        BTreeMap::new();
    for grant in &rows.grants {
        let entry = grants
            .entry((grant.securable_id, principal_id(grant.principal_id)))
            .or_default();
        *entry = entry.with(privilege_of(grant)?);
    }
    for ((securable, principal), privileges) in grants {
        let reference = references.get(&securable).ok_or_else(|| {
            CatalogError::Inconsistent(format!("grant on missing securable {}", securable.0))
        })?;
        snapshot
            .grant(reference, principal, privileges)
            .map_err(inconsistent)?;
    }

    let mut acls: BTreeMap<(String, String), Vec<(PrincipalId, PermissionLevel)>> = BTreeMap::new();
    let known_types: Vec<&str> = WorkspaceObjectKind::ALL.map(object_type_of).to_vec();
    for object in &rows.workspace_objects {
        if known_types.contains(&object.object_type.as_str()) {
            acls.entry((object.object_type.clone(), object.object_id.clone()))
                .or_default();
        }
    }
    for entry in &rows.object_acls {
        acls.entry((entry.object_type.clone(), entry.object_id.clone()))
            .or_default()
            .push(acl_entry_of(entry)?);
    }
    for ((object_type, object_id), entries) in acls {
        let kind = object_kind_from_type(&object_type).ok_or_else(|| {
            CatalogError::Inconsistent(format!("unknown workspace object type `{object_type}`"))
        })?;
        snapshot
            .set_object_acl(&WorkspaceObjectRef::new(kind, &object_id), &entries)
            .map_err(inconsistent)?;
    }
    Ok((snapshot, SnapshotPosition::new(rows.through, references)))
}

fn privilege_of(grant: &GrantRecord) -> Result<Privilege, CatalogError> {
    Privilege::from_wire_name(&grant.privilege)
        .map_err(|_| CatalogError::Inconsistent(format!("unknown privilege `{}`", grant.privilege)))
}

fn acl_entry_of(entry: &AclEntry) -> Result<(PrincipalId, PermissionLevel), CatalogError> {
    let level = PermissionLevel::from_wire_name(&entry.level).ok_or_else(|| {
        CatalogError::Inconsistent(format!("unknown permission level `{}`", entry.level))
    })?;
    Ok((principal_id(entry.principal_id), level))
}

fn principal_type_of(kind: IdentityKind) -> PrincipalType {
    match kind {
        IdentityKind::User => PrincipalType::User,
        IdentityKind::ServicePrincipal => PrincipalType::ServicePrincipal,
        IdentityKind::Group => PrincipalType::Group,
    }
}

fn inconsistent(error: deputy_authz::AuthzError) -> CatalogError {
    CatalogError::Inconsistent(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_authz::{AccessRequest, Action, decide};
    use deputy_store::catalog::{CatalogStore, GrantChange};
    use deputy_store::{MetadataStore, NewIdentity};

    #[tokio::test]
    async fn a_snapshot_rebuilt_from_the_store_decides_like_the_grants_say() {
        let temporary = deputy_store::testing::TemporaryStore::new();
        let store = temporary.open().await.unwrap();
        let admins = store
            .create_identity(NewIdentity::named(IdentityKind::Group, "admins"), 1)
            .await
            .unwrap();
        let analysts = store
            .create_identity(NewIdentity::named(IdentityKind::Group, "analysts"), 1)
            .await
            .unwrap();
        let alice = store
            .create_identity(NewIdentity::named(IdentityKind::User, "alice"), 1)
            .await
            .unwrap();
        let bob = store
            .create_identity(NewIdentity::named(IdentityKind::User, "bob"), 1)
            .await
            .unwrap();
        store.add_group_member(analysts.id, alice.id).await.unwrap();
        let new = |kind, full_name, parent| new_securable(kind, full_name, parent, admins.id);
        let main = store
            .create_securable(new(SecurableKind::Catalog, "main", None), 1)
            .await
            .unwrap();
        let sales = store
            .create_securable(new(SecurableKind::Schema, "main.sales", Some(main.id)), 1)
            .await
            .unwrap();
        store
            .create_securable(
                new(SecurableKind::Table, "main.sales.orders", Some(sales.id)),
                1,
            )
            .await
            .unwrap();
        let grant = |principal, privilege: &str| GrantChange {
            principal_id: principal,
            add: vec![privilege.into()],
            remove: vec![],
        };
        store
            .change_grants(
                main.id,
                &[
                    grant(analysts.id, "USE_CATALOG"),
                    grant(analysts.id, "SELECT"),
                ],
            )
            .await
            .unwrap();
        store
            .change_grants(sales.id, &[grant(analysts.id, "USE_SCHEMA")])
            .await
            .unwrap();

        let snapshot = load_snapshot(&store).await.unwrap();
        let read = |principal| AccessRequest {
            principal: principal_id(principal),
            token_scopes: deputy_core::ScopeSet::all(),
            required_scope: deputy_core::ApiScope::SqlStatementExecution,
            action: Action::ReadTable(SecurableRef::table("main.sales.orders")),
        };
        assert!(decide(&read(alice.id), &snapshot).is_allowed());
        let denied = decide(&read(bob.id), &snapshot);
        assert!(!denied.is_allowed());
        assert!(
            denied.to_string().contains("USE_CATALOG on main"),
            "{denied}"
        );
    }
}
