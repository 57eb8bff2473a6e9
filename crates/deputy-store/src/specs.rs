//! The persisted JSON documents (`securables.spec`) of each securable kind. They are the shared contract between the
//! Unity Catalog REST API, which renders them as `TableInfo`/`FunctionInfo`/`ConnectionInfo`, and the SQL engine,
//! which reads table schemas, row filters and column masks from them and writes them on DDL.
//!
//! Field names follow the Databricks wire names so that rendering is a copy, but these are storage types: add fields
//! with `#[serde(default)]` so that rows written by older versions still read.

use serde::{Deserialize, Serialize};

/// `spec` of a `table`, `view` or `vector_index` securable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// `MANAGED`, `EXTERNAL`, `VIEW`, `MATERIALIZED_VIEW`.
    pub table_type: String,
    /// `PARQUET` for managed tables; absent for views.
    #[serde(default)]
    pub data_source_format: Option<String>,
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// Where a managed table's files live, relative to the data directory.
    #[serde(default)]
    pub storage_location: Option<String>,
    #[serde(default)]
    pub view_definition: Option<String>,
    #[serde(default)]
    pub row_filter: Option<RowFilterSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    /// The SQL type as written, e.g. `decimal(10,2)`.
    pub type_text: String,
    /// The Databricks type name: `STRING`, `INT`, `LONG`, `DOUBLE`, `DECIMAL`, `BOOLEAN`, `DATE`, `TIMESTAMP`, ...
    pub type_name: String,
    pub position: u32,
    #[serde(default = "default_true")]
    pub nullable: bool,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub mask: Option<ColumnMaskSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilterSpec {
    /// Three-level name of a SQL function returning BOOLEAN.
    pub function_name: String,
    #[serde(default)]
    pub input_column_names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMaskSpec {
    /// Three-level name of a SQL function whose first argument is the column value.
    pub function_name: String,
    #[serde(default)]
    pub using_column_names: Vec<String>,
}

/// `spec` of a `function` securable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    #[serde(default)]
    pub input_params: Vec<FunctionParameterSpec>,
    /// The columns a table function returns (`data_type` `TABLE_TYPE`); empty for a scalar function.
    #[serde(default)]
    pub return_params: Vec<FunctionParameterSpec>,
    /// The return type name (`data_type` on the wire) and its full text.
    pub data_type: String,
    pub full_data_type: String,
    /// `SQL` or `EXTERNAL`.
    pub routine_body: String,
    /// The body: a SQL expression for `SQL` functions.
    pub routine_definition: String,
    #[serde(default)]
    pub external_language: Option<String>,
    #[serde(default = "default_true")]
    pub is_deterministic: bool,
    /// `CONTAINS_SQL`, `READS_SQL_DATA` or `NO_SQL`.
    #[serde(default)]
    pub sql_data_access: Option<String>,
}

impl FunctionSpec {
    /// `data_type` of a table function (`RETURNS TABLE`), whose call is a relation: `SELECT * FROM f(...)`.
    pub const TABLE_TYPE: &'static str = "TABLE_TYPE";

    pub fn is_table_function(&self) -> bool {
        self.data_type == Self::TABLE_TYPE
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionParameterSpec {
    pub name: String,
    pub type_text: String,
    pub type_name: String,
    pub position: u32,
    #[serde(default)]
    pub parameter_default: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// `spec` of a `connection` securable. Secret options (tokens, client secrets) are stored here and must be
/// redacted by whoever renders a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSpec {
    /// `HTTP`, `POSTGRESQL`, `MYSQL`, `DATABRICKS`, ...
    pub connection_type: String,
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub read_only: bool,
}

fn default_true() -> bool {
    true
}
