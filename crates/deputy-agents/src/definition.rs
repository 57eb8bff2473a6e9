//! What an agent author declares when deploying: what to run, the user API scopes the agent may use on behalf of
//! its callers, and the resources its own service principal needs. Read from an MLflow `MLmodel` file when there is
//! one (`auth_policy`, or the legacy `resources`), else from the deploy request (the CLI's `--user-scope` and
//! `--system-resource`).

use crate::resources::{DefinitionError, SystemResource, resource};
use deputy_core::ScopeSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// An MLflow model directory or a models-from-code file, hosted by the Python runtime.
    Python,
    /// An executable speaking the worker protocol, e.g. built on `deputy_sdk::agent::serve`.
    Binary,
    /// A YAML file naming a model, instructions and tools, run by Deputy itself (see `agents::declarative`).
    Declarative,
}

/// A deployable agent as found on disk plus what its author declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDefinition {
    pub kind: AgentKind,
    /// A directory (an MLflow model) or a single file.
    pub source: PathBuf,
    pub user_scopes: ScopeSet,
    pub system_resources: Vec<SystemResource>,
}

/// The part of an `MLmodel` file that declares access.
#[derive(Debug, Default, Deserialize)]
struct MlModel {
    auth_policy: Option<AuthPolicy>,
    resources: Option<Resources>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthPolicy {
    user_auth_policy: Option<UserAuthPolicy>,
    system_auth_policy: Option<SystemAuthPolicy>,
}

#[derive(Debug, Default, Deserialize)]
struct UserAuthPolicy {
    #[serde(default)]
    api_scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SystemAuthPolicy {
    resources: Option<Resources>,
}

/// `{api_version: '1', databricks: {serving_endpoint: [{name: ...}], ...}}`.
#[derive(Debug, Default, Deserialize)]
struct Resources {
    #[serde(default)]
    databricks: BTreeMap<String, Vec<NamedResource>>,
}

#[derive(Debug, Deserialize)]
struct NamedResource {
    name: String,
}

/// Reads the agent at `source`. `declared_scopes` and `declared_resources` are the deploy request's declarations,
/// which an `MLmodel` file must not contradict: an agent declares its access in one place.
pub fn read_definition(
    source: &Path,
    declared_scopes: &[String],
    declared_resources: &[String],
) -> Result<AgentDefinition, DefinitionError> {
    let metadata = std::fs::metadata(source)
        .map_err(|error| DefinitionError(format!("cannot read `{}`: {error}", source.display())))?;
    let request_scopes = parse_scopes(declared_scopes)?;
    let request_resources = declared_resources
        .iter()
        .map(|text| SystemResource::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if metadata.is_dir() {
        let mlmodel = source.join("MLmodel");
        let text = std::fs::read_to_string(&mlmodel).map_err(|error| {
            DefinitionError(format!(
                "`{}` is a directory without a readable MLmodel file: {error}",
                source.display()
            ))
        })?;
        let (scopes, resources) = parse_mlmodel(&text)?;
        if (!declared_scopes.is_empty() && scopes.is_some())
            || (!declared_resources.is_empty() && resources.is_some())
        {
            return Err(DefinitionError(
                "the MLmodel file already declares the agent's access; deploy without --user-scope and \
                 --system-resource, or log the model without an auth_policy"
                    .into(),
            ));
        }
        return Ok(AgentDefinition {
            kind: AgentKind::Python,
            source: source.to_owned(),
            user_scopes: scopes.unwrap_or(request_scopes),
            system_resources: resources.unwrap_or(request_resources),
        });
    }
    let extension = source.extension().and_then(|extension| extension.to_str());
    if matches!(extension, Some("yaml" | "yml")) {
        if !declared_scopes.is_empty() || !declared_resources.is_empty() {
            return Err(DefinitionError(
                "a declarative agent declares its access in its file (`user_scopes`); deploy without \
                 --user-scope and --system-resource"
                    .into(),
            ));
        }
        let text = std::fs::read_to_string(source).map_err(|error| {
            DefinitionError(format!("cannot read `{}`: {error}", source.display()))
        })?;
        let (agent, user_scopes) = crate::declarative::parse(&text)?;
        return Ok(AgentDefinition {
            kind: AgentKind::Declarative,
            source: source.to_owned(),
            user_scopes,
            system_resources: crate::declarative::system_resources(&agent),
        });
    }
    let kind = match extension {
        Some("py") => AgentKind::Python,
        _ if is_executable(&metadata) => AgentKind::Binary,
        _ => {
            return Err(DefinitionError(format!(
                "`{}` is neither an MLflow model directory, a Python file, a declarative agent (.yaml), \
                 nor an executable",
                source.display()
            )));
        }
    };
    Ok(AgentDefinition {
        kind,
        source: source.to_owned(),
        user_scopes: request_scopes,
        system_resources: request_resources,
    })
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    metadata.is_file()
}

fn parse_scopes(names: &[String]) -> Result<ScopeSet, DefinitionError> {
    ScopeSet::parse(&names.join(" "))
        .map_err(|error| DefinitionError(format!("invalid user API scope: {error}")))
}

pub(crate) type Declared = (Option<ScopeSet>, Option<Vec<SystemResource>>);

/// The user scopes and system resources an `MLmodel` file declares (`None` for what it leaves out).
pub(crate) fn parse_mlmodel(text: &str) -> Result<Declared, DefinitionError> {
    let model: MlModel = serde_norway::from_str(text)
        .map_err(|error| DefinitionError(format!("the MLmodel file is not valid: {error}")))?;
    let (user, system) = match model.auth_policy {
        Some(policy) => {
            if model.resources.is_some() {
                return Err(DefinitionError(
                    "the MLmodel file has both `auth_policy` and `resources`; MLflow allows only one".into(),
                ));
            }
            (
                policy.user_auth_policy,
                policy
                    .system_auth_policy
                    .and_then(|system| system.resources),
            )
        }
        None => (None, model.resources),
    };
    let scopes = user
        .map(|user| parse_scopes(&user.api_scopes))
        .transpose()?;
    let resources = system
        .map(|resources| {
            resources
                .databricks
                .iter()
                .flat_map(|(kind, named)| named.iter().map(move |item| resource(kind, &item.name)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok((scopes, resources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceKind;
    use deputy_core::ApiScope;

    const MLMODEL: &str = r#"
artifact_path: agent
flavors:
  python_function:
    loader_module: mlflow.pyfunc.model
    model_code_path: code/agent.py
auth_policy:
  system_auth_policy:
    resources:
      api_version: '1'
      databricks:
        serving_endpoint:
        - name: deputy-chat-smollm2
        vector_search_index:
        - name: main.docs.index
  user_auth_policy:
    api_scopes:
    - serving.serving-endpoints
    - vectorsearch.vector-search-indexes
"#;

    #[test]
    fn auth_policy_gives_scopes_and_resources() {
        let (scopes, resources) = parse_mlmodel(MLMODEL).unwrap();
        let scopes = scopes.unwrap();
        assert!(scopes.contains(ApiScope::ServingEndpoints));
        assert!(scopes.contains(ApiScope::VectorSearchIndexes));
        assert!(!scopes.contains(ApiScope::SqlStatementExecution));
        let resources = resources.unwrap();
        assert_eq!(
            resources,
            [
                SystemResource {
                    kind: ResourceKind::ServingEndpoint,
                    name: "deputy-chat-smollm2".into()
                },
                SystemResource {
                    kind: ResourceKind::VectorSearchIndex,
                    name: "main.docs.index".into()
                },
            ]
        );
    }

    #[test]
    fn legacy_resources_and_unknown_scopes() {
        let legacy =
            "resources:\n  api_version: '1'\n  databricks:\n    sql_warehouse:\n    - name: abc\n";
        let (scopes, resources) = parse_mlmodel(legacy).unwrap();
        assert_eq!(scopes, None);
        assert_eq!(resources.unwrap()[0].kind, ResourceKind::SqlWarehouse);
        let bad = "auth_policy:\n  user_auth_policy:\n    api_scopes: [sql.everything]\n";
        assert!(parse_mlmodel(bad).unwrap_err().0.contains("sql.everything"));
        let both = format!("{MLMODEL}resources:\n  databricks: {{}}\n");
        assert!(parse_mlmodel(&both).is_err());
        assert!(SystemResource::parse("warehouse:x").is_err());
        assert!(SystemResource::parse("table:").is_err());
        assert_eq!(
            SystemResource::parse("table:main.s.t").unwrap().kind,
            ResourceKind::Table
        );
    }

    #[test]
    fn files_are_told_apart_and_access_is_declared_once() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("agent.py");
        std::fs::write(&code, "print('hi')").unwrap();
        let scopes = vec!["sql.statement-execution".to_owned()];
        let definition = read_definition(&code, &scopes, &[]).unwrap();
        assert_eq!(definition.kind, AgentKind::Python);
        assert!(
            definition
                .user_scopes
                .contains(ApiScope::SqlStatementExecution)
        );
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("MLmodel"), MLMODEL).unwrap();
        assert!(read_definition(&model, &scopes, &[]).is_err());
        assert_eq!(
            read_definition(&model, &[], &[])
                .unwrap()
                .system_resources
                .len(),
            2
        );
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "x").unwrap();
        assert!(read_definition(&text, &[], &[]).is_err());
    }
}
