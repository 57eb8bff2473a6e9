//! Deputy's metadata store: the workspace record, identities and group memberships, personal access tokens, OAuth
//! client secrets, signing keys, revoked token ids and settings.
//!
//! **Architecture invariant:** the store knows nothing about HTTP, token formats or authorization rules. It keeps rows
//! and enforces the integrity rules a database can (uniqueness, cascades); every caller decides *whether* a write is
//! allowed before it asks for it. Secrets reach it only as hashes.
//!
//! [`MetadataStore`] is the interface; [`SqlStore`] the embedded implementation. A PostgreSQL implementation goes
//! behind the same trait: the SQL here sticks to what both dialects share, apart from the connection setup.

pub mod audit;
pub mod catalog;
pub mod changes;
pub mod consent;
pub mod conversations;
pub mod federation;
pub mod genie;
mod postgres;
pub mod sign_in;
pub mod specs;
mod sql_audit;
mod sql_catalog;
mod sql_store;
#[cfg(test)]
mod test_support;
pub mod testing;

use async_trait::async_trait;
use std::fmt;
use std::str::FromStr;

pub use audit::{AuditEvent, AuditFilter, AuditStore};
pub use catalog::CatalogStore;
pub use changes::Change;
pub use consent::{Consent, ConsentStore};
pub use conversations::{ConversationStore, EndpointConversation, EndpointMessage};
pub use federation::{FederationPolicy, FederationStore};
pub use genie::GenieStore;
pub use sign_in::{
    AppConsent, AuthorizationCode, AuthorizationRequest, Grant, IdentityProvider, OAuthApp,
    Presentation, SignInFamily, SignInStore, UpstreamLogin,
};
pub use sql_store::{Dialect, SqlStore};

/// Everything the server persists, behind one object.
pub trait Store:
    MetadataStore
    + CatalogStore
    + AuditStore
    + GenieStore
    + ConsentStore
    + ConversationStore
    + FederationStore
    + SignInStore
{
}

impl<T> Store for T where
    T: MetadataStore
        + CatalogStore
        + AuditStore
        + GenieStore
        + ConsentStore
        + ConversationStore
        + FederationStore
        + SignInStore
{
}

/// Held while a process starts up or rotates the signing keys; see [`MetadataStore::exclusive_setup`]. Dropping it
/// lets the next one in.
pub struct SetupGuard {
    /// PostgreSQL's session-level advisory lock ends with the session that holds it.
    _session: Option<sqlx::AnyConnection>,
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the store and on the Databricks wire.
pub type EpochMillis = i64;

/// A principal's numeric id. Also its SCIM `id`, printed as a decimal string on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(pub i64);

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identities that the store keeps. Only users and service principals authenticate; groups carry membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    User,
    ServicePrincipal,
    Group,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::User => "user",
            IdentityKind::ServicePrincipal => "service_principal",
            IdentityKind::Group => "group",
        }
    }
}

impl FromStr for IdentityKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "user" => Ok(IdentityKind::User),
            "service_principal" => Ok(IdentityKind::ServicePrincipal),
            "group" => Ok(IdentityKind::Group),
            other => Err(StoreError::Corrupt(format!(
                "unknown identity kind `{other}`"
            ))),
        }
    }
}

/// A stored identity. `name` is the key clients address it by: a user's `userName`, a service principal's
/// `applicationId`, a group's `displayName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: PrincipalId,
    pub kind: IdentityKind,
    pub name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub external_id: Option<String>,
    pub active: bool,
    pub created_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdentity {
    pub kind: IdentityKind,
    pub name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub external_id: Option<String>,
    pub active: bool,
}

impl NewIdentity {
    /// An active identity known only by its name, which is also its display name.
    pub fn named(kind: IdentityKind, name: &str) -> NewIdentity {
        NewIdentity {
            kind,
            name: name.into(),
            display_name: name.into(),
            given_name: None,
            family_name: None,
            external_id: None,
            active: true,
        }
    }
}

/// The mutable attributes of an identity, replaced as a whole (SCIM PUT semantics; PATCH is applied by the caller on
/// top of the current value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityUpdate {
    pub name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub external_id: Option<String>,
    pub active: bool,
}

/// One page of a listing: `offset` rows skipped, at most `limit` returned, optionally only names equal
/// (case-insensitively) to `name_equals`.
#[derive(Debug, Clone, Default)]
pub struct IdentityQuery {
    pub name_equals: Option<String>,
    pub display_name_equals: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalAccessToken {
    pub token_id: String,
    pub owner_id: PrincipalId,
    pub created_by: PrincipalId,
    /// Hex SHA-256 of the token value; the value itself is never stored.
    pub secret_hash: String,
    pub comment: String,
    /// The token's API scopes in their canonical wire form.
    pub scopes: String,
    pub created_at: EpochMillis,
    /// `-1` when the token never expires.
    pub expires_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecret {
    pub secret_id: String,
    pub principal_id: PrincipalId,
    pub secret_hash: String,
    pub created_at: EpochMillis,
    pub expires_at: EpochMillis,
}

/// A signing key as persisted. The seed is secret: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub seed: Vec<u8>,
    pub created_at: EpochMillis,
    pub retired_at: Option<EpochMillis>,
}

impl fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("seed", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("audit events were not written: {0}")]
    AuditWrite(String),
    #[error("{0}")]
    Configuration(String),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Deputy persists about identities and credentials. Implementations must make each call atomic.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The numeric workspace id, if the workspace was bootstrapped.
    async fn workspace_id(&self) -> StoreResult<Option<i64>>;
    /// Records the workspace id; fails with `AlreadyExists` if one is recorded.
    async fn create_workspace(&self, workspace_id: i64, now: EpochMillis) -> StoreResult<()>;

    async fn create_identity(
        &self,
        identity: NewIdentity,
        now: EpochMillis,
    ) -> StoreResult<Identity>;
    async fn get_identity(&self, id: PrincipalId) -> StoreResult<Option<Identity>>;
    async fn find_identity(&self, kind: IdentityKind, name: &str) -> StoreResult<Option<Identity>>;
    /// Returns one page of identities of `kind`, ordered by id, and the total number that match.
    async fn list_identities(
        &self,
        kind: IdentityKind,
        query: &IdentityQuery,
    ) -> StoreResult<(Vec<Identity>, i64)>;
    async fn update_identity(
        &self,
        id: PrincipalId,
        update: IdentityUpdate,
    ) -> StoreResult<Identity>;
    /// Deletes an identity with its memberships, tokens and secrets.
    async fn delete_identity(&self, id: PrincipalId) -> StoreResult<()>;

    /// Replaces a group's direct members.
    async fn set_group_members(
        &self,
        group: PrincipalId,
        members: &[PrincipalId],
    ) -> StoreResult<()>;
    async fn add_group_member(&self, group: PrincipalId, member: PrincipalId) -> StoreResult<()>;
    async fn remove_group_member(&self, group: PrincipalId, member: PrincipalId)
    -> StoreResult<()>;
    async fn group_members(&self, group: PrincipalId) -> StoreResult<Vec<Identity>>;
    /// The groups `member` belongs to directly.
    async fn direct_groups(&self, member: PrincipalId) -> StoreResult<Vec<Identity>>;
    /// Every group `member` belongs to, directly or through nested groups. Cycles terminate.
    async fn transitive_groups(&self, member: PrincipalId) -> StoreResult<Vec<Identity>>;

    async fn insert_personal_access_token(&self, token: PersonalAccessToken) -> StoreResult<()>;
    async fn find_personal_access_token_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<PersonalAccessToken>>;
    async fn get_personal_access_token(
        &self,
        token_id: &str,
    ) -> StoreResult<Option<PersonalAccessToken>>;
    /// Tokens owned by `owner`, or all tokens when `owner` is `None`.
    async fn list_personal_access_tokens(
        &self,
        owner: Option<PrincipalId>,
    ) -> StoreResult<Vec<PersonalAccessToken>>;
    /// Returns whether a token was deleted.
    async fn delete_personal_access_token(&self, token_id: &str) -> StoreResult<bool>;

    async fn insert_client_secret(&self, secret: ClientSecret) -> StoreResult<()>;
    async fn list_client_secrets(&self, principal: PrincipalId) -> StoreResult<Vec<ClientSecret>>;
    async fn delete_client_secret(
        &self,
        principal: PrincipalId,
        secret_id: &str,
    ) -> StoreResult<bool>;

    async fn load_signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>>;
    /// Replaces the whole key ring in one transaction, so a crash never leaves half a rotation.
    async fn replace_signing_keys(&self, keys: &[StoredSigningKey]) -> StoreResult<()>;

    async fn revoke_token_id(&self, jti: &str, expires_at: EpochMillis) -> StoreResult<()>;
    /// Revoked token ids that have not expired by `now`; older rows are purged.
    async fn live_revoked_token_ids(&self, now: EpochMillis) -> StoreResult<Vec<String>>;

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Writes `(key, value)` settings in one transaction: all or none, and one announcement to other replicas.
    async fn set_settings(&self, settings: &[(&str, &str)]) -> StoreResult<()>;

    /// Holds every other process sharing this store out of its start-up and its key rotations until the guard is
    /// dropped, so that replicas starting at once do not each create what must exist once (the workspace, the first
    /// signing keys, built-in principals and objects), and replicas rotating at once do not each write back a ring
    /// without the other's new key. Immediate on SQLite, which one process owns.
    async fn exclusive_setup(&self) -> StoreResult<SetupGuard>;

    /// The changes other processes commit to what is kept in memory, as they commit (see [`changes`]); `None` when
    /// no other process writes to this store (SQLite: this process owns the file).
    async fn follow_changes(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::UnboundedReceiver<Change>>>;
}
