//! Persistence of Unity Catalog securables, their grants, and workspace objects with their access-control lists.
//!
//! The store keeps names, ownership, grants and two JSON documents per securable (`properties`, and `spec` for
//! what depends on the kind: columns, a function's signature, a connection's options). It does not interpret them:
//! the catalog layer in the server owns their meaning, and the authorization engine is rebuilt from these rows.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecurableId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurableRecord {
    pub id: SecurableId,
    pub kind: String,
    /// Kinds whose names collide share a namespace (tables, views and vector indexes are all relations).
    pub namespace: String,
    pub full_name: String,
    pub parent_id: Option<SecurableId>,
    pub owner_id: PrincipalId,
    pub comment: Option<String>,
    pub properties: String,
    pub spec: String,
    pub created_at: EpochMillis,
    pub created_by: PrincipalId,
    pub updated_at: EpochMillis,
    pub updated_by: PrincipalId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecurable {
    pub kind: String,
    pub namespace: String,
    pub full_name: String,
    pub parent_id: Option<SecurableId>,
    pub owner_id: PrincipalId,
    pub comment: Option<String>,
    pub properties: String,
    pub spec: String,
    pub created_by: PrincipalId,
}

/// Changes to one securable; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurableChanges {
    /// A new full name. Descendants' names follow (renaming a catalog renames everything in it).
    pub full_name: Option<String>,
    pub owner_id: Option<PrincipalId>,
    pub comment: Option<Option<String>>,
    pub properties: Option<String>,
    pub spec: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub securable_id: SecurableId,
    pub principal_id: PrincipalId,
    pub privilege: String,
}

/// Privileges to add and remove for one principal on one securable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantChange {
    pub principal_id: PrincipalId,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceObjectRecord {
    pub object_type: String,
    pub object_id: String,
    pub name: String,
    pub owner_id: PrincipalId,
    pub spec: String,
    pub created_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub object_type: String,
    pub object_id: String,
    pub principal_id: PrincipalId,
    pub level: String,
}

/// One page of a listing ordered by full name: names strictly after `after`, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurablePage {
    pub kind: Option<String>,
    pub parent_id: Option<SecurableId>,
    pub after: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn create_securable(
        &self,
        securable: NewSecurable,
        now: EpochMillis,
    ) -> StoreResult<SecurableRecord>;
    async fn find_securable(
        &self,
        namespace: &str,
        full_name: &str,
    ) -> StoreResult<Option<SecurableRecord>>;
    async fn get_securable(&self, id: SecurableId) -> StoreResult<Option<SecurableRecord>>;
    async fn list_securables(&self, page: &SecurablePage) -> StoreResult<Vec<SecurableRecord>>;
    /// Applies `changes` in one transaction, with descendants renamed along with a renamed securable.
    async fn update_securable(
        &self,
        id: SecurableId,
        changes: SecurableChanges,
        updated_by: PrincipalId,
        now: EpochMillis,
    ) -> StoreResult<SecurableRecord>;
    /// Deletes a securable with everything under it and every grant on any of them.
    async fn delete_securable(&self, id: SecurableId) -> StoreResult<()>;
    async fn all_securables(&self) -> StoreResult<Vec<SecurableRecord>>;

    /// Applies every change in one transaction.
    async fn change_grants(
        &self,
        securable: SecurableId,
        changes: &[GrantChange],
    ) -> StoreResult<()>;
    async fn grants_on(&self, securable: SecurableId) -> StoreResult<Vec<GrantRecord>>;

    async fn create_workspace_object(&self, object: WorkspaceObjectRecord) -> StoreResult<()>;
    async fn get_workspace_object(
        &self,
        object_type: &str,
        object_id: &str,
    ) -> StoreResult<Option<WorkspaceObjectRecord>>;
    async fn list_workspace_objects(
        &self,
        object_type: &str,
    ) -> StoreResult<Vec<WorkspaceObjectRecord>>;
    async fn update_workspace_object_spec(
        &self,
        object_type: &str,
        object_id: &str,
        spec: &str,
    ) -> StoreResult<()>;
    async fn delete_workspace_object(&self, object_type: &str, object_id: &str) -> StoreResult<()>;
    /// Replaces (`replace = true`, PUT) or merges into (PATCH) an object's direct ACL, in one transaction.
    async fn set_object_acl(
        &self,
        object_type: &str,
        object_id: &str,
        entries: &[(PrincipalId, String)],
        replace: bool,
    ) -> StoreResult<()>;
    async fn object_acl(&self, object_type: &str, object_id: &str) -> StoreResult<Vec<AclEntry>>;

    /// Every row the in-memory directory and authorization snapshot are built from, read in one transaction.
    async fn authorization_rows(&self) -> StoreResult<AuthorizationRows>;

    /// What the authorization change log holds after position `after` (an earlier `through`), with the rows those
    /// changes touched as they are now, all read in one transaction. `None` when the log no longer reaches back to
    /// `after` or holds more than `limit` changes after it: the reader then rebuilds from
    /// [`CatalogStore::authorization_rows`].
    async fn authorization_changes(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Option<AuthorizationDelta>>;

    /// Forgets logged authorization changes made before `cutoff`; a reader that had not seen them rebuilds whole.
    async fn prune_authorization_changes(&self, cutoff: EpochMillis) -> StoreResult<u64>;
}

/// The identities, memberships, securables, grants, workspace objects and ACLs as of one moment: no row refers to
/// one written after the read began (a grant to a principal the identities leave out), however other processes
/// write meanwhile.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationRows {
    /// Ordered by id.
    pub identities: Vec<crate::Identity>,
    /// `(group, member)`, direct memberships.
    pub memberships: Vec<(PrincipalId, PrincipalId)>,
    /// Ordered by id: parents before children.
    pub securables: Vec<SecurableRecord>,
    pub grants: Vec<GrantRecord>,
    pub workspace_objects: Vec<WorkspaceObjectRecord>,
    pub object_acls: Vec<AclEntry>,
    /// The authorization change log's position these rows include: every change up to it, none after.
    pub through: i64,
}

/// The authorization rows that changed after a log position, as they are at `through` (see
/// [`CatalogStore::authorization_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationDelta {
    /// The log position this delta brings its reader to.
    pub through: i64,
    /// Every identity and direct membership, when any of them changed.
    pub directory: Option<DirectoryRows>,
    /// Each securable whose row or grants changed, by ascending id (parents before children).
    pub securables: Vec<SecurableDelta>,
    /// Each workspace object whose row or ACL changed.
    pub workspace_objects: Vec<WorkspaceObjectDelta>,
}

impl AuthorizationDelta {
    pub fn is_empty(&self) -> bool {
        self.directory.is_none() && self.securables.is_empty() && self.workspace_objects.is_empty()
    }
}

/// Every identity, and every direct membership as `(group, member)`.
pub type DirectoryRows = (Vec<crate::Identity>, Vec<(PrincipalId, PrincipalId)>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurableDelta {
    pub id: SecurableId,
    /// `None`: deleted.
    pub record: Option<SecurableRecord>,
    pub grants: Vec<GrantRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceObjectDelta {
    pub object_type: String,
    pub object_id: String,
    /// `false`: deleted.
    pub exists: bool,
    pub acl: Vec<AclEntry>,
}
