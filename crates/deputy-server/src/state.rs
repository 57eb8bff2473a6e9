//! The state every handler shares: cheap to clone, one `Arc` inside.

use crate::credentials::{Caller, Credentials};
use crate::directory::{Directory, DirectoryState};
use crate::error::ApiError;
use crate::routes::RouteRegistry;
use crate::routes::serving::ServingBackends;
use crate::routes::statements::Statements;
use crate::routes::vector_search::VectorIndexes;
use deputy_authz::{
    AccessRequest, Action, AuthzState, Decision, Effect, PrincipalId, Reason, Snapshot, decide,
};
use deputy_core::ApiScope;
use deputy_sql::SqlEngine;
use deputy_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    directory: Arc<DirectoryState>,
    authz: AuthzState,
    /// Serializes publishing, so the last snapshot published includes every write that completed before it.
    publish_lock: tokio::sync::Mutex<()>,
    credentials: Credentials,
    registry: RouteRegistry,
    workspace_id: i64,
    base_url: String,
    sql: SqlEngine,
    statements: Statements,
    serving: ServingBackends,
    agents: crate::agents::AgentHost,
    vector_indexes: VectorIndexes,
    upstreams: crate::connections::Upstreams,
}

/// Everything `AppState::new` assembles.
pub struct StateParts {
    pub store: Arc<dyn Store>,
    pub directory: Arc<DirectoryState>,
    pub snapshot: Snapshot,
    pub credentials: Credentials,
    pub registry: RouteRegistry,
    pub workspace_id: i64,
    pub base_url: String,
    pub sql: SqlEngine,
    /// Where the built-in models' files are (see `deputy_models::installed_models`).
    pub models_dir: std::path::PathBuf,
    pub agents: crate::agents::AgentHost,
    pub vector_indexes: VectorIndexes,
    /// The outbound HTTP client of HTTP connections.
    pub upstreams: crate::connections::Upstreams,
}

impl AppState {
    pub fn new(parts: StateParts) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                store: parts.store,
                directory: parts.directory,
                authz: AuthzState::new(parts.snapshot),
                publish_lock: tokio::sync::Mutex::new(()),
                credentials: parts.credentials,
                registry: parts.registry,
                workspace_id: parts.workspace_id,
                base_url: parts.base_url,
                sql: parts.sql,
                statements: Statements::default(),
                serving: ServingBackends::new(parts.models_dir),
                agents: parts.agents,
                vector_indexes: parts.vector_indexes,
                upstreams: parts.upstreams,
            }),
        }
    }

    /// The model backends behind serving endpoints, loaded on first use.
    pub fn serving(&self) -> &ServingBackends {
        &self.inner.serving
    }

    /// Deployed agents' worker processes and the on-behalf-of switch.
    pub fn agents(&self) -> &crate::agents::AgentHost {
        &self.inner.agents
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The identities and group memberships as of the last completed write.
    pub fn directory(&self) -> Arc<Directory> {
        self.inner.directory.current()
    }

    /// The authorization snapshot as of the last completed write.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.authz.snapshot()
    }

    /// Publishes committed writes to identities, memberships, securables, grants or ACLs: the directory and the
    /// authorization snapshot are rebuilt from the store. Every handler that writes calls this before answering,
    /// whether or not the rest of its work succeeded.
    pub async fn changes_committed(&self) -> Result<(), ApiError> {
        let _serialized = self.inner.publish_lock.lock().await;
        self.inner.directory.reload(self.store()).await?;
        let snapshot = deputy_catalog::load_snapshot(self.store())
            .await
            .map_err(ApiError::internal)?;
        let published: Result<_, std::convert::Infallible> = self.inner.authz.update(|current| {
            *current = snapshot;
            Ok(())
        });
        published.map(|_| ()).map_err(ApiError::internal)
    }

    /// Stores a new workspace object with its creator's ACL entry at `creator_level` and publishes both; the
    /// publish happens whether or not the writes succeeded, so a half-done create is never left unpublished.
    pub async fn create_workspace_object(
        &self,
        record: deputy_store::catalog::WorkspaceObjectRecord,
        creator_level: &str,
    ) -> Result<(), ApiError> {
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
                    &[(creator, creator_level.into())],
                    false,
                )
                .await
                .map_err(ApiError::from),
            Err(error) => Err(error.into()),
        };
        self.changes_committed().await?;
        created
    }

    /// Decides `action` for the caller against the current snapshot. The principal is the token's subject: for an
    /// on-behalf-of token, the end user, whose grants apply; the token's scopes bound what any API may do.
    pub fn decide(&self, caller: &Caller, scope: ApiScope, action: Action) -> Decision {
        let request = AccessRequest {
            principal: deputy_catalog::principal_id(caller.identity.id),
            token_scopes: caller.scopes,
            required_scope: scope,
            action,
        };
        decide(&request, &self.snapshot())
    }

    /// Like [`AppState::decide`], as a handler result: 404 for what the caller may not know exists, else 403 with
    /// the reason.
    pub fn authorize(
        &self,
        caller: &Caller,
        scope: ApiScope,
        action: Action,
    ) -> Result<(), ApiError> {
        decision_result(self.decide(caller, scope, action))
    }

    pub fn caller_principal(&self, caller: &Caller) -> PrincipalId {
        deputy_catalog::principal_id(caller.identity.id)
    }

    /// The SQL engine every warehouse runs statements on.
    pub fn sql(&self) -> &SqlEngine {
        &self.inner.sql
    }

    /// Submitted statements and their results.
    pub fn statements(&self) -> &Statements {
        &self.inner.statements
    }

    /// The open vector-search indexes.
    pub fn vector_indexes(&self) -> &VectorIndexes {
        &self.inner.vector_indexes
    }

    /// Outbound calls through HTTP connections, with their OAuth token cache.
    pub fn upstreams(&self) -> &crate::connections::Upstreams {
        &self.inner.upstreams
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    pub fn registry(&self) -> &RouteRegistry {
        &self.inner.registry
    }

    pub fn workspace_id(&self) -> i64 {
        self.inner.workspace_id
    }

    /// The URL clients reach this server at, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }
}

/// Turns a decision into a handler result: an allow passes; a deny for an object that does not exist (or that the
/// engine will not confirm exists) is a 404, any other deny a 403 that says what is missing.
pub fn decision_result(decision: Decision) -> Result<(), ApiError> {
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
        true => Err(ApiError::not_found(reasons.join("; "))),
        false => Err(ApiError::permission_denied(format!(
            "missing {}",
            reasons.join("; ")
        ))),
    }
}
