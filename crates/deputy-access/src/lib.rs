//! The workspace's security kernel, without HTTP: who is calling ([`credentials`]), who exists ([`directory`]), what
//! they may do (the authorization snapshot and [`Access::decide`]), and the record of what agents did for whom
//! ([`audit`], kept as long as [`audit_retention`] says). Every service crate asks this one for its decisions; none
//! decides on its own.
//!
//! **Invariants**
//! - Writes to identities, memberships, securables, grants or ACLs are followed by [`Access::publish`] before the
//!   caller is answered; publishes are serialized, so the last one includes every completed write.
//! - "Hidden → 404, visible but forbidden → 403" is decided in one place, [`Access::authorize_object`]: a caller
//!   never learns from an error that an object it may not see exists.
//! - A decision that depends on stored data fails closed when that data is missing or does not parse
//!   ([`error::decode_stored`]).
//! - An audit event that cannot be written fails the request it records ([`Access::record`]).

pub mod audit;
pub mod audit_retention;
pub mod bootstrap;
pub mod clock;
pub mod credentials;
pub mod directory;
pub mod error;

pub use credentials::{Caller, Credential, Credentials};
pub use error::{Error, ErrorCode};

use deputy_authz::{
    AccessRequest, Action, AuthzState, Decision, Effect, PermissionLevel, PrincipalId, Reason,
    Snapshot, WorkspaceObjectRef, decide,
};
use deputy_catalog::SnapshotPosition;
use deputy_core::ApiScope;
use deputy_store::catalog::WorkspaceObjectRecord;
use deputy_store::{AuditEvent, AuditFilter, Change, Store};
use directory::{Directory, DirectoryState};
use std::sync::Arc;

/// More changes than this since the last publish (a bulk import, a long-disconnected replica) rebuild the snapshot
/// whole: reading the log and every changed row costs more than reading everything once.
const MAX_CHANGES_TAKEN_IN: usize = 5_000;

/// How long the authorization change log keeps a change.
pub const CHANGE_LOG_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// The security kernel's state, shared by every service: cheap to share behind an `Arc`.
pub struct Access {
    store: Arc<dyn Store>,
    directory: Arc<DirectoryState>,
    authz: AuthzState,
    /// Serializes publishing, so the last snapshot published includes every write that completed before it; and
    /// where that snapshot stands against the store's change log (`None` after a failed update: rebuild whole).
    published_position: tokio::sync::Mutex<Option<SnapshotPosition>>,
    /// How many publishes have completed: a view read from the store at one generation is current until it changes.
    published: std::sync::atomic::AtomicU64,
    credentials: Credentials,
    workspace_id: i64,
    base_url: String,
    /// Wakes this server's audit purge when an admin changes the retention here.
    audit_retention_changed: tokio::sync::Notify,
}

impl Access {
    /// Loads the directory, the authorization snapshot and the key ring from `store` for a server reachable at
    /// `base_url` (without a trailing slash); tokens are issued by `{base_url}/oidc` for the audience `base_url`.
    pub async fn load(
        store: Arc<dyn Store>,
        workspace_id: i64,
        base_url: &str,
    ) -> Result<Access, Error> {
        let rows = store.authorization_rows().await?;
        let directory = Arc::new(DirectoryState::of(&rows));
        let (snapshot, position) = deputy_catalog::snapshot_of(&rows).map_err(Error::internal)?;
        let issuer = format!("{base_url}/oidc");
        let credentials = Credentials::load(store.clone(), directory.clone(), &issuer, base_url)
            .await
            .map_err(Error::internal)?;
        Ok(Access {
            store,
            directory,
            authz: AuthzState::new(snapshot),
            published_position: tokio::sync::Mutex::new(Some(position)),
            published: std::sync::atomic::AtomicU64::new(0),
            credentials,
            workspace_id,
            base_url: base_url.to_owned(),
            audit_retention_changed: tokio::sync::Notify::new(),
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The store as a shared handle, for services that outlive a call (the SQL engine's catalog).
    pub fn shared_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The identities and group memberships as of the last completed write.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.current()
    }

    /// The authorization snapshot as of the last completed write.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.authz.snapshot()
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn workspace_id(&self) -> i64 {
        self.workspace_id
    }

    /// The URL clients reach this server at, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Publishes committed writes to identities, memberships, securables, grants or ACLs: the directory and the
    /// authorization snapshot take in what the store's change log says changed since the last publish (by anyone:
    /// this server or another replica). Every write calls this before answering, whether or not the rest of its work
    /// succeeded.
    pub async fn publish(&self) -> Result<(), Error> {
        let mut position = self.published_position.lock().await;
        let brought_up_to_date = match position.take() {
            Some(current) => match self.take_in_changes(current).await {
                Ok(updated) => Ok(updated),
                // What cannot be applied in place (or failed half way) is rebuilt from every row.
                Err(error) => {
                    tracing::info!(reason = %error.message, "rebuilding the authorization snapshot from every row");
                    self.rebuild_from_store().await
                }
            },
            None => self.rebuild_from_store().await,
        };
        // Whatever the outcome: the writes before this publish committed, and what was read before them may be stale.
        self.credentials.forget_known_personal_tokens();
        self.published
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        brought_up_to_date.map(|updated| *position = Some(updated))
    }

    /// Applies the changes logged after `position` to a copy of the published snapshot and publishes the copy.
    async fn take_in_changes(
        &self,
        mut position: SnapshotPosition,
    ) -> Result<SnapshotPosition, Error> {
        let delta = self
            .store()
            .authorization_changes(position.through(), MAX_CHANGES_TAKEN_IN)
            .await?
            .ok_or_else(|| Error::internal("the change log does not reach back far enough"))?;
        if delta.is_empty() {
            return Ok(position);
        }
        self.authz
            .update(|snapshot| deputy_catalog::apply_delta(snapshot, &mut position, &delta))
            .map_err(Error::internal)?;
        if let Some((identities, memberships)) = delta.directory {
            self.directory.replace(identities, &memberships);
        }
        Ok(position)
    }

    async fn rebuild_from_store(&self) -> Result<SnapshotPosition, Error> {
        // One read for both, so that the snapshot and the directory agree however other replicas write meanwhile.
        let rows = self.store().authorization_rows().await?;
        let (snapshot, position) = deputy_catalog::snapshot_of(&rows).map_err(Error::internal)?;
        self.directory
            .replace(rows.identities.clone(), &rows.memberships);
        let published: Result<_, std::convert::Infallible> = self.authz.update(|current| {
            *current = snapshot;
            Ok(())
        });
        published.map_err(Error::internal)?;
        Ok(position)
    }

    /// Forgets, every [`CHANGE_LOG_RETENTION`], the authorization changes older than that, until the task running it
    /// is dropped. A replica that missed more (disconnected for longer) rebuilds its snapshot when it is back.
    pub async fn prune_change_log_periodically(&self) {
        loop {
            tokio::time::sleep(CHANGE_LOG_RETENTION).await;
            let retention = i64::try_from(CHANGE_LOG_RETENTION.as_millis()).unwrap_or(i64::MAX);
            let cutoff = clock::now_millis().saturating_sub(retention);
            if let Err(error) = self.store().prune_authorization_changes(cutoff).await {
                tracing::warn!(%error, "could not prune the authorization change log");
            }
        }
    }

    /// Brings the in-memory copies up to date with a change another replica committed to the shared store (see
    /// `deputy_store::changes`). Settings are not kept here: the caller reloads those; a settings change wakes the
    /// audit purge, since it may be a new retention.
    pub async fn follow(&self, change: Change) -> Result<(), Error> {
        let stale = |kind: Change| change == kind || change == Change::Everything;
        // Every stale copy is reloaded even when another fails; the first failure is reported.
        let mut followed = Ok(());
        if stale(Change::Authorization) {
            // Publishing also forgets the known personal access tokens.
            followed = followed.and(self.publish().await);
        }
        if change == Change::PersonalAccessTokens {
            self.credentials.forget_known_personal_tokens();
        }
        if stale(Change::SigningKeys) {
            let reloaded = self.credentials.reload_signing_keys().await;
            followed = followed.and(reloaded.map_err(Error::internal));
        }
        if stale(Change::Revocations) {
            let reloaded = self.credentials.reload_revocations().await;
            followed = followed.and(reloaded.map_err(Error::from));
        }
        if stale(Change::Settings) {
            self.audit_retention_changed.notify_one();
        }
        followed
    }

    /// The number of publishes so far. A view of stored rows (such as the serving endpoints) read after this returned
    /// `g` includes every write published before it, and must be read again once this is no longer `g`.
    pub fn published_generation(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores a new workspace object with its creator's ACL entry at `creator_level` and publishes both; the
    /// publish happens whether or not the writes succeeded, so a half-done create is never left unpublished.
    pub async fn create_workspace_object(
        &self,
        record: WorkspaceObjectRecord,
        creator_level: PermissionLevel,
    ) -> Result<(), Error> {
        let (object_type, object_id, creator) = (
            record.object_type.clone(),
            record.object_id.clone(),
            record.owner_id,
        );
        let created = match self.store().create_workspace_object(record).await {
            Ok(()) => self
                .store()
                .set_object_acl(
                    &object_type,
                    &object_id,
                    &[(creator, creator_level.wire_name().into())],
                    false,
                )
                .await
                .map_err(Error::from),
            Err(error) => Err(error.into()),
        };
        self.publish().await?;
        created
    }

    /// Decides `action` for the caller against the current snapshot. The principal is the token's subject: for an
    /// on-behalf-of token, the end user, whose grants apply; the token's scopes bound what any API may do.
    pub fn decide(&self, caller: &Caller, scope: ApiScope, action: Action) -> Decision {
        let request = AccessRequest {
            principal: self.caller_principal(caller),
            token_scopes: caller.scopes,
            required_scope: scope,
            action,
        };
        decide(&request, &self.snapshot())
    }

    /// Like [`Access::decide`], as a result: 404 for what the caller may not know exists, else 403 with the reason.
    pub fn authorize(&self, caller: &Caller, scope: ApiScope, action: Action) -> Result<(), Error> {
        decision_result(self.decide(caller, scope, action))
    }

    /// The one rule for objects a caller asks for by name: if none of `visible_through` is allowed, the object does
    /// not exist for the caller (`{what} does not exist`, whatever the reason); otherwise `action` decides, and a
    /// refusal says what is missing.
    pub fn authorize_object(
        &self,
        caller: &Caller,
        scope: ApiScope,
        visible_through: &[Action],
        action: Action,
        what: &str,
    ) -> Result<(), Error> {
        let visible = visible_through
            .iter()
            .any(|seeing| self.decide(caller, scope, seeing.clone()).is_allowed());
        if !visible {
            return Err(Error::not_found(format!("{what} does not exist")));
        }
        self.authorize(caller, scope, action)
    }

    /// [`Access::authorize_object`] for a workspace object (endpoint, warehouse, space): visible to whoever may view
    /// it, used at `level`.
    pub fn authorize_workspace_object(
        &self,
        caller: &Caller,
        scope: ApiScope,
        object: WorkspaceObjectRef,
        level: PermissionLevel,
        what: &str,
    ) -> Result<(), Error> {
        let view = Action::UseWorkspaceObject {
            object: object.clone(),
            level: PermissionLevel::CanView,
        };
        self.authorize_object(
            caller,
            scope,
            &[view],
            Action::UseWorkspaceObject { object, level },
            what,
        )
    }

    pub fn caller_principal(&self, caller: &Caller) -> PrincipalId {
        deputy_catalog::principal_id(caller.identity.id)
    }

    /// Appends audit events durably; an event that cannot be written fails the request (fail closed).
    pub async fn record(&self, events: &[AuditEvent]) -> Result<(), Error> {
        self.store()
            .append_audit_events(events)
            .await
            .map_err(Error::internal)
    }

    /// The audit events matching `filter` that `caller` may read: admins read everyone's, anyone else only the events
    /// of which they are the user, so a filter naming another user is refused and one naming none is narrowed.
    pub async fn read_audit(
        &self,
        caller: &Caller,
        mut filter: AuditFilter,
    ) -> Result<Vec<AuditEvent>, Error> {
        if !caller.is_admin() {
            let own = &caller.identity.name;
            if let Some(named) = &filter.user_name
                && !named.eq_ignore_ascii_case(own)
            {
                return Err(Error::permission_denied(format!(
                    "only members of the `{}` group may read the audit events of `{named}`; you may read your own",
                    directory::ADMINS_GROUP
                )));
            }
            filter.user_name = Some(own.clone());
        }
        Ok(self.store().audit_events(&filter).await?)
    }

    /// An audit event of `caller` calling `api` with its own token (see [`audit::AuditEntry::of_caller`]).
    pub fn audit_entry(&self, caller: &Caller, api: &str) -> audit::AuditEntry {
        audit::AuditEntry::of_caller(&self.directory(), caller, api)
    }
}

/// Turns a decision into a result: an allow passes; a deny for an object that does not exist (or that the engine
/// will not confirm exists) is a 404, any other deny a 403 that says what is missing.
pub fn decision_result(decision: Decision) -> Result<(), Error> {
    if decision.effect == Effect::Allow {
        return Ok(());
    }
    let not_found = decision.reasons.iter().any(|reason| {
        matches!(
            reason,
            Reason::SecurableNotFound(_) | Reason::WorkspaceObjectNotFound(_)
        )
    });
    let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
    match not_found {
        true => Err(Error::not_found(reasons.join("; "))),
        false => Err(Error::permission_denied(format!(
            "missing {}",
            reasons.join("; ")
        ))),
    }
}
