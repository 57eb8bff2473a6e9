//! The layers every matched route goes through before its handler, outermost first:
//!
//! 1. [`authenticate`]: looks the route up in the registry (a route missing from it is refused: fail closed), lets
//!    public routes through, and turns the bearer token into the [`Caller`] handlers take;
//! 2. [`audit_delegated`]: a request made with a delegated token (an agent acting for a user) is audited with its
//!    outcome, whatever it is, including a refusal by the next layer;
//! 3. [`check_scope`]: the token must hold the API scope the route declared.
//!
//! Handlers then decide on the objects they touch (`deputy_access::Access::authorize_object`).

use crate::error::{ApiError, DeniedBecause};
use crate::registry::Requires;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use deputy_access::credentials::AuthenticationError;
use deputy_access::{Caller, Error, ErrorCode};

/// What the matched route declared, left on the request by [`authenticate`] for the layers after it.
#[derive(Debug, Clone, Copy)]
struct RouteAccess(Requires);

/// Finds the matched route's declared access and, unless the route is public, authenticates the caller.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let access = path
        .as_deref()
        .and_then(|path| state.registry().access(request.method(), path));
    let Some(access) = access else {
        // A known path asked with another method: axum would answer 405, but only after this layer.
        if let Some(path) = path.as_deref()
            && state.registry().iter().any(|(_, known, _)| known == path)
        {
            let message = format!("no API found for '{} {path}'", request.method());
            return Err(Error::new(ErrorCode::MethodNotAllowed, message).into());
        }
        let refused = "this route has no declared API scope and is refused";
        return Err(Error::permission_denied(refused).into());
    };
    if access == Requires::Public {
        return Ok(next.run(request).await);
    }
    let token = bearer_token(request.headers()).ok_or_else(|| {
        Error::unauthenticated("no credentials: send `Authorization: Bearer <token>`")
    })?;
    let caller = state
        .access()
        .credentials()
        .authenticate(token)
        .await
        .map_err(|error| match error {
            AuthenticationError::Store(cause) => Error::internal(cause),
            other => Error::unauthenticated(other.to_string()),
        })?;
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(RouteAccess(access));
    Ok(next.run(request).await)
}

/// Records a delegated request's outcome in the audit trail; an event that cannot be written fails the request.
pub async fn audit_delegated(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return Ok(next.run(request).await);
    };
    if deputy_access::audit::actors_of(caller).is_empty() {
        return Ok(next.run(request).await);
    }
    let api = format!(
        "{} {}",
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str)
    );
    let scope = match request.extensions().get::<RouteAccess>() {
        Some(RouteAccess(Requires::Scope(scope))) => Some(scope.to_string()),
        _ => None,
    };
    let pending = state
        .access()
        .audit_entry(caller, &api)
        .scope_named(scope)
        .securable(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    let reason = response.extensions().get::<DeniedBecause>().map_or_else(
        || format!("HTTP {}", status.as_u16()),
        |denied| denied.0.clone(),
    );
    let event = match status.is_client_error() || status.is_server_error() {
        true => pending.denied(reason),
        false => pending.allowed(reason),
    };
    state.access().record(&[event]).await?;
    Ok(response)
}

/// Refuses a token without the API scope the route declared.
pub async fn check_scope(request: Request, next: Next) -> Result<Response, ApiError> {
    let required = match request.extensions().get::<RouteAccess>() {
        Some(RouteAccess(Requires::Scope(scope))) => Some(*scope),
        _ => None,
    };
    if let (Some(scope), Some(caller)) = (required, request.extensions().get::<Caller>())
        && !caller.scopes.contains(scope)
    {
        return Err(Error::permission_denied(format!(
            "the token does not hold the API scope `{scope}` that this API requires"
        ))
        .into());
    }
    Ok(next.run(request).await)
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
