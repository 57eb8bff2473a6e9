//! Deputy's HTTP server: the Databricks-compatible REST API over the metadata store and the token service.
//!
//! Layers, outermost first: tracing span (method, matched path) → body-size limit → route match → authentication →
//! delegated-call audit → API scope check (see [`middleware`]) → handler. Unmatched paths get `ENDPOINT_NOT_FOUND` in the Databricks
//! error format.
//!
//! **Architecture invariant:** only this crate knows the wire format. The store, token and core crates take and return
//! domain types; handlers convert at the edge.

pub mod declarative_agent;
pub mod error;
mod extract;
pub mod in_process;
mod mcp_challenge;
pub mod middleware;
pub mod registry;
mod replicas;
pub mod routes;
pub mod state;

use crate::error::ApiError;
use crate::state::{AppState, StateParts};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use deputy_access::Access;
use deputy_access::bootstrap::{self, BootstrapReport};
use deputy_sql::SqlEngine;
use deputy_store::{SqlStore, Store};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::normalize_path::NormalizePath;
use tower_http::trace::TraceLayer;

/// Request bodies above this size are refused with 413 before a handler sees them.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// A `postgres://` URL when replicas share one database; `None` keeps the metadata in `DATA_DIR/metadata.db`.
    pub database_url: Option<String>,
    /// Where table files, vector indexes and agents' deployments live, when replicas share them (a directory they
    /// all reach); `None` keeps them in the data directory.
    pub storage_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    /// The URL clients use to reach the server; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("metadata store: {0}")]
    Store(#[from] deputy_store::StoreError),
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("loading identities, grants or signing keys: {0}")]
    Access(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("outbound HTTP client: {0}")]
    Http(String),
}

/// Opens the data directory and the metadata database (`database_url`, else SQLite in the data directory),
/// bootstraps the workspace if new, and builds the shared state for a server reachable at `base_url`.
pub async fn prepare(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    base_url: &str,
) -> Result<(AppState, BootstrapReport), ServeError> {
    prepare_with_storage(data_dir, data_dir, database_url, base_url, base_url).await
}

/// [`prepare`], with table files (`warehouse/`), vector indexes (`vector-search/`) and agents' deployments
/// (`agents/`) under `storage_dir`, which replicas may share (the rest stays in `data_dir`), and agent workers
/// calling this server back at `own_url` rather than at the public `base_url`.
pub async fn prepare_with_storage(
    data_dir: &std::path::Path,
    storage_dir: &std::path::Path,
    database_url: Option<&str>,
    base_url: &str,
    own_url: &str,
) -> Result<(AppState, BootstrapReport), ServeError> {
    // Relative directories are resolved against the server's working directory once, here: agents' deployment
    // paths and the runtime's path are handed to worker processes, which need absolute ones.
    let absolute = |dir: &std::path::Path| {
        let absolute = std::path::absolute(dir).map_err(|source| ServeError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        std::fs::create_dir_all(&absolute).map_err(|source| ServeError::DataDir {
            path: absolute.clone(),
            source,
        })?;
        Ok::<_, ServeError>(absolute)
    };
    let data_dir = &absolute(data_dir)?;
    let storage_dir = &absolute(storage_dir)?;
    let store: Arc<dyn Store> = Arc::new(match database_url {
        Some(url) => SqlStore::connect(url).await?,
        None => SqlStore::open_sqlite(&data_dir.join("metadata.db")).await?,
    });
    // Until the console's app exists, this start-up creates what must exist once in the workspace.
    let startup = store.exclusive_setup().await?;
    let report = bootstrap::bootstrap(store.as_ref(), data_dir).await?;
    deputy_serving::ensure_builtin_endpoints(
        store.as_ref(),
        report.admin_id,
        report.users_group_id,
    )
    .await?;
    let base_url = base_url.trim_end_matches('/').to_owned();
    let access = Arc::new(
        Access::load(store.clone(), report.workspace_id, &base_url)
            .await
            .map_err(|error| ServeError::Access(error.message))?,
    );
    let sql = SqlEngine::new(storage_dir.join("warehouse"), store.clone())
        .map_err(|error| ServeError::Catalog(error.to_string()))?;
    let settings = deputy_agents::AgentSettings::read(store.as_ref()).await?;
    let runtime_dir =
        deputy_agents::python_runtime_dir(data_dir).map_err(|source| ServeError::DataDir {
            path: data_dir.join("python"),
            source,
        })?;
    let agents =
        deputy_agents::AgentHost::new(data_dir, storage_dir, runtime_dir, own_url, settings);
    let warehouse = Arc::new(deputy_warehouse::Warehouse::new(access.clone(), sql));
    let vector_indexes = deputy_vector_search::VectorIndexes::load(
        storage_dir.join("vector-search"),
        store.as_ref(),
    )
    .await?;
    let vector_search = Arc::new(deputy_vector_search::VectorSearch::new(
        access.clone(),
        warehouse.clone(),
        vector_indexes,
    ));
    let upstreams = deputy_connections::http::Upstreams::new()
        .map(Arc::new)
        .map_err(|error| ServeError::Http(error.to_string()))?;
    let federation = deputy_oidc::Federation::new(access.clone())
        .map(Arc::new)
        .map_err(|error| ServeError::Http(error.to_string()))?;
    let sign_in = deputy_signin::SignIn::new(access.clone())
        .map(Arc::new)
        .map_err(|error| ServeError::Http(error.to_string()))?;
    let console = Arc::new(deputy_console::Console::new(&base_url));
    sign_in
        .ensure_console_app(
            deputy_console::session::CONSOLE_CLIENT_ID,
            &console.callback_url(),
        )
        .await
        .map_err(|error| ServeError::Access(error.to_string()))?;
    drop(startup);
    let serving = Arc::new(deputy_serving::Serving::new(
        access.clone(),
        deputy_serving::ServingBackends::new(deputy_models::default_models_dir()),
        agents,
    ));
    replicas::follow_other_replicas(store.as_ref(), access.clone(), serving.clone()).await?;
    // The route table is built once; `app` only adds the layers and the state.
    let (route_table, registry) = routes::api_routes().into_parts();
    let state = AppState::new(StateParts {
        warehouse,
        access,
        route_table,
        registry,
        serving,
        vector_search,
        upstreams,
        federation,
        sign_in,
        console,
    });
    Ok((state, report))
}

/// The whole HTTP application: the API and, beside it, the web console (its own cookie sessions, outside the API's
/// authentication layers, calling the API in process). Tests drive it with `tower::ServiceExt::oneshot`.
///
/// A trailing slash is trimmed before routing, as Databricks does: MLflow's deployments client lists endpoints at
/// `/api/2.0/serving-endpoints/`. The console's own `/console/` arrives at its router as `/console`.
pub fn app(state: AppState) -> NormalizePath<Router> {
    let console = deputy_console::routes(
        state.console().clone(),
        Arc::new(in_process::InProcessApi::new(state.clone())),
    );
    with_outer_layers(api(state).merge(console))
}

/// The API alone, with the same outer layers as [`app`]: what in-process calls go through. The console is left out
/// because nothing calls it in process, and building its router on every call would be wasted work.
pub(crate) fn api_app(state: AppState) -> NormalizePath<Router> {
    with_outer_layers(api(state))
}

/// The route table with the API's layers and its fallback, bound to the state.
fn api(state: AppState) -> Router {
    let router = state.route_table().clone();
    // Layers added later run first: authentication, then the delegated-call audit, then the scope check.
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::check_scope,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::audit_delegated,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ))
        .fallback(unknown_route)
        .with_state(state)
}

fn with_outer_layers(router: Router) -> NormalizePath<Router> {
    let router = router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http());
    NormalizePath::trim_trailing_slash(router)
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::endpoint_not_found(request.method().as_str(), request.uri().path())
}

/// A server bound to its socket and ready to accept requests.
pub struct BoundServer {
    pub listener: TcpListener,
    pub state: AppState,
    pub report: BootstrapReport,
}

impl BoundServer {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish. Meanwhile, expired
    /// audit events are purged (see `deputy_access::audit_retention`), and so are old authorization changes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let access = self.state.access().clone();
        let purge = tokio::spawn(async move {
            tokio::join!(
                deputy_access::audit_retention::purge_periodically(access.clone()),
                access.prune_change_log_periodically(),
            )
        });
        let app = axum::ServiceExt::<Request>::into_make_service(app(self.state));
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        purge.abort();
        served?;
        Ok(())
    }
}

/// The bound address as a process on this machine reaches it: a wildcard address is reached on loopback.
fn reachable_locally(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, address.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
        }
        _ => address,
    }
}

/// Binds the listener first so that the public URL can name the real port (`--listen 127.0.0.1:0` in tests).
pub async fn bind(config: &ServerConfig) -> Result<BoundServer, ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
    let address = listener.local_addr()?;
    let own_url = format!("http://{}", reachable_locally(address));
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let (state, report) = prepare_with_storage(
        &config.data_dir,
        config.storage_dir.as_ref().unwrap_or(&config.data_dir),
        config.database_url.as_deref(),
        &base_url,
        &own_url,
    )
    .await?;
    Ok(BoundServer {
        listener,
        state,
        report,
    })
}
