//! The state every handler shares: cheap to clone, one `Arc` inside.

use crate::credentials::Credentials;
use crate::routes::RouteRegistry;
use deputy_store::MetadataStore;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn MetadataStore>,
    credentials: Credentials,
    registry: RouteRegistry,
    workspace_id: i64,
    base_url: String,
}

impl AppState {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        credentials: Credentials,
        registry: RouteRegistry,
        workspace_id: i64,
        base_url: String,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                store,
                credentials,
                registry,
                workspace_id,
                base_url,
            }),
        }
    }

    pub fn store(&self) -> &dyn MetadataStore {
        self.inner.store.as_ref()
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
