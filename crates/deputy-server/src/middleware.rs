//! The layers every matched route goes through before its handler, outermost first:
//!
//! 1. [`authenticate`]: looks the route up in the registry (a route missing from it is refused: fail closed), lets
//!    public routes through, and turns the bearer token into the [`Caller`] handlers take;
//! 2. [`audit_delegated`]: a request made with a delegated token (an agent acting for a user) is audited with its
//!    outcome, whatever it is, including a refusal by the next layer;
//! 3. [`check_scope`]: the token must hold the API scope the route declared.
//!
//! On an MCP server's path, refusals by the first and the third carry the `WWW-Authenticate` challenge MCP clients
//! follow (`mcp_challenge`).
//!
//! Handlers then decide on the objects they touch (`deputy_access::Access::authorize_object`).

use crate::error::{ApiError, DeniedBecause};
use crate::in_process::ToolOfResource;
use crate::mcp_challenge as mcp;
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
    let path = request.uri().path().to_owned();
    // The router decodes `%2F` and `%73` in an MCP path before it picks the server, but the scope check reads the raw
    // path: a server's path is only ever plain, so anything else is no server (fail closed).
    if access == Requires::McpServer && path.contains('%') {
        return Err(Error::not_found("no MCP server at a percent-encoded path").into());
    }
    // The resource a token bound to one (RFC 8707) must cover: the MCP server asked, or the one whose tool makes
    // this in-process request. Any other request accepts only tokens for the whole API.
    let resource = match access {
        Requires::McpServer => Some(format!("{}{path}", state.access().base_url())),
        _ => request
            .extensions()
            .get::<ToolOfResource>()
            .map(|tool| tool.0.clone()),
    };
    let authenticated = match bearer_token(request.headers()) {
        None => Err(Error::unauthenticated(
            "no credentials: send `Authorization: Bearer <token>`",
        )),
        Some(token) => state
            .access()
            .credentials()
            .authenticate_at(token, resource.as_deref())
            .await
            .map_err(|error| match error {
                AuthenticationError::Store(cause) => Error::internal(cause),
                other => Error::unauthenticated(other.to_string()),
            }),
    };
    let caller = match authenticated {
        Ok(caller) => caller,
        // An MCP client learns from the challenge where to get a token (RFC 9728).
        Err(error) if access == Requires::McpServer && error.code == ErrorCode::Unauthenticated => {
            let presented = bearer_token(request.headers()).is_some();
            let kind = presented.then_some(("invalid_token", None));
            return Ok(mcp::refused(
                error,
                mcp::challenge(state.access(), &path, kind),
            ));
        }
        Err(error) => return Err(error.into()),
    };
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

/// Refuses a token without the API scope the route declared (on an MCP server: every scope its tools need, named
/// in the challenge so the client can step up).
pub async fn check_scope(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (Some(RouteAccess(required)), Some(caller)) = (
        request.extensions().get::<RouteAccess>(),
        request.extensions().get::<Caller>(),
    ) else {
        return Ok(next.run(request).await);
    };
    match required {
        Requires::Scope(scope) if !caller.scopes.contains(*scope) => {
            return Err(Error::permission_denied(format!(
                "the token does not hold the API scope `{scope}` that this API requires"
            ))
            .into());
        }
        Requires::McpServer => {
            let path = request.uri().path();
            let Some(needed) = mcp::required_scopes(path) else {
                return Err(Error::not_found(format!("no MCP server at `{path}`")).into());
            };
            if !needed.is_subset_of(caller.scopes) {
                let error = Error::permission_denied(format!(
                    "the token does not hold every API scope this MCP server needs: `{needed}`"
                ));
                let challenge = mcp::challenge(
                    state.access(),
                    path,
                    Some(("insufficient_scope", Some(needed))),
                );
                return Ok(mcp::refused(error, challenge));
            }
        }
        _ => {}
    }
    Ok(next.run(request).await)
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
