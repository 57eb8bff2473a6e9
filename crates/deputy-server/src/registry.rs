//! The route registry: what each route (method and path pattern) requires of its caller. Built by
//! `routes::ApiRouter` as routes are added, read by the authentication layer on every request.

use axum::http::Method;
use deputy_core::ApiScope;
use std::collections::HashMap;

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requires {
    /// No credential: health, discovery, key sets, and the token endpoint (which authenticates by its own rules).
    Public,
    /// Any valid token, whatever its scopes (SCIM `Me`, which Databricks allows under every scope).
    Authenticated,
    /// A valid token holding this scope.
    Scope(ApiScope),
    /// An MCP server (`/api/2.0/mcp/…`): a valid token for the whole API or bound to this server's resource
    /// (RFC 8707), holding every scope the server's tools need (`deputy_mcp::ManagedServer::required_scopes`).
    McpServer,
}

/// `(method, path pattern) -> access`, the single source of truth for API scopes.
#[derive(Debug, Default, Clone)]
pub struct RouteRegistry {
    routes: HashMap<(Method, &'static str), Requires>,
}

impl RouteRegistry {
    pub fn access(&self, method: &Method, path: &str) -> Option<Requires> {
        // HEAD is answered by GET routes, so it needs what GET needs.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.routes.get(&(method.clone(), path)).copied()
    }

    /// Records `access` for a route; returns what was recorded before, if the route was declared twice.
    pub(crate) fn declare(
        &mut self,
        method: Method,
        path: &'static str,
        access: Requires,
    ) -> Option<Requires> {
        self.routes.insert((method, path), access)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Method, &'static str, Requires)> {
        self.routes
            .iter()
            .map(|((method, path), access)| (method, *path, *access))
    }
}
