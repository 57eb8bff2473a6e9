//! Every route of the server, each registered together with the access it needs (enforced by
//! [`crate::middleware`]).
//!
//! **Invariant:** a route can only be added through [`ApiRouter`], which records its [`Requires`] in the
//! [`RouteRegistry`] in the same call; the authentication layer refuses any matched route missing from the registry
//! (fail closed). So the registry is, by construction, the complete map of routes to scopes.

pub mod agents;
pub mod consents;
pub mod conversations;
pub mod external_function;
pub mod federation;
pub mod genie;
pub mod mcp;
pub mod oauth;
pub mod permissions;
pub mod responses;
pub mod scim;
pub mod serving;
pub mod sign_in;
pub mod sign_in_admin;
pub mod statements;
pub mod tokens;
pub mod unity_catalog;
pub mod vector_search;
pub mod warehouses;
pub mod well_known;

pub use crate::registry::{Requires, RouteRegistry};
use crate::state::AppState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

/// A router that cannot gain a route without declaring its access.
pub struct ApiRouter {
    router: Router<AppState>,
    registry: RouteRegistry,
}

macro_rules! method_adder {
    ($name:ident, $method:expr, $routing:ident) => {
        pub fn $name<H, T>(self, path: &'static str, access: Requires, handler: H) -> ApiRouter
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
        access: Requires,
        route: MethodRouter<AppState>,
    ) -> ApiRouter {
        let previous = self.registry.declare(method.clone(), path, access);
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
    let router = ApiRouter::new().get("/healthz", Requires::Public, health);
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
    let router = conversations::routes(router);
    let router = vector_search::routes(router);
    let router = external_function::routes(router);
    let router = federation::routes(router);
    let router = sign_in::routes(router);
    let router = sign_in_admin::routes(router);
    let router = genie::routes(router);
    let router = mcp::routes(router);
    warehouses::routes(router)
}

async fn health() -> &'static str {
    "ok"
}

/// Account-level paths (`/api/2.0/accounts/{account_id}/...`): Deputy's one workspace is its account, so the
/// account id must be the workspace id.
pub(crate) fn check_account(
    access: &deputy_access::Access,
    account_id: &str,
) -> Result<(), deputy_access::Error> {
    if account_id != access.workspace_id().to_string() {
        return Err(deputy_access::Error::not_found(format!(
            "account `{account_id}` does not exist (this workspace's account id is its workspace id)"
        )));
    }
    Ok(())
}

/// A time in milliseconds since the epoch as the RFC 3339 text Databricks' APIs answer (empty if out of range).
pub(crate) fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .ok()
        .and_then(|instant| {
            instant
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
