//! Every route of the server, each registered together with the access it needs, and the one middleware that enforces
//! that access.
//!
//! **Invariant:** a route can only be added through [`ApiRouter`], which records its [`Access`] in the
//! [`RouteRegistry`] in the same call; the middleware refuses any matched route missing from the registry (fail
//! closed). So the registry is, by construction, the complete map of routes to scopes.

pub mod agents;
pub mod consents;
pub mod external_function;
pub mod genie;
pub mod oauth;
pub mod permissions;
pub mod responses;
pub mod scim;
pub mod serving;
pub mod statements;
pub mod tokens;
pub mod unity_catalog;
pub mod vector_search;
pub mod warehouses;
pub mod well_known;

use crate::credentials::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use deputy_core::ApiScope;
use std::collections::HashMap;

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential: health, discovery, key sets, and the token endpoint (which authenticates by its own rules).
    Public,
    /// Any valid token, whatever its scopes (SCIM `Me`, which Databricks allows under every scope).
    Authenticated,
    /// A valid token holding this scope.
    Scope(ApiScope),
}

/// `(method, path pattern) -> access`, the single source of truth for API scopes.
#[derive(Debug, Default, Clone)]
pub struct RouteRegistry {
    routes: HashMap<(Method, &'static str), Access>,
}

impl RouteRegistry {
    pub fn access(&self, method: &Method, path: &str) -> Option<Access> {
        // HEAD is answered by GET routes, so it needs what GET needs.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.routes.get(&(method.clone(), path)).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Method, &'static str, Access)> {
        self.routes
            .iter()
            .map(|((method, path), access)| (method, *path, *access))
    }
}

/// A router that cannot gain a route without declaring its access.
pub struct ApiRouter {
    router: Router<AppState>,
    registry: RouteRegistry,
}

macro_rules! method_adder {
    ($name:ident, $method:expr, $routing:ident) => {
        pub fn $name<H, T>(self, path: &'static str, access: Access, handler: H) -> ApiRouter
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add($method, path, access, $routing(handler))
        }
    };
}

impl ApiRouter {
    pub fn new() -> ApiRouter {
        ApiRouter {
            router: Router::new(),
            registry: RouteRegistry::default(),
        }
    }

    method_adder!(get, Method::GET, get);
    method_adder!(post, Method::POST, post);
    method_adder!(put, Method::PUT, put);
    method_adder!(patch, Method::PATCH, patch);
    method_adder!(delete, Method::DELETE, delete);

    fn add(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        route: MethodRouter<AppState>,
    ) -> ApiRouter {
        let previous = self.registry.routes.insert((method.clone(), path), access);
        // INVARIANT: each (method, path) is registered once; a second registration would shadow the first's scope.
        assert!(previous.is_none(), "route {method} {path} registered twice");
        self.router = self.router.route(path, route);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, RouteRegistry) {
        (self.router, self.registry)
    }
}

impl Default for ApiRouter {
    fn default() -> Self {
        ApiRouter::new()
    }
}

/// All routes of the server.
pub fn api_routes() -> ApiRouter {
    let router = ApiRouter::new().get("/healthz", Access::Public, health);
    let router = well_known::routes(router);
    let router = oauth::routes(router);
    let router = scim::routes(router);
    let router = tokens::routes(router);
    let router = unity_catalog::routes(router);
    let router = permissions::routes(router);
    let router = statements::routes(router);
    let router = serving::routes(router);
    let router = agents::routes(router);
    let router = consents::routes(router);
    let router = vector_search::routes(router);
    let router = external_function::routes(router);
    let router = genie::routes(router);
    warehouses::routes(router)
}

async fn health() -> &'static str {
    "ok"
}

/// Authenticates the caller of a matched route and checks the route's access. Public routes pass untouched.
pub async fn authorize(
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
            return Err(ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "ENDPOINT_NOT_FOUND",
                format!("no API found for '{} {path}'", request.method()),
            ));
        }
        return Err(ApiError::permission_denied(
            "this route has no declared API scope and is refused",
        ));
    };
    if access == Access::Public {
        return Ok(next.run(request).await);
    }
    let token = bearer_token(request.headers()).ok_or_else(|| {
        ApiError::unauthenticated("no credentials: send `Authorization: Bearer <token>`")
    })?;
    let caller = state
        .credentials()
        .authenticate(token)
        .await
        .map_err(|error| match error {
            crate::credentials::AuthenticationError::Store(cause) => ApiError::internal(cause),
            other => ApiError::unauthenticated(other.to_string()),
        })?;
    // Requests made with a delegated token (an agent acting for a user) are audited, allowed or not.
    let actors = crate::audit::actors_of(&caller);
    // Owned copies: a borrow of the request would make this future `!Send`.
    let api = format!(
        "{} {}",
        request.method(),
        path.as_deref().unwrap_or_default()
    );
    let target = request.uri().path().to_owned();
    let audit = |allowed: bool, reason: String, scope: Option<String>| {
        let mut event = crate::audit::now_event(
            &caller,
            actors.clone(),
            crate::audit::endpoint_of(&state, &actors),
            api.clone(),
            allowed,
            reason,
        );
        event.scope = scope;
        event.securable = Some(target.clone());
        event
    };
    let scope = match access {
        Access::Scope(scope) => Some(scope.to_string()),
        _ => None,
    };
    if let Access::Scope(scope) = access
        && !caller.scopes.contains(scope)
    {
        let error = ApiError::permission_denied(format!(
            "the token does not hold the API scope `{scope}` that this API requires"
        ));
        if !actors.is_empty() {
            let event = audit(false, error.message.clone(), Some(scope.to_string()));
            crate::audit::record(&state, &[event]).await?;
        }
        return Err(error);
    }
    if actors.is_empty() {
        request.extensions_mut().insert(caller);
        return Ok(next.run(request).await);
    }
    let pending = audit(true, String::new(), scope);
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    let status = response.status();
    let reason = response
        .extensions()
        .get::<crate::audit::DeniedBecause>()
        .map_or_else(
            || format!("HTTP {}", status.as_u16()),
            |denied| denied.0.clone(),
        );
    let event = deputy_store::AuditEvent {
        allowed: !(status.is_client_error() || status.is_server_error()),
        reason,
        ..pending
    };
    crate::audit::record(&state, &[event]).await?;
    Ok(response)
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Handlers take `Caller` to state that they need an authenticated principal; `authorize` put it there.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("no credentials"))
    }
}
