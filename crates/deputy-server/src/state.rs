//! The state every handler shares: cheap to clone, one `Arc` inside.

use crate::credentials::Credentials;
use crate::directory::{Directory, DirectoryState};
use crate::error::ApiError;
use crate::routes::RouteRegistry;
use deputy_store::MetadataStore;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn MetadataStore>,
    directory: Arc<DirectoryState>,
    credentials: Credentials,
    registry: RouteRegistry,
    workspace_id: i64,
    base_url: String,
}

impl AppState {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        directory: Arc<DirectoryState>,
        credentials: Credentials,
        registry: RouteRegistry,
        workspace_id: i64,
        base_url: String,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                store,
                directory,
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

    /// The identities and group memberships as of the last completed write.
    pub fn directory(&self) -> Arc<Directory> {
        self.inner.directory.current()
    }

    /// Publishes identity and membership writes; every handler that makes one calls this before answering.
    pub async fn identities_changed(&self) -> Result<(), ApiError> {
        Ok(self.inner.directory.reload(self.store()).await?)
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
