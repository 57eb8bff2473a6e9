//! The audit trail of on-behalf-of access: every token exchange for an agent, and every request an agent makes with
//! a delegated token, is appended to the store before the response leaves ("agent X for user Y did Z: allowed or
//! denied, and why").

use crate::credentials::{Caller, Credential};
use crate::error::ApiError;
use crate::state::AppState;
use deputy_store::{AuditEvent, IdentityKind};

/// The reason an error response carries, left on the response for the audit layer to read.
#[derive(Debug, Clone)]
pub struct DeniedBecause(pub String);

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
pub fn endpoint_of(state: &AppState, actors: &[String]) -> Option<String> {
    let agent = actors.first()?;
    let directory = state.directory();
    let identity = directory.find(IdentityKind::ServicePrincipal, agent)?;
    identity
        .display_name
        .strip_prefix(crate::agents::AGENT_PRINCIPAL_PREFIX)
        .map(str::to_owned)
}

/// Appends events durably; an audit that cannot be written fails the request (fail closed).
pub async fn record(state: &AppState, events: &[AuditEvent]) -> Result<(), ApiError> {
    state
        .store()
        .append_audit_events(events)
        .await
        .map_err(ApiError::internal)
}

pub fn now_event(
    caller: &Caller,
    actors: Vec<String>,
    endpoint: Option<String>,
    api: String,
    allowed: bool,
    reason: String,
) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time_ms: crate::clock::now_millis(),
        request_id: request_id_of(caller),
        user_name: caller.identity.name.clone(),
        actors,
        endpoint,
        api,
        scope: None,
        securable: None,
        allowed,
        reason,
    }
}
