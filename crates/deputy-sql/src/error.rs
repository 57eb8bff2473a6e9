//! The one error type of the engine, with the Databricks error class in each message and a service error code for
//! the statement-execution API's `status.error.error_code`.

use datafusion::error::DataFusionError;
use deputy_store::StoreError;

/// Why a statement failed. Messages start with the Databricks error class in brackets (`[TABLE_OR_VIEW_NOT_FOUND]`),
/// as Databricks SQL prints them; user input is in backticks.
///
/// **Invariant:** an object the caller may not see fails exactly as a missing one does (same variant, same message),
/// so errors never reveal that something exists.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("[PARSE_SYNTAX_ERROR] {0}")]
    Syntax(String),
    #[error("[TABLE_OR_VIEW_NOT_FOUND] the table or view `{0}` cannot be found")]
    TableNotFound(String),
    #[error("[SCHEMA_NOT_FOUND] the schema `{0}` cannot be found")]
    SchemaNotFound(String),
    #[error("[CATALOG_NOT_FOUND] the catalog `{0}` cannot be found")]
    CatalogNotFound(String),
    #[error("[UNRESOLVED_ROUTINE] the function `{0}` cannot be found")]
    FunctionNotFound(String),
    #[error("[PRINCIPAL_DOES_NOT_EXIST] the principal `{0}` cannot be found")]
    PrincipalNotFound(String),
    #[error("[ALREADY_EXISTS] {kind} `{name}` already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("[INSUFFICIENT_PERMISSIONS] {0}")]
    PermissionDenied(String),
    #[error("[UNSUPPORTED_FEATURE] {0}")]
    Unsupported(String),
    #[error("[INVALID_PARAMETER_VALUE] {0}")]
    InvalidInput(String),
    /// Planning failed: an unknown column, a type mismatch, a wrong argument count.
    #[error("[ANALYSIS_ERROR] {0}")]
    Analysis(String),
    /// The statement failed while running (division by zero, a cast that does not fit...).
    #[error("[EXECUTION_ERROR] {0}")]
    Execution(String),
    #[error("[OPERATION_CANCELED] the statement was canceled")]
    Canceled,
    /// The metadata store or the table files failed; not the caller's fault.
    #[error("[INTERNAL_ERROR] {0}")]
    Internal(String),
}

impl SqlError {
    /// The service error code of the statement-execution API (`status.error.error_code`).
    pub fn error_code(&self) -> &'static str {
        match self {
            SqlError::Syntax(_)
            | SqlError::Unsupported(_)
            | SqlError::InvalidInput(_)
            | SqlError::Analysis(_)
            | SqlError::Execution(_) => "BAD_REQUEST",
            SqlError::TableNotFound(_)
            | SqlError::SchemaNotFound(_)
            | SqlError::CatalogNotFound(_)
            | SqlError::FunctionNotFound(_)
            | SqlError::PrincipalNotFound(_) => "NOT_FOUND",
            SqlError::AlreadyExists { .. } => "ALREADY_EXISTS",
            SqlError::PermissionDenied(_) => "PERMISSION_DENIED",
            SqlError::Canceled => "CANCELLED",
            SqlError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The ANSI SQLSTATE (`status.sql_state`).
    pub fn sql_state(&self) -> &'static str {
        match self {
            SqlError::Syntax(_) => "42601",
            SqlError::TableNotFound(_) => "42P01",
            SqlError::SchemaNotFound(_) | SqlError::CatalogNotFound(_) => "3F000",
            SqlError::FunctionNotFound(_) => "42883",
            SqlError::PrincipalNotFound(_) => "42704",
            SqlError::AlreadyExists { .. } => "42P07",
            SqlError::PermissionDenied(_) => "42501",
            SqlError::Unsupported(_) => "0A000",
            SqlError::InvalidInput(_) | SqlError::Analysis(_) => "42000",
            SqlError::Execution(_) => "22000",
            SqlError::Canceled => "57014",
            SqlError::Internal(_) => "XX000",
        }
    }
}

impl From<DataFusionError> for SqlError {
    fn from(error: DataFusionError) -> SqlError {
        // Errors raised by our own providers travel through DataFusion wrapped as `External`; unwrap them first.
        let root = error.find_root();
        if let DataFusionError::External(inner) = root
            && let Some(sql) = inner.downcast_ref::<SqlError>()
        {
            return sql.clone_shallow();
        }
        // The message without a backtrace; DataFusion's own prefix ("Error during planning") stays out.
        let message = root.message().into_owned();
        match root {
            DataFusionError::SQL(..) => SqlError::Syntax(message),
            DataFusionError::Plan(plan) => {
                if let Some(name) = between(plan, "table '", "' not found") {
                    SqlError::TableNotFound(name.to_owned())
                } else if let Some(name) = between(plan, "Invalid function '", "'") {
                    SqlError::FunctionNotFound(name.to_owned())
                } else {
                    SqlError::Analysis(message)
                }
            }
            DataFusionError::NotImplemented(_) => SqlError::Unsupported(message),
            DataFusionError::SchemaError(..) => SqlError::Analysis(message),
            DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => {
                SqlError::Execution(message)
            }
            DataFusionError::ResourcesExhausted(_) => SqlError::Execution(message),
            _ => SqlError::Internal(message),
        }
    }
}

impl From<StoreError> for SqlError {
    fn from(error: StoreError) -> SqlError {
        SqlError::Internal(format!("metadata store: {error}"))
    }
}

impl From<std::io::Error> for SqlError {
    fn from(error: std::io::Error) -> SqlError {
        SqlError::Internal(format!("table storage: {error}"))
    }
}

impl SqlError {
    /// A copy for the rare place that holds a borrowed error (the root of a DataFusion error chain).
    fn clone_shallow(&self) -> SqlError {
        match self {
            SqlError::Syntax(m) => SqlError::Syntax(m.clone()),
            SqlError::TableNotFound(m) => SqlError::TableNotFound(m.clone()),
            SqlError::SchemaNotFound(m) => SqlError::SchemaNotFound(m.clone()),
            SqlError::CatalogNotFound(m) => SqlError::CatalogNotFound(m.clone()),
            SqlError::FunctionNotFound(m) => SqlError::FunctionNotFound(m.clone()),
            SqlError::PrincipalNotFound(m) => SqlError::PrincipalNotFound(m.clone()),
            SqlError::AlreadyExists { kind, name } => SqlError::AlreadyExists {
                kind,
                name: name.clone(),
            },
            SqlError::PermissionDenied(m) => SqlError::PermissionDenied(m.clone()),
            SqlError::Unsupported(m) => SqlError::Unsupported(m.clone()),
            SqlError::InvalidInput(m) => SqlError::InvalidInput(m.clone()),
            SqlError::Analysis(m) => SqlError::Analysis(m.clone()),
            SqlError::Execution(m) => SqlError::Execution(m.clone()),
            SqlError::Canceled => SqlError::Canceled,
            SqlError::Internal(m) => SqlError::Internal(m.clone()),
        }
    }

    /// Wraps the error so that it can cross DataFusion's provider interfaces and come back out unchanged.
    pub(crate) fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let rest = text.get(from..)?;
    let to = rest.find(end)?;
    rest.get(..to)
}
