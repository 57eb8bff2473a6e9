//! The resources an agent's own service principal may be given (warehouses, endpoints, tables, functions, ...), as
//! authors name them in `MLmodel` files and declarative definitions, and the error every definition reader reports.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

/// A resource kind, named by MLflow's resource keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    ServingEndpoint,
    VectorSearchIndex,
    SqlWarehouse,
    Function,
    Table,
    UcConnection,
    GenieSpace,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::ServingEndpoint,
        ResourceKind::VectorSearchIndex,
        ResourceKind::SqlWarehouse,
        ResourceKind::Function,
        ResourceKind::Table,
        ResourceKind::UcConnection,
        ResourceKind::GenieSpace,
    ];

    pub fn key(self) -> &'static str {
        match self {
            ResourceKind::ServingEndpoint => "serving_endpoint",
            ResourceKind::VectorSearchIndex => "vector_search_index",
            ResourceKind::SqlWarehouse => "sql_warehouse",
            ResourceKind::Function => "function",
            ResourceKind::Table => "table",
            ResourceKind::UcConnection => "uc_connection",
            ResourceKind::GenieSpace => "genie_space",
        }
    }

    fn from_key(key: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|kind| kind.key() == key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemResource {
    pub kind: ResourceKind,
    pub name: String,
}

impl SystemResource {
    /// `TYPE:NAME`, as the CLI takes it.
    pub fn parse(text: &str) -> Result<SystemResource, DefinitionError> {
        let (kind, name) = text.split_once(':').ok_or_else(|| {
            DefinitionError(format!(
                "system resource `{text}` is not of the form TYPE:NAME"
            ))
        })?;
        resource(kind, name)
    }
}

pub(crate) fn resource(kind: &str, name: &str) -> Result<SystemResource, DefinitionError> {
    let known = ResourceKind::ALL.map(ResourceKind::key).join(", ");
    let kind = ResourceKind::from_key(kind.trim()).ok_or_else(|| {
        DefinitionError(format!(
            "unknown resource type `{kind}`; use one of {known}"
        ))
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Err(DefinitionError(format!(
            "a `{}` resource needs a name",
            kind.key()
        )));
    }
    Ok(SystemResource {
        kind,
        name: name.to_owned(),
    })
}
