//! The state every handler shares: cheap to clone, one `Arc` inside.

use crate::registry::RouteRegistry;
use axum::Router;
use deputy_access::Access;
use deputy_serving::Serving;
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
    upstreams: deputy_connections::http::Upstreams,
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
    pub upstreams: deputy_connections::http::Upstreams,
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

    /// Deployed agents' worker processes and the on-behalf-of switch.
    pub fn agents(&self) -> &deputy_agents::AgentHost {
        self.inner.serving.agents()
    }

    /// The warehouses' statement runtime and the SQL engine under it.
    pub fn warehouse(&self) -> &Arc<Warehouse> {
        &self.inner.warehouse
    }

    /// Vector-search endpoints and indexes.
    pub fn vector_search(&self) -> &VectorSearch {
        &self.inner.vector_search
    }

    /// Outbound calls through HTTP connections, with their OAuth token cache.
    pub fn upstreams(&self) -> &deputy_connections::http::Upstreams {
        &self.inner.upstreams
    }

    /// The routes without their layers and state; `crate::app` completes them.
    pub fn route_table(&self) -> &Router<AppState> {
        &self.inner.route_table
    }

    pub fn registry(&self) -> &RouteRegistry {
        &self.inner.registry
    }
}
