//! The state every handler shares: cheap to clone, one `Arc` inside. Handlers take only the services they use,
//! as sub-states (`State<Arc<Access>>`, `State<Arc<Warehouse>>`, ...) through axum's `FromRef`; the whole
//! `AppState` is for the layers and the in-process public API, which need the route table.

use crate::registry::RouteRegistry;
use axum::Router;
use axum::extract::FromRef;
use deputy_access::Access;
use deputy_connections::http::Upstreams;
use deputy_console::Console;
use deputy_oidc::Federation;
use deputy_serving::Serving;
use deputy_signin::SignIn;
use deputy_vector_search::VectorSearch;
use deputy_warehouse::Warehouse;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    access: Arc<Access>,
    route_table: Router<AppState>,
    registry: RouteRegistry,
    warehouse: Arc<Warehouse>,
    serving: Arc<Serving>,
    vector_search: Arc<VectorSearch>,
    upstreams: Arc<Upstreams>,
    federation: Arc<Federation>,
    sign_in: Arc<SignIn>,
    console: Arc<Console>,
}

/// Everything `AppState::new` assembles.
pub struct StateParts {
    pub access: Arc<Access>,
    /// Every route, built once (see `routes::api_routes`).
    pub route_table: Router<AppState>,
    pub registry: RouteRegistry,
    pub warehouse: Arc<Warehouse>,
    pub serving: Arc<Serving>,
    pub vector_search: Arc<VectorSearch>,
    /// The outbound HTTP client of HTTP connections.
    pub upstreams: Arc<Upstreams>,
    /// Token federation: other issuers' JWTs exchanged under admins' policies.
    pub federation: Arc<Federation>,
    /// People signing in: the authorization endpoint, upstream providers, codes and refresh tokens.
    pub sign_in: Arc<SignIn>,
    /// The web console's browser sessions.
    pub console: Arc<Console>,
}

impl AppState {
    pub fn new(parts: StateParts) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                access: parts.access,
                route_table: parts.route_table,
                registry: parts.registry,
                warehouse: parts.warehouse,
                serving: parts.serving,
                vector_search: parts.vector_search,
                upstreams: parts.upstreams,
                federation: parts.federation,
                sign_in: parts.sign_in,
                console: parts.console,
            }),
        }
    }

    /// The security kernel: store, directory, credentials, decisions and audit.
    pub fn access(&self) -> &Arc<Access> {
        &self.inner.access
    }

    /// Serving endpoints: model backends, deployed agents, on-behalf-of tokens.
    pub fn serving(&self) -> &Arc<Serving> {
        &self.inner.serving
    }

    /// The warehouses' statement runtime and the SQL engine under it.
    pub fn warehouse(&self) -> &Arc<Warehouse> {
        &self.inner.warehouse
    }

    /// Vector-search endpoints and indexes.
    pub fn vector_search(&self) -> &Arc<VectorSearch> {
        &self.inner.vector_search
    }

    /// Outbound calls through HTTP connections, with their OAuth token cache.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.inner.upstreams
    }

    /// Token federation policies and the exchange of other issuers' JWTs.
    pub fn federation(&self) -> &Arc<Federation> {
        &self.inner.federation
    }

    /// Sign-in: OAuth apps, identity providers, the authorization endpoint's flow and its grants.
    pub fn sign_in(&self) -> &Arc<SignIn> {
        &self.inner.sign_in
    }

    /// The web console: its public URL and browser sessions.
    pub fn console(&self) -> &Arc<Console> {
        &self.inner.console
    }

    /// The routes without their layers and state; `crate::app` and `crate::api_app` complete them.
    pub fn route_table(&self) -> &Router<AppState> {
        &self.inner.route_table
    }

    pub fn registry(&self) -> &RouteRegistry {
        &self.inner.registry
    }
}

/// One `FromRef` per service, so a handler names in its signature exactly what it touches.
macro_rules! sub_state {
    ($service:ty, $accessor:ident) => {
        impl FromRef<AppState> for Arc<$service> {
            fn from_ref(state: &AppState) -> Arc<$service> {
                state.$accessor().clone()
            }
        }
    };
}

sub_state!(Access, access);
sub_state!(Warehouse, warehouse);
sub_state!(Serving, serving);
sub_state!(VectorSearch, vector_search);
sub_state!(Upstreams, upstreams);
sub_state!(Federation, federation);
sub_state!(SignIn, sign_in);
