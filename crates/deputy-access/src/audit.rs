//! The audit trail of on-behalf-of access: every token exchange for an agent, and every request an agent makes with
//! a delegated token, is appended to the store before the response leaves ("agent X for user Y did Z: allowed or
//! denied, and why").
//!
//! **Invariant:** an event that cannot be written fails the request it records (fail closed); see
//! [`crate::Access::record`].

use crate::credentials::{Caller, Credential};
use crate::directory::Directory;
use deputy_core::ApiScope;
use deputy_store::{AuditEvent, IdentityKind};

/// Agent endpoints' service principals are named `agent:<endpoint name>`: how an actor chain's outermost actor leads
/// back to the endpoint it runs under.
pub const AGENT_PRINCIPAL_PREFIX: &str = "agent:";

/// The actors between the caller's user and this request, outermost first.
pub fn actors_of(caller: &Caller) -> Vec<String> {
    match &caller.credential {
        Credential::AccessToken {
            actor: Some(actor), ..
        } => actor.chain().into_iter().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The id that ties an agent's calls to the invocation that gave it its token: the token's `jti`.
pub fn request_id_of(caller: &Caller) -> String {
    match &caller.credential {
        Credential::AccessToken { jti, .. } => jti.clone(),
        Credential::PersonalAccessToken { token_id, .. } => token_id.clone(),
    }
}

/// The serving endpoint an actor chain runs under: the endpoint whose service principal is the outermost actor.
pub fn endpoint_of(directory: &Directory, actors: &[String]) -> Option<String> {
    let agent = actors.first()?;
    let identity = directory.find(IdentityKind::ServicePrincipal, agent)?;
    identity
        .display_name
        .strip_prefix(AGENT_PRINCIPAL_PREFIX)
        .map(str::to_owned)
}

/// One audit event being described; finished by [`AuditEntry::allowed`] or [`AuditEntry::denied`], so that whether
/// the access was allowed is said in words at every call site.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    event: AuditEvent,
}

impl AuditEntry {
    /// An event of `caller` calling `api`, as the agents in its token's actor chain, under `endpoint`.
    pub fn new(
        caller: &Caller,
        actors: Vec<String>,
        endpoint: Option<String>,
        api: &str,
    ) -> AuditEntry {
        AuditEntry::started(
            caller.identity.name.clone(),
            request_id_of(caller),
            actors,
            endpoint,
            api,
        )
    }

    /// An event about `user_name` before any token of theirs exists (a token being issued to them), with no actors.
    pub fn of_subject(user_name: impl Into<String>, api: &str) -> AuditEntry {
        let request_id = uuid::Uuid::new_v4().to_string();
        AuditEntry::started(user_name.into(), request_id, Vec::new(), None, api)
    }

    fn started(
        user_name: String,
        request_id: String,
        actors: Vec<String>,
        endpoint: Option<String>,
        api: &str,
    ) -> AuditEntry {
        AuditEntry {
            event: AuditEvent {
                seq: 0,
                time_ms: crate::clock::now_millis(),
                request_id,
                user_name,
                actors,
                endpoint,
                api: api.to_owned(),
                scope: None,
                securable: None,
                allowed: false,
                reason: String::new(),
            },
        }
    }

    /// An event of `caller` calling `api` with its own token: the actors and endpoint come from the token.
    pub fn of_caller(directory: &Directory, caller: &Caller, api: &str) -> AuditEntry {
        let actors = actors_of(caller);
        let endpoint = endpoint_of(directory, &actors);
        AuditEntry::new(caller, actors, endpoint, api)
    }

    pub fn scope(mut self, scope: ApiScope) -> AuditEntry {
        self.event.scope = Some(scope.to_string());
        self
    }

    /// The scope as the request named it, when it is not one of the API scopes (for instance, none was needed).
    pub fn scope_named(mut self, scope: Option<String>) -> AuditEntry {
        self.event.scope = scope;
        self
    }

    /// Ties the event to an invocation other than the caller's token's (the delegated token minted for it).
    pub fn request_id(mut self, request_id: impl Into<String>) -> AuditEntry {
        self.event.request_id = request_id.into();
        self
    }

    /// What was accessed, as `kind/name` or a request path.
    pub fn securable(mut self, securable: impl Into<String>) -> AuditEntry {
        self.event.securable = Some(securable.into());
        self
    }

    pub fn allowed(self, reason: impl Into<String>) -> AuditEvent {
        self.finish(true, reason.into())
    }

    pub fn denied(self, reason: impl Into<String>) -> AuditEvent {
        self.finish(false, reason.into())
    }

    /// Finishes with an outcome computed earlier: `Ok(why it was allowed)` or `Err(why it was denied)`.
    pub fn outcome(self, outcome: Result<String, String>) -> AuditEvent {
        match outcome {
            Ok(reason) => self.finish(true, reason),
            Err(reason) => self.finish(false, reason),
        }
    }

    fn finish(mut self, allowed: bool, reason: String) -> AuditEvent {
        self.event.allowed = allowed;
        self.event.reason = reason;
        self.event
    }
}
