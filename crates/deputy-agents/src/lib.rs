//! Deployed agents: where their files live, how their workers are started, and the system credentials they get.
//!
//! An agent endpoint has its own service principal (display name `agent:<endpoint>`). Its workers see that
//! principal's token in `$SERVING_CREDENTIALS_DIR/model-dependencies-oauth-token`, rewritten well before it expires
//! (the Databricks SDK re-reads it), and, per request, the invoking user's downscoped token (minted by the server's
//! serving path).
//!
//! **Invariants:** a worker process gets the user's token for one request only, on its stdin, never in its
//! environment or files; the system token file is written whole (temporary file, then rename) with mode 0600.

pub mod declarative;
pub mod declarative_loop;
pub mod definition;
pub mod public_api;
pub mod resources;
pub mod worker;

use definition::AgentKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::{AgentPool, WorkerCommand};

/// The display name prefix of an agent endpoint's service principal.
pub use deputy_access::audit::AGENT_PRINCIPAL_PREFIX;
/// The file the Databricks SDK reads the system token from, inside `SERVING_CREDENTIALS_DIR`.
const SYSTEM_TOKEN_FILE: &str = "model-dependencies-oauth-token";
/// The system token lives an hour and is rewritten every 20 minutes, so any copy read from the file has at least
/// 40 minutes left (Databricks promises 30).
pub const SYSTEM_TOKEN_LIFETIME_SECONDS: i64 = 3600;
pub const SYSTEM_TOKEN_REFRESH: Duration = Duration::from_secs(20 * 60);
/// The setting that turns on-behalf-of-user access on for every agent endpoint.
pub const OBO_SETTING: &str = "obo-enabled";
/// The admin switches of on-behalf-of access, as stored in the settings table.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentSettings {
    pub obo_enabled: bool,
    pub consent_required: bool,
}

/// When on, an agent may act for a user only with scopes the user consented to for that endpoint.
pub const CONSENT_SETTING: &str = "consent-required";

impl AgentSettings {
    /// The switches as stored; a switch never set, or set to anything but `true`, is off.
    pub async fn read(
        store: &dyn deputy_store::MetadataStore,
    ) -> deputy_store::StoreResult<AgentSettings> {
        let is_on = |value: Option<String>| value.is_some_and(|value| value == "true");
        Ok(AgentSettings {
            obo_enabled: is_on(store.get_setting(OBO_SETTING).await?),
            consent_required: is_on(store.get_setting(CONSENT_SETTING).await?),
        })
    }
}

/// A change to the admin switches: a `None` is left as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentSettingsChange {
    pub obo_enabled: Option<bool>,
    pub consent_required: Option<bool>,
}

impl AgentSettingsChange {
    /// The switches the change sets, by their stored keys, with their new values.
    pub fn switches(&self) -> impl Iterator<Item = (&'static str, bool)> {
        [
            (OBO_SETTING, self.obo_enabled),
            (CONSENT_SETTING, self.consent_required),
        ]
        .into_iter()
        .filter_map(|(key, on)| on.map(|on| (key, on)))
    }
}

/// An agent as recorded with its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedAgent {
    pub kind: AgentKind,
    /// The deployed copy of the agent (a directory or a file), relative to `STORAGE/agents` (see
    /// [`AgentHost::artifact_path`]), so that every replica finds it wherever it mounts the shared storage; an agent
    /// deployed before that was recorded with its absolute path, which is still followed.
    pub artifact: PathBuf,
    /// The user API scopes the author declared, canonical text.
    pub user_scopes: String,
    pub system_resources: Vec<resources::SystemResource>,
    /// The application id of the endpoint's service principal.
    pub service_principal: String,
    pub workers: usize,
}

/// Running agent workers by endpoint id, and what every worker needs to know.
///
/// Two directories: deployments (the agents' copied artifacts) under `STORAGE/agents/<endpoint id>/<deployment>/`,
/// shared by every replica, since an endpoint deployed through one replica runs on all of them; and this replica's
/// own `DATA_DIR/agents/<endpoint id>/`: the workers' system token (`credentials/`, written by each replica with its
/// own refresh), home and working directory, log and MLflow traces. With one server both are `DATA_DIR/agents`.
pub struct AgentHost {
    /// This replica's: credentials, worker homes and logs.
    agents_dir: PathBuf,
    /// Shared by the replicas: deployed artifacts.
    deployments_dir: PathBuf,
    runtime_dir: PathBuf,
    python: String,
    /// Where workers call this server back: its own address, so a worker's calls stay on the replica that runs it
    /// (and do not fail with another replica, nor cross the load balancer twice).
    callback_url: String,
    /// The running pool of each endpoint, with the artifact its workers run.
    pools: Mutex<HashMap<String, (PathBuf, Arc<AgentPool>)>>,
    obo_enabled: AtomicBool,
    consent_required: AtomicBool,
    /// Held from reading the stored switches to setting them here, so a reload that read earlier cannot overwrite
    /// one that read later (this replica's write and another replica's announcement race otherwise).
    settings_reload: tokio::sync::Mutex<()>,
    startup_timeout: Duration,
    request_timeout: Duration,
}

impl AgentHost {
    /// `runtime_dir` holds the Python agent runtime's packages (see `python_runtime_dir`); deployments go under
    /// `storage_dir/agents`, this replica's worker files under `data_dir/agents`.
    pub fn new(
        data_dir: &Path,
        storage_dir: &Path,
        runtime_dir: PathBuf,
        callback_url: &str,
        settings: AgentSettings,
    ) -> AgentHost {
        AgentHost {
            agents_dir: data_dir.join("agents"),
            deployments_dir: storage_dir.join("agents"),
            runtime_dir,
            python: std::env::var("DEPUTY_AGENT_PYTHON").unwrap_or_else(|_| "python3".into()),
            callback_url: callback_url.to_owned(),
            pools: Mutex::default(),
            obo_enabled: AtomicBool::new(settings.obo_enabled),
            consent_required: AtomicBool::new(settings.consent_required),
            settings_reload: tokio::sync::Mutex::new(()),
            startup_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(600),
        }
    }

    pub fn obo_enabled(&self) -> bool {
        self.obo_enabled.load(Ordering::SeqCst)
    }

    pub fn consent_required(&self) -> bool {
        self.consent_required.load(Ordering::SeqCst)
    }

    /// Stores the switches `change` sets in one transaction, then takes them as stored.
    pub async fn change_settings(
        &self,
        store: &dyn deputy_store::MetadataStore,
        change: AgentSettingsChange,
    ) -> deputy_store::StoreResult<()> {
        let changes: Vec<(&str, &str)> = change
            .switches()
            .map(|(key, on)| (key, if on { "true" } else { "false" }))
            .collect();
        store.set_settings(&changes).await?;
        self.reload_settings(store).await
    }

    /// Takes the switches as stored, after a write through this replica or another. The copy here only ever comes
    /// from the store, so it ends as the last committed write whatever order the reloads ran in.
    pub async fn reload_settings(
        &self,
        store: &dyn deputy_store::MetadataStore,
    ) -> deputy_store::StoreResult<()> {
        let _serialized = self.settings_reload.lock().await;
        let settings = AgentSettings::read(store).await?;
        self.obo_enabled
            .store(settings.obo_enabled, Ordering::SeqCst);
        self.consent_required
            .store(settings.consent_required, Ordering::SeqCst);
        Ok(())
    }

    /// A fresh directory for one deployment of the endpoint, in the shared storage, so a redeploy never changes
    /// files a running worker uses (on any replica).
    pub fn new_deployment_dir(&self, endpoint_id: &str) -> PathBuf {
        self.deployments_dir
            .join(endpoint_id)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// How an artifact copied under [`new_deployment_dir`](AgentHost::new_deployment_dir) is recorded: relative to
    /// the deployments' directory (any other path as it is).
    pub fn recorded_artifact(&self, artifact: &Path) -> PathBuf {
        artifact
            .strip_prefix(&self.deployments_dir)
            .map_or_else(|_| artifact.to_owned(), Path::to_path_buf)
    }

    /// Where the agent's deployed artifact is on this replica: its recorded path under the shared deployments'
    /// directory (an absolute recorded path, from before, as it is).
    pub fn artifact_path(&self, agent: &DeployedAgent) -> PathBuf {
        self.deployments_dir.join(&agent.artifact)
    }

    fn credentials_dir(&self, endpoint_id: &str) -> PathBuf {
        self.agents_dir.join(endpoint_id).join("credentials")
    }

    /// Writes the endpoint's system token where its workers' SDK reads it, atomically and readable by the owner
    /// only.
    pub fn write_system_token(&self, endpoint_id: &str, token: &str) -> std::io::Result<()> {
        let dir = self.credentials_dir(endpoint_id);
        std::fs::create_dir_all(&dir)?;
        let body = serde_json::json!({ "OAUTH_TOKEN": [{ "oauthTokenValue": token }] }).to_string();
        deputy_access::bootstrap::write_private_file(&dir.join(SYSTEM_TOKEN_FILE), &body)
    }

    /// The endpoint's workers, started on first use. `fresh` says whether this call created the pool (the caller
    /// then starts the system token's refresh). `None` for a declarative agent, which Deputy runs itself. Workers
    /// running another deployment of the endpoint (redeployed through another replica) are replaced.
    pub fn pool(&self, endpoint_id: &str, agent: &DeployedAgent) -> Option<(Arc<AgentPool>, bool)> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((artifact, pool)) = pools.get(endpoint_id)
            && *artifact == agent.artifact
        {
            return Some((pool.clone(), false));
        }
        let pool = Arc::new(AgentPool::new(
            self.command(endpoint_id, agent)?,
            agent.workers,
            self.startup_timeout,
            self.request_timeout,
        ));
        pools.insert(
            endpoint_id.to_owned(),
            (agent.artifact.clone(), pool.clone()),
        );
        Some((pool, true))
    }

    /// Stops the endpoint's workers (they are killed when the last request holding them ends).
    pub fn stop(&self, endpoint_id: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(endpoint_id);
    }

    /// Stops the workers of every endpoint not in `endpoint_ids`: those deleted through another replica, which this
    /// one hears of only as a changed list of endpoints.
    pub fn stop_all_but(&self, endpoint_ids: &std::collections::HashSet<&str>) {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|endpoint_id, _| endpoint_ids.contains(endpoint_id.as_str()));
    }

    /// The endpoint's workers now; `None` when none has been started since the server started (they start on the
    /// first request).
    pub fn health(&self, endpoint_id: &str) -> Option<worker::PoolHealth> {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(endpoint_id)
            .map(|(_, pool)| pool.health())
    }

    pub fn is_running(&self, endpoint_id: &str) -> bool {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(endpoint_id)
    }

    fn command(&self, endpoint_id: &str, agent: &DeployedAgent) -> Option<WorkerCommand> {
        let endpoint_dir = self.agents_dir.join(endpoint_id);
        let mut env = vec![
            ("IS_IN_DB_MODEL_SERVING_ENV".to_owned(), "true".to_owned()),
            (
                "DATABRICKS_MODEL_SERVING_HOST_URL".to_owned(),
                self.callback_url.clone(),
            ),
            (
                "SERVING_CREDENTIALS_DIR".to_owned(),
                self.credentials_dir(endpoint_id).display().to_string(),
            ),
            ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
            (
                "PYTHONPATH".to_owned(),
                self.runtime_dir.display().to_string(),
            ),
            ("HOME".to_owned(), endpoint_dir.display().to_string()),
            // Agents that trace (ai-bridge's Genie, databricks-langchain's GenieAgent) open an MLflow client: their
            // traces stay in the endpoint's directory, in a file store, rather than MLflow's default SQLite store
            // (which needs alembic whenever SQLAlchemy is installed).
            (
                "MLFLOW_TRACKING_URI".to_owned(),
                format!("file://{}", endpoint_dir.join("mlruns").display()),
            ),
            ("MLFLOW_ALLOW_FILE_STORE".to_owned(), "true".to_owned()),
        ];
        // The few variables a process needs to find programs and speak UTF-8; nothing else of the server's.
        for key in ["PATH", "LANG", "LC_ALL", "TZ", "DEPUTY_MODEL_CACHE"] {
            if let Ok(value) = std::env::var(key) {
                env.push((key.to_owned(), value));
            }
        }
        let artifact = self.artifact_path(agent);
        let (program, args) = match agent.kind {
            AgentKind::Python => (
                PathBuf::from(&self.python),
                vec![
                    "-m".to_owned(),
                    "deputy_agent_runtime".to_owned(),
                    "--model".to_owned(),
                    artifact.display().to_string(),
                ],
            ),
            AgentKind::Binary => (artifact, Vec::new()),
            AgentKind::Declarative => return None,
        };
        Some(WorkerCommand {
            program,
            args,
            env,
            working_dir: endpoint_dir.clone(),
            log_file: endpoint_dir.join("worker.log"),
        })
    }
}

/// Where the Python agent runtime's packages are: `$DEPUTY_AGENT_RUNTIME` (a checkout being worked on), else the copy
/// embedded in this binary, written under `DATA_DIR/python` once per version.
pub fn python_runtime_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    match std::env::var_os("DEPUTY_AGENT_RUNTIME").filter(|dir| !dir.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => deputy_python_files::AGENT_RUNTIME.write_under(&data_dir.join("python")),
    }
}

/// Copies the agent at `source` (a file or a directory tree) to `target`.
pub fn copy_artifact(source: &Path, target: &Path) -> std::io::Result<()> {
    if source.is_dir() {
        std::fs::create_dir_all(target)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            let name = entry.file_name();
            // Byte-code caches and virtual environments are rebuilt where the agent runs.
            if name == "__pycache__" || name == ".venv" {
                continue;
            }
            copy_artifact(&entry.path(), &target.join(name))?;
        }
        Ok(())
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(source, target).map(|_| ())
    }
}
