//! The server's side of credentials: the live key ring, the revocation list, and turning a bearer token into the
//! principal it speaks for.
//!
//! **Invariant:** a revocation is written to the store *before* it enters the in-memory list and before the response,
//! and every verification consults the in-memory list, so a revoked token is refused by the next request everywhere
//! in this process. Replicas sharing a database reload the list when the store announces a revocation
//! ([`Credentials::reload_revocations`]), within the announcement's delay.
//!
//! A token signed with a key this process does not know makes it read the key ring from the store before refusing:
//! a key rotated on another replica verifies here before the announcement of the rotation arrives.

use crate::clock::{now_millis, now_seconds};
use crate::directory::{Directory, DirectoryState};
use crate::error::Error;
use deputy_core::ScopeSet;
use deputy_store::{
    Identity, IdentityKind, MetadataStore, PersonalAccessToken, PrincipalId, StoreError,
    StoredSigningKey,
};
use deputy_tokens::{
    AccessClaims, Actor, KeyRing, PersistedKey, SecretHash, TokenIssuer, looks_like_jwt,
};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Access tokens from client credentials live this long, as Databricks OAuth tokens do. It is also the longest any
/// access token may live, which bounds how long a retired signing key must stay in the ring.
pub const ACCESS_TOKEN_LIFETIME_SECONDS: i64 = 3600;

/// Tokens from token exchange are delegations and live shorter; they never outlive their subject token either.
pub const EXCHANGED_TOKEN_LIFETIME_SECONDS: i64 = 900;

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `expires_at` in seconds since the epoch; `None` for a token that never expires.
    PersonalAccessToken {
        token_id: String,
        expires_at: Option<i64>,
    },
    /// `expires_at` in seconds since the epoch.
    AccessToken {
        jti: String,
        expires_at: i64,
        actor: Option<Actor>,
        client_id: Option<String>,
        /// The tokens this one was exchanged from (see `AccessClaims::derived_from`).
        derived_from: Vec<String>,
    },
}

/// An authenticated caller: the principal, the groups it belongs to (transitively), and what its token allows.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    pub groups: Vec<Identity>,
    pub scopes: ScopeSet,
    pub credential: Credential,
    /// The token as presented, kept so that token exchange and introspection can work with it. Never logged.
    pub bearer: BearerToken,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|group| {
            group
                .name
                .eq_ignore_ascii_case(crate::directory::ADMINS_GROUP)
        })
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        match self.is_admin() {
            true => Ok(()),
            false => Err(Error::permission_denied(format!(
                "only members of the `{}` group may do this",
                crate::directory::ADMINS_GROUP
            ))),
        }
    }

    /// The `sub` this caller's tokens carry: a user's name or a service principal's application id.
    pub fn subject(&self) -> &str {
        &self.identity.name
    }

    /// Whether the caller's token names an actor: an agent acting for the subject, not the subject itself.
    pub fn is_delegated(&self) -> bool {
        matches!(
            &self.credential,
            Credential::AccessToken { actor: Some(_), .. }
        )
    }

    /// The actor chain of the caller's token: the agents acting for its subject, if any.
    pub fn actor(&self) -> Option<Actor> {
        match &self.credential {
            Credential::AccessToken { actor, .. } => actor.clone(),
            Credential::PersonalAccessToken { .. } => None,
        }
    }
}

/// How tokens exchanged from a personal access token name it among their ancestors (`derived_from`).
pub fn personal_token_ancestor_id(token_id: &str) -> String {
    format!("pat:{token_id}")
}

/// A bearer token whose `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why a bearer token was not accepted. The text is safe to show to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticationError {
    #[error("invalid access token: {0}")]
    InvalidAccessToken(#[from] deputy_tokens::TokenError),
    #[error("the access token is for another resource ({0})")]
    OtherResource(String),
    #[error("access token has been revoked")]
    Revoked,
    #[error("invalid personal access token")]
    UnknownPersonalAccessToken,
    #[error("personal access token has expired")]
    ExpiredPersonalAccessToken,
    #[error("the principal of this token no longer exists or is inactive")]
    InactivePrincipal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signing keys, revocations and the identity directory, shared by every request.
pub struct Credentials {
    store: Arc<dyn MetadataStore>,
    directory: Arc<DirectoryState>,
    issuer: RwLock<TokenIssuer>,
    revoked: RwLock<HashSet<String>>,
    verified: VerifiedTokens,
    personal: KnownPersonalTokens,
    /// When the key ring was last read from the store because a token named an unknown key: such reads are spaced,
    /// so that tokens naming made-up keys cannot turn every request into a database read.
    unknown_key_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Held by a rotation from reading the ring to replacing it, and by a reload from reading the store to replacing
    /// it, so that a reload which read the store before a rotation here committed cannot put the old ring back.
    /// (Rotations on other replicas are held off by the store's setup lock.)
    key_ring_change: tokio::sync::Mutex<()>,
}

/// The least time between two reads of the key ring for tokens that name an unknown key.
const UNKNOWN_KEY_RELOAD_SPACING: std::time::Duration = std::time::Duration::from_millis(100);

/// Claims of tokens whose signature, issuer and audience were already checked, keyed by the SHA-256 of the token.
/// An agent presents the same token for every call of a request, so this saves an Ed25519 verification per call.
/// Safe because a token's claims cannot change without changing the token, and a key leaves the ring only after
/// every token it signed has expired; expiry and revocation are still checked on every use.
struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], AccessClaims>>,
}

/// Bounds the cache's memory (each entry is well under 1 KiB); when full it starts over.
const VERIFIED_TOKENS_CAPACITY: usize = 16_384;

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<AccessClaims> {
        let key = *SecretHash::of(token).as_bytes();
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .cloned()
    }

    fn insert(&self, token: &str, claims: &AccessClaims) {
        let key = *SecretHash::of(token).as_bytes();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= VERIFIED_TOKENS_CAPACITY {
            entries.clear();
        }
        entries.insert(key, claims.clone());
    }
}

/// Personal access tokens already found in the store, keyed by the SHA-256 of the token, so that a request with a
/// known token does not query the database. Expiry and the owner's standing are still checked on every use; any
/// deletion of a token, and any change to the directory (a user deleted, whose tokens go with them), empties it.
///
/// A lookup that raced with a deletion must not put the deleted token back: `generation` counts the emptyings, and a
/// record found in the store is kept only if no emptying happened since the lookup began.
#[derive(Default)]
struct KnownPersonalTokens {
    entries: std::sync::Mutex<KnownPersonalEntries>,
}

#[derive(Default)]
struct KnownPersonalEntries {
    generation: u64,
    by_hash: std::collections::HashMap<[u8; 32], PersonalAccessToken>,
}

impl KnownPersonalTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, KnownPersonalEntries> {
        // The map is only ever a cache: a panic mid-update leaves at worst a missing entry.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached record, or the generation a store lookup starts from.
    fn get(&self, hash: &[u8; 32]) -> Result<PersonalAccessToken, u64> {
        let entries = self.lock();
        entries.by_hash.get(hash).cloned().ok_or(entries.generation)
    }

    fn insert(&self, hash: [u8; 32], found: &PersonalAccessToken, looked_up_at: u64) {
        let mut entries = self.lock();
        if entries.generation != looked_up_at {
            return;
        }
        if entries.by_hash.len() >= VERIFIED_TOKENS_CAPACITY {
            entries.by_hash.clear();
        }
        entries.by_hash.insert(hash, found.clone());
    }

    fn forget_all(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.by_hash.clear();
    }
}

impl Credentials {
    /// Loads the key ring (creating and persisting one on first start) and the live revocations.
    pub async fn load(
        store: Arc<dyn MetadataStore>,
        directory: Arc<DirectoryState>,
        issuer: &str,
        audience: &str,
    ) -> Result<Credentials, String> {
        let now = now_seconds();
        let keys = match stored_key_ring(store.as_ref()).await? {
            Some(ring) => ring,
            None => {
                let ring = KeyRing::generate(now, ACCESS_TOKEN_LIFETIME_SECONDS)
                    .map_err(|e| e.to_string())?;
                store
                    .replace_signing_keys(&to_stored(&ring))
                    .await
                    .map_err(|e| e.to_string())?;
                ring
            }
        };
        let revoked = store
            .live_revoked_token_ids(now_millis())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Credentials {
            store,
            directory,
            issuer: RwLock::new(TokenIssuer::new(issuer, audience, keys)),
            revoked: RwLock::new(revoked.into_iter().collect()),
            verified: VerifiedTokens {
                entries: Default::default(),
            },
            personal: KnownPersonalTokens::default(),
            unknown_key_reload: tokio::sync::Mutex::new(None),
            key_ring_change: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces the key ring with the one in the store (rotated by another replica). A ring that is missing or does
    /// not parse leaves the current one in place and is an error: this process signs nothing with a key it could
    /// not read back.
    pub async fn reload_signing_keys(&self) -> Result<(), String> {
        let _serialized = self.key_ring_change.lock().await;
        let ring = stored_key_ring(self.store.as_ref())
            .await?
            .ok_or("the store holds no signing keys")?;
        self.issuer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys = ring;
        Ok(())
    }

    /// Adds the store's revocations (made by another replica) to the list. Adds only: a reload that read the store
    /// just before a revocation made here committed must not take that revocation out of the list.
    pub async fn reload_revocations(&self) -> Result<(), StoreError> {
        let stored = self.store.live_revoked_token_ids(now_millis()).await?;
        self.revoked
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(stored);
        Ok(())
    }

    pub fn issuer(&self) -> String {
        self.read_issuer(|issuer| issuer.issuer.clone())
    }

    pub fn audience(&self) -> String {
        self.read_issuer(|issuer| issuer.audience.clone())
    }

    fn read_issuer<T>(&self, read: impl FnOnce(&TokenIssuer) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-read; the ring itself is replaced whole, never half-written.
        let guard = self
            .issuer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&guard)
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, deputy_tokens::TokenError> {
        self.read_issuer(|issuer| issuer.sign(claims))
    }

    /// Verifies signature, time and audience, then revocation.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, AuthenticationError> {
        let now = now_seconds();
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = self.read_issuer(|issuer| issuer.verify(token, now))?;
                self.verified.insert(token, &claims);
                claims
            }
        };
        // Time and revocation are checked on every use, cached or not.
        if now >= claims.exp {
            return Err(deputy_tokens::TokenError::Expired.into());
        }
        if now < claims.nbf {
            return Err(deputy_tokens::TokenError::NotYetValid.into());
        }
        if self.is_revoked(&claims) {
            return Err(AuthenticationError::Revoked);
        }
        Ok(claims)
    }

    /// Whether the token, or any token it was exchanged from, has been revoked.
    fn is_revoked(&self, claims: &AccessClaims) -> bool {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        revoked.contains(&claims.jti) || claims.derived_from.iter().any(|id| revoked.contains(id))
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.read_issuer(|issuer| issuer.keys.jwks(now_seconds()))
    }

    /// Makes a new signing key current; the previous one verifies until its tokens have expired.
    pub async fn rotate_signing_key(&self) -> Result<String, Error> {
        let _serialized = self.key_ring_change.lock().await;
        // The stored ring, not this replica's copy: another replica may have rotated since, and its key must stay.
        let _exclusive = self.store.exclusive_setup().await?;
        let now = now_seconds();
        let mut ring = stored_key_ring(self.store.as_ref())
            .await
            .map_err(Error::internal)?
            .ok_or_else(|| Error::internal("the store holds no signing keys"))?;
        ring.prune(now);
        let kid = ring.rotate(now).map_err(Error::internal)?.to_owned();
        // Persist first: a crash after this point restarts with the new ring; before it, with the old one.
        self.store.replace_signing_keys(&to_stored(&ring)).await?;
        self.issuer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys = ring;
        Ok(kid)
    }

    /// Revokes an access token by its id until it would have expired anyway.
    pub async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at_seconds: i64,
    ) -> Result<(), StoreError> {
        self.store
            .revoke_token_id(jti, expires_at_seconds.saturating_mul(1000))
            .await?;
        self.revoked
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(jti.to_owned());
        Ok(())
    }

    /// Resolves a bearer token (a JWT access token or a personal access token) to the caller it speaks for, for the
    /// REST API: a token bound to one resource (RFC 8707) is refused. A JWT needs no database access: the principal
    /// and its groups come from the in-memory directory.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthenticationError> {
        self.authenticate_at(token, None).await
    }

    /// As [`Credentials::authenticate`], at `resource` (the absolute URL of an MCP server): a token for the whole
    /// API is accepted, and so is one bound to this resource or to a resource above it on the path (`…/functions/a/b`
    /// covers `…/functions/a/b/f`); a token bound to any other resource is refused.
    pub async fn authenticate_at(
        &self,
        token: &str,
        resource: Option<&str>,
    ) -> Result<Caller, AuthenticationError> {
        let directory = self.directory.current();
        if looks_like_jwt(token) {
            let claims = match self.verify(token) {
                Err(AuthenticationError::InvalidAccessToken(
                    deputy_tokens::TokenError::UnknownKeyId(_),
                )) => {
                    self.reload_keys_for_unknown_key().await;
                    self.verify(token)?
                }
                verified => verified?,
            };
            let audience = self.audience();
            if claims.aud != audience && !resource.is_some_and(|url| covers(&claims.aud, url)) {
                return Err(AuthenticationError::OtherResource(claims.aud));
            }
            let identity = find_subject(&directory, &claims.sub)
                .ok_or(AuthenticationError::InactivePrincipal)?;
            let credential = Credential::AccessToken {
                jti: claims.jti,
                expires_at: claims.exp,
                actor: claims.act,
                client_id: claims.client_id,
                derived_from: claims.derived_from,
            };
            return caller(&directory, identity, claims.scope, credential, token);
        }
        let personal = self.find_personal_access_token(token).await?;
        if personal.expires_at >= 0 && personal.expires_at <= now_millis() {
            return Err(AuthenticationError::ExpiredPersonalAccessToken);
        }
        let identity = directory
            .get(personal.owner_id)
            .ok_or(AuthenticationError::InactivePrincipal)?;
        // Scopes were validated when the token was made; an unreadable value fails closed to no scope at all.
        let scopes = ScopeSet::parse(&personal.scopes).unwrap_or(ScopeSet::EMPTY);
        let expires_at = (personal.expires_at >= 0).then_some(personal.expires_at / 1000);
        let credential = Credential::PersonalAccessToken {
            token_id: personal.token_id,
            expires_at,
        };
        caller(&directory, identity, scopes, credential, token)
    }

    /// Reads the key ring again for a token that names a key not in it, unless it was read very recently (then
    /// the token is simply checked against that ring). A ring that cannot be read leaves the current one.
    async fn reload_keys_for_unknown_key(&self) {
        let mut last = self.unknown_key_reload.lock().await;
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_RELOAD_SPACING) {
            return;
        }
        *last = Some(std::time::Instant::now());
        if let Err(error) = self.reload_signing_keys().await {
            tracing::warn!(%error, "could not read the signing keys again");
        }
    }

    /// The stored record of a personal access token, from the cache of known tokens when it is there.
    async fn find_personal_access_token(
        &self,
        token: &str,
    ) -> Result<PersonalAccessToken, AuthenticationError> {
        let hash = SecretHash::of(token);
        let key = *hash.as_bytes();
        let looked_up_at = match self.personal.get(&key) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let found = self
            .store
            .find_personal_access_token_by_hash(&hash.to_hex())
            .await?
            .ok_or(AuthenticationError::UnknownPersonalAccessToken)?;
        self.personal.insert(key, &found, looked_up_at);
        Ok(found)
    }

    /// Forgets every personal access token found so far, so that the next use of each reads the store: after the
    /// directory changed (a deleted user's tokens are deleted with them).
    pub fn forget_known_personal_tokens(&self) {
        self.personal.forget_all();
    }

    /// Deletes a personal access token, and revokes every token exchanged from it; returns whether it existed.
    pub async fn delete_personal_access_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_personal_access_token(token_id).await;
        // Forgotten whatever the store answered: a failed delete may still have committed.
        self.personal.forget_all();
        let existed = deleted?;
        if existed {
            // No token exchanged from it outlives the longest access-token lifetime.
            let until = now_seconds() + ACCESS_TOKEN_LIFETIME_SECONDS;
            self.revoke_access_token(&personal_token_ancestor_id(token_id), until)
                .await?;
        }
        Ok(existed)
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// The subject as claims, whatever kind of token it presented: what a token exchange starts from. A personal
    /// access token's claims end when it does, or after the access-token lifetime if it never expires.
    pub fn subject_claims(&self, subject: &Caller) -> AccessClaims {
        let now = now_seconds();
        let exp = match &subject.credential {
            Credential::AccessToken { expires_at, .. } => *expires_at,
            Credential::PersonalAccessToken { expires_at, .. } => expires_at
                .map_or(now + ACCESS_TOKEN_LIFETIME_SECONDS, |end| {
                    end.min(now + ACCESS_TOKEN_LIFETIME_SECONDS)
                }),
        };
        // The exchanged token names the subject token (and its ancestors), so revoking any of them revokes it.
        let (jti, derived_from) = match &subject.credential {
            Credential::AccessToken {
                jti, derived_from, ..
            } => (jti.clone(), derived_from.clone()),
            Credential::PersonalAccessToken { token_id, .. } => {
                (personal_token_ancestor_id(token_id), Vec::new())
            }
        };
        AccessClaims {
            iss: self.issuer(),
            aud: self.audience(),
            sub: subject.subject().to_owned(),
            exp,
            iat: now,
            nbf: now,
            jti,
            scope: subject.scopes,
            client_id: None,
            act: subject.actor(),
            derived_from,
        }
    }

    /// A token of a service principal (`application_id`) holding `scopes`, signed by this server: what an agent's
    /// workers find in their token file, and what a declarative agent calls its model (and, when on-behalf-of access
    /// is off, its tools) with.
    pub fn service_principal_token(
        &self,
        application_id: &str,
        scopes: ScopeSet,
        lifetime_seconds: i64,
    ) -> Result<String, Error> {
        let claims = AccessClaims::issue(
            &self.issuer(),
            &self.audience(),
            application_id,
            scopes,
            now_seconds(),
            lifetime_seconds,
        )
        .map_err(Error::internal)?;
        self.sign(&claims).map_err(Error::internal)
    }
}

/// A new personal access token, as the create calls answer it. The value exists only in this struct.
pub struct IssuedPersonalAccessToken {
    pub value: deputy_tokens::Secret,
    pub record: PersonalAccessToken,
}

/// Creates and stores a personal access token for `owner`.
pub async fn issue_personal_access_token(
    store: &dyn MetadataStore,
    owner: PrincipalId,
    created_by: PrincipalId,
    lifetime_seconds: Option<i64>,
    comment: String,
    scopes: ScopeSet,
) -> Result<IssuedPersonalAccessToken, Error> {
    let (value, hash) = deputy_tokens::generate_personal_access_token().map_err(Error::internal)?;
    let now = now_millis();
    let expires_at = match lifetime_seconds {
        None | Some(0) => -1,
        Some(seconds) if seconds < 0 => {
            return Err(Error::invalid_parameter(
                "lifetime_seconds must not be negative",
            ));
        }
        Some(seconds) => now.saturating_add(seconds.saturating_mul(1000)),
    };
    let record = PersonalAccessToken {
        token_id: uuid::Uuid::new_v4().simple().to_string(),
        owner_id: owner,
        created_by,
        secret_hash: hash.to_hex(),
        comment,
        scopes: scopes.to_string(),
        created_at: now,
        expires_at,
    };
    store.insert_personal_access_token(record.clone()).await?;
    Ok(IssuedPersonalAccessToken { value, record })
}

/// The key ring as stored, or `None` when the store holds no key yet.
async fn stored_key_ring(store: &dyn MetadataStore) -> Result<Option<KeyRing>, String> {
    let stored = store.load_signing_keys().await.map_err(|e| e.to_string())?;
    if stored.is_empty() {
        return Ok(None);
    }
    let persisted = stored
        .iter()
        .map(from_stored)
        .collect::<Result<Vec<_>, _>>()?;
    KeyRing::from_persisted(&persisted, ACCESS_TOKEN_LIFETIME_SECONDS)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn to_stored(ring: &KeyRing) -> Vec<StoredSigningKey> {
    ring.to_persisted()
        .into_iter()
        .map(|key| StoredSigningKey {
            kid: key.kid,
            seed: key.seed.to_vec(),
            created_at: key.created_at,
            retired_at: key.retired_at,
        })
        .collect()
}

fn from_stored(key: &StoredSigningKey) -> Result<PersistedKey, String> {
    let seed: [u8; 32] = key
        .seed
        .as_slice()
        .try_into()
        .map_err(|_| format!("signing key `{}` has a malformed seed", key.kid))?;
    Ok(PersistedKey {
        kid: key.kid.clone(),
        seed,
        created_at: key.created_at,
        retired_at: key.retired_at,
    })
}

fn caller(
    directory: &Directory,
    identity: &Identity,
    scopes: ScopeSet,
    credential: Credential,
    token: &str,
) -> Result<Caller, AuthenticationError> {
    if !identity.active || identity.kind == IdentityKind::Group {
        return Err(AuthenticationError::InactivePrincipal);
    }
    Ok(Caller {
        identity: identity.clone(),
        groups: directory.groups_of(identity.id),
        scopes,
        credential,
        bearer: BearerToken(token.to_owned()),
    })
}

/// Finds the principal a token's `sub` names. Service principals are addressed by their application id, a UUID;
/// user names may not be UUIDs (see the SCIM handlers), so the two namespaces cannot collide.
fn find_subject<'a>(directory: &'a Directory, sub: &str) -> Option<&'a Identity> {
    let kind = match uuid::Uuid::parse_str(sub) {
        Ok(_) => IdentityKind::ServicePrincipal,
        Err(_) => IdentityKind::User,
    };
    directory.find(kind, sub)
}

/// Whether a token bound to `bound` may be used at `resource`: the same URL, or `resource` under it on a path-segment
/// boundary.
fn covers(bound: &str, resource: &str) -> bool {
    resource
        .strip_prefix(bound)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> PersonalAccessToken {
        PersonalAccessToken {
            token_id: id.into(),
            owner_id: PrincipalId(7),
            created_by: PrincipalId(7),
            secret_hash: "00".into(),
            comment: String::new(),
            scopes: "all-apis".into(),
            created_at: 0,
            expires_at: -1,
        }
    }

    #[test]
    fn a_lookup_that_raced_with_a_deletion_is_not_kept() {
        let known = KnownPersonalTokens::default();
        let key = [1; 32];
        let looked_up_at = known.get(&key).unwrap_err();
        // The token is deleted while the lookup is in the store.
        known.forget_all();
        known.insert(key, &token("a"), looked_up_at);
        assert!(known.get(&key).is_err(), "the deleted token came back");
    }

    #[test]
    fn found_tokens_are_kept_until_forgotten() {
        let known = KnownPersonalTokens::default();
        let key = [2; 32];
        let looked_up_at = known.get(&key).unwrap_err();
        known.insert(key, &token("b"), looked_up_at);
        assert_eq!(known.get(&key).map(|found| found.token_id), Ok("b".into()));
        known.forget_all();
        assert!(known.get(&key).is_err());
    }
}
