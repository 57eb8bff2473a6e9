//! First start of a data directory: the workspace id, the `admin` user in the `admins` group, and a personal access
//! token for it in `DIR/admin-token`. Every step checks before it writes, so a start interrupted half-way completes
//! on the next one, and later starts change nothing.

use crate::credentials::issue_personal_access_token;
use crate::directory::{ADMINS_GROUP, USERS_GROUP};
use crate::error::Error;
use deputy_core::ScopeSet;
use deputy_store::catalog::WorkspaceObjectRecord;
use deputy_store::{Identity, IdentityKind, MetadataStore, NewIdentity, PrincipalId, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    /// The data directory, absolute (a relative one is resolved against the working directory at start).
    pub data_dir: PathBuf,
    pub workspace_id: i64,
    /// The `admin` user and the `users` group: what the services' own bootstraps (built-in endpoints) grant to.
    pub admin_id: PrincipalId,
    pub users_group_id: PrincipalId,
    pub admin_token_path: PathBuf,
    /// Whether this start wrote a new admin token (first start, or the file had been removed).
    pub wrote_admin_token: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("metadata store: {0}")]
    Store(#[from] deputy_store::StoreError),
    #[error("could not write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Token(String),
}

pub async fn bootstrap(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<BootstrapReport, BootstrapError> {
    let now = crate::clock::now_millis();
    let workspace_id = match store.workspace_id().await? {
        Some(id) => id,
        None => {
            let id = new_workspace_id();
            store.create_workspace(id, now).await?;
            id
        }
    };
    let admin = ensure_identity(
        store,
        IdentityKind::User,
        ADMIN_USER,
        "Deputy administrator",
    )
    .await?;
    let admins = ensure_identity(store, IdentityKind::Group, ADMINS_GROUP, ADMINS_GROUP).await?;
    let users = ensure_identity(store, IdentityKind::Group, USERS_GROUP, USERS_GROUP).await?;
    store.add_group_member(users.id, admin.id).await?;
    store.add_group_member(admins.id, admin.id).await?;

    ensure_default_warehouse(store, &admin).await?;

    let admin_token_path = data_dir.join(ADMIN_TOKEN_FILE);
    let wrote_admin_token = !admin_token_path.exists();
    if wrote_admin_token {
        let issued = issue_personal_access_token(
            store,
            admin.id,
            admin.id,
            None,
            "bootstrap token of the admin user".into(),
            ScopeSet::all(),
        )
        .await
        .map_err(|error: Error| BootstrapError::Token(error.message))?;
        write_private_file(&admin_token_path, issued.value.expose()).map_err(|source| {
            BootstrapError::Io {
                path: admin_token_path.clone(),
                source,
            }
        })?;
    }
    Ok(BootstrapReport {
        data_dir: data_dir.to_owned(),
        workspace_id,
        admin_id: admin.id,
        users_group_id: users.id,
        admin_token_path,
        wrote_admin_token,
    })
}

/// The warehouse every workspace starts with, so that SQL works without setup.
pub const DEFAULT_WAREHOUSE_NAME: &str = "Deputy Warehouse";

async fn ensure_default_warehouse(
    store: &dyn Store,
    admin: &Identity,
) -> Result<(), BootstrapError> {
    if !store.list_workspace_objects("warehouses").await?.is_empty() {
        return Ok(());
    }
    let record = WorkspaceObjectRecord {
        object_type: "warehouses".into(),
        // Databricks warehouse ids are 16 hex digits.
        object_id: format!("{:016x}", rand::random::<u64>()),
        name: DEFAULT_WAREHOUSE_NAME.into(),
        owner_id: admin.id,
        spec: "{}".into(),
        created_at: crate::clock::now_millis(),
    };
    Ok(store.create_workspace_object(record).await?)
}

async fn ensure_identity(
    store: &dyn MetadataStore,
    kind: IdentityKind,
    name: &str,
    display_name: &str,
) -> Result<Identity, BootstrapError> {
    if let Some(existing) = store.find_identity(kind, name).await? {
        return Ok(existing);
    }
    let identity = NewIdentity {
        kind,
        name: name.into(),
        display_name: display_name.into(),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    };
    Ok(store
        .create_identity(identity, crate::clock::now_millis())
        .await?)
}

/// A 16-digit id, the shape of Databricks workspace ids (clients treat it as a numeric string).
fn new_workspace_id() -> i64 {
    use rand::Rng;
    rand::rng().random_range(1_000_000_000_000_000..9_000_000_000_000_000)
}

/// Writes `contents` so that the file is never visible with wider permissions or half-written: a temporary file
/// created with mode 0600, synced, then renamed into place.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
