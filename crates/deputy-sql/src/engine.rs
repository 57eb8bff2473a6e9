//! The engine: runs one statement for one session.

mod copy;
mod dml;
mod replace;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::sqlparser::ast::{Insert, ObjectName, Query, Statement, TableObject};
use deputy_authz::{
    Action, PrincipalId, Privilege, PrivilegeSet, SecurableKind, SecurableRef, may_grant,
    validate_name,
};
use deputy_core::ApiScope;
use deputy_store::catalog::{GrantChange, NewSecurable, SecurableChanges, SecurableRecord};
use deputy_store::specs::{
    ColumnMaskSpec, ColumnSpec, FunctionParameterSpec, FunctionSpec, RowFilterSpec, TableSpec,
};
use deputy_store::{IdentityKind, Store};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::SqlError;
use crate::catalog::{CatalogContext, Directory, Shared, reference, table_spec};
use crate::functions::Identity;
use crate::parse::{
    ColumnDefinition, DeputyStatement, FunctionParameter, FunctionReturns, Name,
    identifier_clauses, object_name, parse_statement, scalar_body,
};
use crate::result::{CatalogChange, StatementResult};
use crate::routines::reads_data;
use crate::session::{Rights, Session};
use crate::snapshot::{authz_principal, store_principal};
use crate::storage::{ParquetFile, TableFiles, TableLock, TableLocks};
use crate::types::{arrow_type, storage_type, type_name, type_text};

/// One named statement parameter (`:name` in the statement), as the statement-execution API sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementParameter {
    pub name: String,
    /// `None` binds SQL NULL.
    pub value: Option<String>,
    /// A Databricks type (`INT`, `DATE`, `DECIMAL(10,2)`); `None` means `STRING`.
    pub type_name: Option<String>,
}

/// The SQL warehouse engine. Cheap to share (`Arc`) between concurrent statements: each statement builds its own
/// DataFusion session from the store and the caller's snapshot, and nothing is cached between statements.
pub struct SqlEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("data_dir", &self.shared.data_dir)
            .finish_non_exhaustive()
    }
}

impl SqlEngine {
    /// An engine keeping table files under `data_dir/tables/` and metadata in `store`.
    pub fn new(data_dir: impl Into<PathBuf>, store: Arc<dyn Store>) -> Result<SqlEngine, SqlError> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(data_dir.join("tables"))?;
        // Table paths are handed to DataFusion as URLs, which must be absolute.
        let data_dir = std::fs::canonicalize(&data_dir)?;
        let tables = data_dir.join("tables");
        Ok(SqlEngine {
            shared: Arc::new(Shared {
                files: TableFiles::new(tables.clone()),
                data_dir,
                store,
                runtime: RuntimeEnvBuilder::new()
                    .with_cache_manager(
                        // DataFusion caches directory listings forever by default; COPY INTO adds files to a
                        // table's directory behind its back, so every scan lists the directory afresh.
                        CacheManagerConfig::default().with_list_files_cache_limit(0),
                    )
                    .build_arc()?,
                locks: TableLocks::new(tables),
            }),
        })
    }

    /// Runs one statement as `session`. Cancelling `cancel` stops it and returns [`SqlError::Canceled`]; catalog
    /// changes already written stay written (each DDL statement makes at most one store change that matters).
    pub async fn execute(
        &self,
        session: &Session,
        statement: &str,
        parameters: &[StatementParameter],
        cancel: CancellationToken,
    ) -> Result<StatementResult, SqlError> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(SqlError::Canceled),
            result = self.run(session, statement, parameters) => result,
        }
    }

    async fn run(
        &self,
        session: &Session,
        sql: &str,
        parameters: &[StatementParameter],
    ) -> Result<StatementResult, SqlError> {
        if !session.scopes.contains(ApiScope::SqlStatementExecution) {
            return Err(SqlError::PermissionDenied(format!(
                "the token lacks the `{}` scope",
                ApiScope::SqlStatementExecution
            )));
        }
        let sql = identifier_clauses(sql, |name| {
            parameters
                .iter()
                .find(|parameter| parameter.name == name)
                .and_then(|parameter| parameter.value.clone())
        })?;
        let statement = parse_statement(&sql)?;
        let directory = Arc::new(Directory::load(&*self.shared.store).await?);
        let identity = Arc::new(Identity::new(&session.user_name, &session.groups));
        let defaults = (
            session
                .default_catalog
                .as_deref()
                .unwrap_or(crate::session::DEFAULT_CATALOG)
                .to_ascii_lowercase(),
            session
                .default_schema
                .as_deref()
                .unwrap_or(crate::session::DEFAULT_SCHEMA)
                .to_ascii_lowercase(),
        );
        let context = CatalogContext::new(
            Arc::clone(&self.shared),
            directory,
            Rights::of(session),
            identity,
            defaults,
        );
        let run = Run {
            shared: &self.shared,
            session,
            context,
            parameters,
        };
        run.statement(statement).await
    }
}

/// One statement in flight.
struct Run<'a> {
    shared: &'a Arc<Shared>,
    session: &'a Session,
    context: Arc<CatalogContext>,
    parameters: &'a [StatementParameter],
}

fn empty_result(changes: Vec<CatalogChange>) -> StatementResult {
    StatementResult {
        schema: Arc::new(Schema::empty()),
        batches: Vec::new(),
        changes,
    }
}

/// A result of string columns, for SHOW and DESCRIBE.
fn string_rows(
    columns: &[&str],
    rows: Vec<Vec<Option<String>>>,
) -> Result<StatementResult, SqlError> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|name| Field::new(*name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays = (0..columns.len())
        .map(|index| {
            let values: StringArray = rows
                .iter()
                .map(|row| row.get(index).cloned().flatten())
                .collect();
            Arc::new(values) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)
        .map_err(|error| SqlError::Internal(error.to_string()))?;
    Ok(StatementResult {
        schema,
        batches: vec![batch],
        changes: Vec::new(),
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, SqlError> {
    serde_json::to_string(value).map_err(|error| SqlError::Internal(error.to_string()))
}

impl Run<'_> {
    async fn statement(&self, statement: DeputyStatement) -> Result<StatementResult, SqlError> {
        match statement {
            DeputyStatement::CreateCatalog {
                name,
                if_not_exists,
                comment,
            } => self.create_catalog(name, if_not_exists, comment).await,
            DeputyStatement::CreateSchema {
                name,
                if_not_exists,
                comment,
            } => self.create_schema(&name, if_not_exists, comment).await,
            DeputyStatement::CreateTable {
                name,
                if_not_exists,
                or_replace,
                columns,
                query,
                comment,
            } => {
                self.create_table(&name, if_not_exists, or_replace, columns, query, comment)
                    .await
            }
            DeputyStatement::CreateView {
                name,
                if_not_exists,
                query,
                comment,
            } => self.create_view(&name, if_not_exists, query, comment).await,
            DeputyStatement::CreateFunction {
                name,
                if_not_exists,
                or_replace,
                parameters,
                returns,
                body,
                comment,
            } => {
                self.create_function(
                    &name,
                    (if_not_exists, or_replace),
                    parameters,
                    &returns,
                    body,
                    comment,
                )
                .await
            }
            DeputyStatement::Drop {
                kind,
                name,
                if_exists,
                cascade,
            } => self.drop(kind, &name, if_exists, cascade).await,
            DeputyStatement::ShowCatalogs => string_rows(
                &["catalog"],
                self.context
                    .catalog_names()
                    .into_iter()
                    .map(|name| vec![Some(name)])
                    .collect(),
            ),
            DeputyStatement::ShowSchemas { catalog } => {
                let catalog = catalog.unwrap_or_else(|| self.context.default_catalog.clone());
                let schemas = self
                    .context
                    .schema_names(&catalog)
                    .ok_or(SqlError::CatalogNotFound(catalog))?;
                string_rows(
                    &["databaseName"],
                    schemas.into_iter().map(|name| vec![Some(name)]).collect(),
                )
            }
            DeputyStatement::ShowTables { schema } => {
                let schema = match schema {
                    Some(name) => self.qualify(&name, 2)?,
                    None => format!(
                        "{}.{}",
                        self.context.default_catalog, self.context.default_schema
                    ),
                };
                let (catalog, schema_name) = split2(&schema)?;
                let tables = self
                    .context
                    .table_names(catalog, schema_name)
                    .ok_or_else(|| SqlError::SchemaNotFound(schema.clone()))?;
                string_rows(
                    &["database", "tableName", "isTemporary"],
                    tables
                        .into_iter()
                        .map(|table| {
                            vec![
                                Some(schema_name.to_owned()),
                                Some(table),
                                Some("false".to_owned()),
                            ]
                        })
                        .collect(),
                )
            }
            DeputyStatement::Describe { name } => self.describe(&name),
            DeputyStatement::SetRowFilter {
                table,
                function,
                columns,
            } => {
                self.set_policy(
                    &table,
                    |spec, function_name| {
                        spec.row_filter = Some(RowFilterSpec {
                            function_name: function_name.to_owned(),
                            input_column_names: columns.clone(),
                        });
                        Ok(Some((function_name.to_owned(), columns.clone(), true)))
                    },
                    Some(&function),
                )
                .await
            }
            DeputyStatement::DropRowFilter { table } => {
                self.set_policy(
                    &table,
                    |spec, _| {
                        spec.row_filter = None;
                        Ok(None)
                    },
                    None,
                )
                .await
            }
            DeputyStatement::SetMask {
                table,
                column,
                function,
                using,
            } => {
                self.set_policy(
                    &table,
                    |spec, function_name| {
                        let target = column_mut(spec, &column)?;
                        target.mask = Some(ColumnMaskSpec {
                            function_name: function_name.to_owned(),
                            using_column_names: using.clone(),
                        });
                        let mut arguments = vec![target.name.clone()];
                        arguments.extend(using.iter().cloned());
                        Ok(Some((function_name.to_owned(), arguments, false)))
                    },
                    Some(&function),
                )
                .await
            }
            DeputyStatement::DropMask { table, column } => {
                self.set_policy(
                    &table,
                    |spec, _| {
                        column_mut(spec, &column)?.mask = None;
                        Ok(None)
                    },
                    None,
                )
                .await
            }
            DeputyStatement::Grant {
                privileges,
                kind,
                name,
                principal,
            } => {
                self.change_grants(&privileges, kind, &name, &principal, true)
                    .await
            }
            DeputyStatement::Revoke {
                privileges,
                kind,
                name,
                principal,
            } => {
                self.change_grants(&privileges, kind, &name, &principal, false)
                    .await
            }
            DeputyStatement::ShowGrants {
                principal,
                kind,
                name,
            } => self.show_grants(principal.as_deref(), kind, &name).await,
            DeputyStatement::CopyInto {
                table,
                path,
                format,
                options,
            } => self.copy_into(&table, &path, format, &options).await,
            DeputyStatement::Standard(statement) => self.standard(*statement).await,
        }
    }

    // ---- names and checks ---------------------------------------------------------------------------------------

    /// Completes a name to `levels` parts with the session's default catalog and schema.
    fn qualify(&self, name: &Name, levels: usize) -> Result<String, SqlError> {
        let defaults = [&self.context.default_catalog, &self.context.default_schema];
        if name.is_empty() || name.len() > levels {
            return Err(SqlError::Syntax(format!(
                "`{}` is not a valid name here: expected at most {levels} parts",
                name.join(".")
            )));
        }
        let missing = levels - name.len();
        let mut parts: Vec<&str> = defaults
            .iter()
            .take(missing)
            .map(|part| part.as_str())
            .collect();
        parts.extend(name.iter().map(String::as_str));
        for part in &parts {
            validate_name(part)
                .map_err(|error| SqlError::InvalidInput(format!("name `{part}`: {error}")))?;
        }
        Ok(parts.join("."))
    }

    fn principal_id(&self) -> Result<deputy_store::PrincipalId, SqlError> {
        store_principal(self.session.principal).map_err(SqlError::Internal)
    }

    fn store(&self) -> &dyn Store {
        &*self.shared.store
    }

    fn require(&self, action: Action, what: impl FnOnce() -> String) -> Result<(), SqlError> {
        if self.context.rights.allows(action) {
            Ok(())
        } else {
            Err(SqlError::PermissionDenied(format!(
                "{} is required",
                what()
            )))
        }
    }

    /// The schema `c.s` of a new object, which must be visible to the caller.
    fn visible_schema(&self, full_name: &str) -> Result<(String, &SecurableRecord), SqlError> {
        let schema = full_name
            .rsplit_once('.')
            .map(|(schema, _)| schema.to_owned())
            .unwrap_or_default();
        let (catalog, schema_name) = split2(&schema)?;
        let record = self
            .context
            .table_names(catalog, schema_name)
            .and_then(|_| self.context.directory.find("schema", &schema))
            .ok_or_else(|| SqlError::SchemaNotFound(schema.clone()))?;
        Ok((schema, record))
    }

    fn ensure_new(
        &self,
        namespace: &str,
        full_name: &str,
        noun: &'static str,
    ) -> Result<bool, SqlError> {
        match self.context.directory.find(namespace, full_name) {
            Some(_) => Err(SqlError::AlreadyExists {
                kind: noun,
                name: full_name.to_owned(),
            }),
            None => Ok(true),
        }
    }

    async fn create(
        &self,
        kind: SecurableKind,
        full_name: &str,
        parent: Option<&SecurableRecord>,
        comment: Option<String>,
        spec: String,
    ) -> Result<(SecurableRecord, CatalogChange), SqlError> {
        let namespace = match kind {
            SecurableKind::Table | SecurableKind::View => "relation",
            other => other.name(),
        };
        let owner = self.principal_id()?;
        let record = self
            .store()
            .create_securable(
                NewSecurable {
                    kind: kind.name().to_owned(),
                    namespace: namespace.to_owned(),
                    full_name: full_name.to_owned(),
                    parent_id: parent.map(|parent| parent.id),
                    owner_id: owner,
                    comment,
                    properties: "{}".to_owned(),
                    spec,
                    created_by: owner,
                },
                now(),
            )
            .await
            .map_err(|error| match error {
                deputy_store::StoreError::AlreadyExists(_) => SqlError::AlreadyExists {
                    kind: kind.noun(),
                    name: full_name.to_owned(),
                },
                other => other.into(),
            })?;
        let change = CatalogChange::Created {
            securable: SecurableRef::new(kind, full_name),
            owner: self.session.principal,
        };
        Ok((record, change))
    }

    // ---- DDL ----------------------------------------------------------------------------------------------------

    async fn create_catalog(
        &self,
        name: String,
        if_not_exists: bool,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        validate_name(&name)
            .map_err(|error| SqlError::InvalidInput(format!("name `{name}`: {error}")))?;
        let metastore = self
            .session
            .snapshot
            .metastore()
            .cloned()
            .ok_or_else(|| SqlError::Internal("the snapshot has no metastore".to_owned()))?;
        self.require(
            Action::CreateIn {
                parent: metastore.clone(),
                kind: SecurableKind::Catalog,
            },
            || format!("`CREATE CATALOG` on metastore `{metastore}`"),
        )?;
        if if_not_exists && self.context.directory.find("catalog", &name).is_some() {
            return Ok(empty_result(Vec::new()));
        }
        self.ensure_new("catalog", &name, "catalog")?;
        let (_, change) = self
            .create(
                SecurableKind::Catalog,
                &name,
                None,
                comment,
                "{}".to_owned(),
            )
            .await?;
        Ok(empty_result(vec![change]))
    }

    async fn create_schema(
        &self,
        name: &Name,
        if_not_exists: bool,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(name, 2)?;
        let (catalog, _) = split2(&full_name)?;
        let parent = self
            .context
            .schema_names(catalog)
            .and_then(|_| self.context.directory.find("catalog", catalog))
            .ok_or_else(|| SqlError::CatalogNotFound(catalog.to_owned()))?;
        self.require(
            Action::CreateIn {
                parent: SecurableRef::catalog(catalog),
                kind: SecurableKind::Schema,
            },
            || format!("`USE CATALOG` and `CREATE SCHEMA` on catalog `{catalog}`"),
        )?;
        if if_not_exists && self.context.directory.find("schema", &full_name).is_some() {
            return Ok(empty_result(Vec::new()));
        }
        self.ensure_new("schema", &full_name, "schema")?;
        let (_, change) = self
            .create(
                SecurableKind::Schema,
                &full_name,
                Some(parent),
                comment,
                "{}".to_owned(),
            )
            .await?;
        Ok(empty_result(vec![change]))
    }

    /// Checks that the caller may create a table, view or function under `full_name`; returns its schema.
    fn creatable(
        &self,
        kind: SecurableKind,
        full_name: &str,
    ) -> Result<&SecurableRecord, SqlError> {
        let (schema, parent) = self.visible_schema(full_name)?;
        let privilege = match kind {
            SecurableKind::View => "CREATE VIEW",
            SecurableKind::Function => "CREATE FUNCTION",
            _ => "CREATE TABLE",
        };
        self.require(
            Action::CreateIn {
                parent: SecurableRef::schema(&schema),
                kind,
            },
            || format!("`USE CATALOG`, `USE SCHEMA` and `{privilege}` on schema `{schema}`"),
        )?;
        Ok(parent)
    }

    /// Checks that a table, view or function may be created under `full_name`; `Ok(None)` when it exists and
    /// `IF NOT EXISTS` was given.
    fn prepare_object(
        &self,
        kind: SecurableKind,
        full_name: &str,
        if_not_exists: bool,
    ) -> Result<Option<&SecurableRecord>, SqlError> {
        let parent = self.creatable(kind, full_name)?;
        let namespace = if kind == SecurableKind::Function {
            "function"
        } else {
            "relation"
        };
        if if_not_exists && self.context.directory.find(namespace, full_name).is_some() {
            return Ok(None);
        }
        self.ensure_new(namespace, full_name, kind.noun())?;
        Ok(Some(parent))
    }

    async fn create_table(
        &self,
        name: &Name,
        if_not_exists: bool,
        or_replace: bool,
        columns: Vec<ColumnDefinition>,
        query: Option<Box<Query>>,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(name, 3)?;
        if or_replace && let Some(record) = self.context.directory.find("relation", &full_name) {
            return self
                .replace_table(record, &full_name, columns, query, comment)
                .await;
        }
        let Some(parent) = self.prepare_object(SecurableKind::Table, &full_name, if_not_exists)?
        else {
            return Ok(empty_result(Vec::new()));
        };
        let (specs, plan) = self.table_columns(columns, query).await?;
        let spec = TableSpec {
            table_type: "MANAGED".to_owned(),
            data_source_format: Some("PARQUET".to_owned()),
            columns: specs,
            ..TableSpec::default()
        };
        let (record, change) = self
            .create(
                SecurableKind::Table,
                &full_name,
                Some(parent),
                comment,
                to_json(&spec)?,
            )
            .await?;
        let written = self.initialise_table(&record, spec, plan).await;
        if let Err(error) = written {
            // Leave nothing half-created behind; the original error is what the caller needs to see.
            let _ = self.store().delete_securable(record.id).await;
            let _ = self.shared.files.remove(record.id);
            return Err(error);
        }
        Ok(empty_result(vec![change]))
    }

    /// The columns of a new table, from its column list or its query (planned, not run).
    async fn table_columns(
        &self,
        columns: Vec<ColumnDefinition>,
        query: Option<Box<Query>>,
    ) -> Result<(Vec<ColumnSpec>, Option<(SessionState, LogicalPlan)>), SqlError> {
        let mut specs = Vec::new();
        let mut plan = None;
        match query {
            None => {
                for (position, column) in columns.into_iter().enumerate() {
                    let data_type = arrow_type(&column.type_text)?;
                    specs.push(column_spec(
                        &column.name,
                        &data_type,
                        position,
                        column.nullable,
                        column.comment,
                    )?);
                }
            }
            Some(query) => {
                let (state, logical) = self.plan(Statement::Query(query)).await?;
                for (position, field) in logical.schema().fields().iter().enumerate() {
                    let data_type = storage_type(field.data_type()).ok_or_else(|| {
                        SqlError::Unsupported(format!(
                            "column `{}` of type {} cannot be stored in a table",
                            field.name(),
                            field.data_type()
                        ))
                    })?;
                    specs.push(column_spec(field.name(), &data_type, position, true, None)?);
                }
                plan = Some((state, logical));
            }
        }
        let mut seen = BTreeSet::new();
        if let Some(duplicate) = specs
            .iter()
            .find(|column| !seen.insert(column.name.to_ascii_lowercase()))
        {
            return Err(SqlError::Analysis(format!(
                "duplicate column `{}`",
                duplicate.name
            )));
        }
        Ok((specs, plan))
    }

    /// Records where the files live, creates the directory and, for CTAS, writes the query's rows.
    async fn initialise_table(
        &self,
        record: &SecurableRecord,
        mut spec: TableSpec,
        plan: Option<(SessionState, LogicalPlan)>,
    ) -> Result<(), SqlError> {
        spec.storage_location = Some(format!("tables/{}", record.id.0));
        self.store()
            .update_securable(
                record.id,
                SecurableChanges {
                    spec: Some(to_json(&spec)?),
                    ..SecurableChanges::default()
                },
                self.principal_id()?,
                now(),
            )
            .await?;
        let directory = self.shared.files.create(record.id)?;
        if let Some(plan) = plan {
            write_query(&directory, &spec.columns, plan).await?;
        }
        Ok(())
    }

    async fn create_view(
        &self,
        name: &Name,
        if_not_exists: bool,
        query: Box<Query>,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(name, 3)?;
        let Some(parent) = self.prepare_object(SecurableKind::View, &full_name, if_not_exists)?
        else {
            return Ok(empty_result(Vec::new()));
        };
        // A view's unqualified names resolve in the view's own schema, when it is created and whenever it is read.
        let mut parts = full_name.split('.');
        let defaults = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let context = CatalogContext::new(
            Arc::clone(self.shared),
            Arc::clone(&self.context.directory),
            self.context.rights.clone(),
            Arc::clone(&self.context.identity),
            defaults,
        );
        let definition = query.to_string();
        let (_, plan) = context.plan_statement(Statement::Query(query)).await?;
        let columns = plan
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(position, field)| {
                column_spec(field.name(), field.data_type(), position, true, None)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = TableSpec {
            table_type: "VIEW".to_owned(),
            columns,
            view_definition: Some(definition),
            ..TableSpec::default()
        };
        let (_, change) = self
            .create(
                SecurableKind::View,
                &full_name,
                Some(parent),
                comment,
                to_json(&spec)?,
            )
            .await?;
        Ok(empty_result(vec![change]))
    }

    async fn create_function(
        &self,
        name: &Name,
        (if_not_exists, or_replace): (bool, bool),
        parameters: Vec<FunctionParameter>,
        returns: &FunctionReturns,
        body: String,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(name, 3)?;
        // A function in a schema the caller cannot see is not there for it, replaced or not.
        self.visible_schema(&full_name)?;
        let replaced = match self.context.directory.find("function", &full_name) {
            Some(record) if or_replace => Some(record),
            _ => None,
        };
        let parent = match replaced {
            Some(_) => None,
            None => {
                match self.prepare_object(SecurableKind::Function, &full_name, if_not_exists)? {
                    Some(parent) => Some(parent),
                    None => return Ok(empty_result(Vec::new())),
                }
            }
        };
        let (data_type, full_data_type, return_params) = match returns {
            FunctionReturns::Scalar(returns) => {
                let return_type = arrow_type(returns)?;
                (
                    type_name(&return_type).to_owned(),
                    type_text(&return_type),
                    Vec::new(),
                )
            }
            FunctionReturns::Table(columns) => {
                let columns = parameter_specs(columns.clone())?;
                let text = columns
                    .iter()
                    .map(|column| format!("{} {}", column.name, column.type_text))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    FunctionSpec::TABLE_TYPE.to_owned(),
                    format!("table<{text}>"),
                    columns,
                )
            }
        };
        let reads = match returns {
            FunctionReturns::Table(_) => true,
            FunctionReturns::Scalar(_) => reads_data(&scalar_body(&body)?),
        };
        let spec = FunctionSpec {
            input_params: parameter_specs(parameters)?,
            return_params,
            data_type,
            full_data_type,
            routine_body: "SQL".to_owned(),
            routine_definition: body,
            external_language: None,
            is_deterministic: true,
            sql_data_access: Some(
                if reads {
                    "READS_SQL_DATA"
                } else {
                    "CONTAINS_SQL"
                }
                .to_owned(),
            ),
        };
        if let Some(record) = replaced {
            return self
                .replace_function(record, &full_name, &spec, comment)
                .await;
        }
        // Refuse a body that does not plan now, with the creator's rights (the creator owns the function), rather
        // than at every later call.
        self.context
            .routine(self.context.rights.principal, &full_name, &spec)
            .await?;
        let (_, change) = self
            .create(
                SecurableKind::Function,
                &full_name,
                parent,
                comment,
                to_json(&spec)?,
            )
            .await?;
        Ok(empty_result(vec![change]))
    }

    /// `CREATE OR REPLACE FUNCTION` of an existing function: a new signature and body, same securable (id, owner
    /// and grants stay, as in Databricks). The new body is checked with the owner's rights, and a body that reaches
    /// the function itself is refused here, before it is stored.
    ///
    /// Only the owner (or a member of the owning group) may replace a function, not a holder of `MANAGE`: the body
    /// runs with the owner's rights, so whoever writes it must hold them. Otherwise `MANAGE`, or giving a function
    /// away and keeping `MANAGE`, would read anything its owner can.
    async fn replace_function(
        &self,
        record: &SecurableRecord,
        full_name: &str,
        spec: &FunctionSpec,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        let owner = authz_principal(record.owner_id).map_err(SqlError::Internal)?;
        let caller = self.session.principal;
        if caller != owner && !self.session.snapshot.is_member_of(caller, owner) {
            return Err(SqlError::PermissionDenied(format!(
                "only the owner of function `{full_name}` may replace it: its body runs with the owner's rights"
            )));
        }
        self.context.routine(owner, full_name, spec).await?;
        self.store()
            .update_securable(
                record.id,
                SecurableChanges {
                    spec: Some(to_json(spec)?),
                    comment: Some(comment),
                    ..SecurableChanges::default()
                },
                self.principal_id()?,
                now(),
            )
            .await?;
        Ok(empty_result(Vec::new()))
    }

    async fn drop(
        &self,
        kind: SecurableKind,
        name: &Name,
        if_exists: bool,
        cascade: bool,
    ) -> Result<StatementResult, SqlError> {
        let levels = kind.name_segments();
        let full_name = self.qualify(name, levels)?;
        let found = self.visible(kind, &full_name);
        let Some((record, securable)) = found else {
            return if if_exists {
                Ok(empty_result(Vec::new()))
            } else {
                Err(not_found(kind, &full_name))
            };
        };
        if (kind == SecurableKind::Table || kind == SecurableKind::View) && securable.kind() != kind
        {
            return Err(SqlError::InvalidInput(format!(
                "`{full_name}` is a {}; use DROP {}",
                securable.kind().noun(),
                securable.kind().noun().to_ascii_uppercase()
            )));
        }
        if !may_grant(self.session.principal, &securable, &self.session.snapshot).is_allowed() {
            return Err(SqlError::PermissionDenied(format!(
                "ownership of or `MANAGE` on {} `{full_name}` is required",
                securable.kind().noun()
            )));
        }
        let descendants = descendants(&self.context.directory, record);
        if !cascade && descendants.len() > 1 {
            return Err(SqlError::InvalidInput(format!(
                "{} `{full_name}` is not empty; use CASCADE to drop it with everything in it",
                securable.kind().noun()
            )));
        }
        self.store().delete_securable(record.id).await?;
        for descendant in descendants {
            if descendant.kind == SecurableKind::Table.name() {
                self.shared.files.remove(descendant.id)?;
            }
        }
        Ok(empty_result(vec![CatalogChange::Dropped { securable }]))
    }

    /// A securable of `kind` the caller may see, with its stored form and reference; `None` hides missing and
    /// invisible alike.
    fn visible(
        &self,
        kind: SecurableKind,
        full_name: &str,
    ) -> Option<(&SecurableRecord, SecurableRef)> {
        let namespace = match kind {
            SecurableKind::Table | SecurableKind::View => "relation",
            other => other.name(),
        };
        let record = self.context.directory.find(namespace, full_name)?;
        let securable = reference(record)?;
        let visible = match kind {
            SecurableKind::Table | SecurableKind::View => {
                let parts: Vec<&str> = full_name.split('.').collect();
                matches!(parts.as_slice(), [c, s, t] if self.context.access(c, s, t).is_some())
                    || self
                        .context
                        .rights
                        .allows(Action::ReadMetadata(securable.clone()))
            }
            _ => self
                .context
                .rights
                .allows(Action::ReadMetadata(securable.clone())),
        };
        visible.then_some((record, securable))
    }

    fn describe(&self, name: &Name) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(name, 3)?;
        let (record, _) = self
            .visible(SecurableKind::Table, &full_name)
            .ok_or_else(|| SqlError::TableNotFound(full_name.clone()))?;
        let mut columns = table_spec(record)?.columns;
        columns.sort_by_key(|column| column.position);
        string_rows(
            &["col_name", "data_type", "comment"],
            columns
                .into_iter()
                .map(|column| vec![Some(column.name), Some(column.type_text), column.comment])
                .collect(),
        )
    }

    /// Changes a table's row filter or a column mask. `change` edits the spec and returns, for a new policy, the
    /// function, the columns it is called with and whether it is a row filter (which must return BOOLEAN).
    async fn set_policy(
        &self,
        table: &Name,
        change: impl FnOnce(
            &mut TableSpec,
            &str,
        ) -> Result<Option<(String, Vec<String>, bool)>, SqlError>,
        function: Option<&Name>,
    ) -> Result<StatementResult, SqlError> {
        let full_name = self.qualify(table, 3)?;
        let (record, securable) = self
            .visible(SecurableKind::Table, &full_name)
            .ok_or_else(|| SqlError::TableNotFound(full_name.clone()))?;
        if securable.kind() != SecurableKind::Table {
            return Err(SqlError::InvalidInput(format!(
                "row filters and column masks apply to tables; `{full_name}` is a {}",
                securable.kind().noun()
            )));
        }
        if !may_grant(self.session.principal, &securable, &self.session.snapshot).is_allowed() {
            return Err(SqlError::PermissionDenied(format!(
                "ownership of or `MANAGE` on table `{full_name}` is required"
            )));
        }
        let function_name = match function {
            Some(function) => {
                let function_name = self.qualify(function, 3)?;
                let Some((_, reference)) = self.visible(SecurableKind::Function, &function_name)
                else {
                    return Err(SqlError::FunctionNotFound(function_name));
                };
                self.require(Action::ExecuteFunction(reference), || {
                    format!("`EXECUTE` on function `{function_name}`")
                })?;
                function_name
            }
            None => String::new(),
        };
        let mut spec = table_spec(record)?;
        if let Some((function_name, arguments, is_row_filter)) = change(&mut spec, &function_name)?
        {
            self.check_policy(&spec, &full_name, &function_name, &arguments, is_row_filter)?;
        }
        self.store()
            .update_securable(
                record.id,
                SecurableChanges {
                    spec: Some(to_json(&spec)?),
                    ..SecurableChanges::default()
                },
                self.principal_id()?,
                now(),
            )
            .await?;
        Ok(empty_result(Vec::new()))
    }

    /// Checks that a policy function can be called on the named columns of a table: it takes their types and, for
    /// a row filter, returns BOOLEAN.
    fn check_policy(
        &self,
        spec: &TableSpec,
        full_name: &str,
        function_name: &str,
        arguments: &[String],
        is_row_filter: bool,
    ) -> Result<(), SqlError> {
        let udf = self.context.compile_policy(function_name)?;
        let mut types = Vec::with_capacity(arguments.len());
        for argument in arguments {
            let column = spec
                .columns
                .iter()
                .find(|column| column.name.eq_ignore_ascii_case(argument))
                .ok_or_else(|| {
                    SqlError::Analysis(format!("table `{full_name}` has no column `{argument}`"))
                })?;
            types.push(arrow_type(&column.type_text)?);
        }
        let return_type = udf.return_type(&types).map_err(SqlError::from)?;
        let accepted = if types.is_empty() {
            udf.signature().type_signature == datafusion::logical_expr::TypeSignature::Nullary
        } else {
            udf.coerce_types(&types).is_ok()
        };
        if !accepted {
            return Err(SqlError::Analysis(format!(
                "function `{function_name}` does not take {} argument(s) of these columns' types",
                types.len()
            )));
        }
        if is_row_filter && return_type != DataType::Boolean {
            return Err(SqlError::Analysis(format!(
                "a row filter must return BOOLEAN; `{function_name}` returns {}",
                type_text(&return_type)
            )));
        }
        Ok(())
    }

    // ---- grants -------------------------------------------------------------------------------------------------

    fn grant_target(
        &self,
        kind: SecurableKind,
        name: &Name,
    ) -> Result<(&SecurableRecord, SecurableRef), SqlError> {
        let full_name = self.qualify(name, kind.name_segments())?;
        let lookup = if kind == SecurableKind::View {
            SecurableKind::Table
        } else {
            kind
        };
        self.visible(lookup, &full_name)
            .ok_or_else(|| not_found(kind, &full_name))
    }

    async fn find_principal(
        &self,
        name: &str,
    ) -> Result<(deputy_store::PrincipalId, PrincipalId), SqlError> {
        for kind in [
            IdentityKind::User,
            IdentityKind::ServicePrincipal,
            IdentityKind::Group,
        ] {
            if let Some(identity) = self.store().find_identity(kind, name).await? {
                let id = authz_principal(identity.id).map_err(SqlError::Internal)?;
                return Ok((identity.id, id));
            }
        }
        Err(SqlError::PrincipalNotFound(name.to_owned()))
    }

    async fn change_grants(
        &self,
        privileges: &[String],
        kind: SecurableKind,
        name: &Name,
        principal: &str,
        grant: bool,
    ) -> Result<StatementResult, SqlError> {
        let (record, securable) = self.grant_target(kind, name)?;
        if !may_grant(self.session.principal, &securable, &self.session.snapshot).is_allowed() {
            return Err(SqlError::PermissionDenied(format!(
                "ownership of or `MANAGE` on {} `{securable}` is required to change its grants",
                securable.kind().noun()
            )));
        }
        let applicable = PrivilegeSet::applicable_to(securable.kind());
        let mut set = PrivilegeSet::EMPTY;
        for text in privileges {
            let privilege = Privilege::from_sql(text)
                .map_err(|error| SqlError::InvalidInput(error.to_string()))?;
            if !applicable.contains(privilege) {
                return Err(SqlError::InvalidInput(format!(
                    "privilege `{}` does not apply to a {}",
                    privilege.sql_name(),
                    securable.kind().noun()
                )));
            }
            set = set.with(privilege);
        }
        let (store_id, principal_id) = self.find_principal(principal).await?;
        let names: Vec<String> = set
            .iter()
            .map(|privilege| privilege.wire_name().to_owned())
            .collect();
        let change = GrantChange {
            principal_id: store_id,
            add: if grant { names.clone() } else { Vec::new() },
            remove: if grant { Vec::new() } else { names },
        };
        self.store().change_grants(record.id, &[change]).await?;
        let (granted, revoked) = if grant {
            (set, PrivilegeSet::EMPTY)
        } else {
            (PrivilegeSet::EMPTY, set)
        };
        Ok(empty_result(vec![CatalogChange::GrantsChanged {
            securable,
            principal: principal_id,
            granted,
            revoked,
        }]))
    }

    async fn show_grants(
        &self,
        principal: Option<&str>,
        kind: SecurableKind,
        name: &Name,
    ) -> Result<StatementResult, SqlError> {
        let (record, securable) = self.grant_target(kind, name)?;
        let only = match principal {
            Some(principal) => Some(self.find_principal(principal).await?.0),
            None => None,
        };
        let mut names = HashMap::new();
        let mut rows = Vec::new();
        let mut grants = self.store().grants_on(record.id).await?;
        grants.sort_by(|a, b| (a.principal_id, &a.privilege).cmp(&(b.principal_id, &b.privilege)));
        for grant in grants {
            if only.is_some_and(|only| only != grant.principal_id) {
                continue;
            }
            let name = match names.get(&grant.principal_id) {
                Some(name) => String::clone(name),
                None => {
                    let name = self
                        .store()
                        .get_identity(grant.principal_id)
                        .await?
                        .map_or_else(|| grant.principal_id.to_string(), |identity| identity.name);
                    names.insert(grant.principal_id, name.clone());
                    name
                }
            };
            rows.push(vec![
                Some(name),
                Some(grant.privilege.replace('_', " ")),
                Some(securable.kind().name().to_ascii_uppercase()),
                Some(securable.full_name().to_owned()),
            ]);
        }
        string_rows(
            &["Principal", "ActionType", "ObjectType", "ObjectKey"],
            rows,
        )
    }

    // ---- queries and DML ----------------------------------------------------------------------------------------

    /// Plans a standard statement in the caller's session, with the parameters bound.
    async fn plan(&self, statement: Statement) -> Result<(SessionState, LogicalPlan), SqlError> {
        let (state, plan) = self.context.plan_statement(statement).await?;
        let plan = if self.parameters.is_empty() {
            plan
        } else {
            let mut values = HashMap::with_capacity(self.parameters.len());
            for parameter in self.parameters {
                values.insert(parameter.name.clone(), parameter_value(parameter)?);
            }
            plan.with_param_values(values)?
        };
        // DataFusion's own DDL and statements (`CREATE EXTERNAL TABLE`, `SET`, `COPY`) would bypass the catalog
        // store and its checks; Deputy's DDL is handled before planning.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        if matches!(plan, LogicalPlan::Copy(_)) {
            return Err(SqlError::Unsupported("COPY is not supported".to_owned()));
        }
        Ok((state, plan))
    }

    async fn standard(&self, statement: Statement) -> Result<StatementResult, SqlError> {
        if matches!(statement, Statement::Delete(_) | Statement::Update(_)) {
            return self.modify(statement).await;
        }
        // An append waits for a rewrite of the same table to finish, and is planned after it: planning opens the
        // table's current version, which the append adds a file to.
        let _lock = match &statement {
            Statement::Insert(Insert {
                table: TableObject::TableName(name),
                ..
            }) => self.lock_table(name).await?,
            _ => None,
        };
        let (state, plan) = self.plan(statement).await?;
        let frame = SessionContext::new_with_state(state)
            .execute_logical_plan(plan)
            .await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(StatementResult {
            schema,
            batches,
            changes: Vec::new(),
        })
    }
}

impl Run<'_> {
    /// The write lock of a visible table; `None` for any other name, which planning then reports.
    async fn lock_table(&self, name: &ObjectName) -> Result<Option<TableLock>, SqlError> {
        let Ok(name) = object_name(name) else {
            return Ok(None);
        };
        let Ok(full_name) = self.qualify(&name, 3) else {
            return Ok(None);
        };
        match self.visible(SecurableKind::Table, &full_name) {
            Some((record, _)) => Ok(Some(self.shared.locks.lock(record.id).await?)),
            None => Ok(None),
        }
    }
}

fn split2(name: &str) -> Result<(&str, &str), SqlError> {
    name.split_once('.')
        .ok_or_else(|| SqlError::Syntax(format!("`{name}` is not a two-part name")))
}

fn not_found(kind: SecurableKind, full_name: &str) -> SqlError {
    match kind {
        SecurableKind::Catalog => SqlError::CatalogNotFound(full_name.to_owned()),
        SecurableKind::Schema => SqlError::SchemaNotFound(full_name.to_owned()),
        SecurableKind::Function => SqlError::FunctionNotFound(full_name.to_owned()),
        _ => SqlError::TableNotFound(full_name.to_owned()),
    }
}

/// Parameters (or a table function's columns) as stored, their types normalised.
fn parameter_specs(
    parameters: Vec<FunctionParameter>,
) -> Result<Vec<FunctionParameterSpec>, SqlError> {
    parameters
        .into_iter()
        .enumerate()
        .map(|(position, parameter)| {
            let data_type = arrow_type(&parameter.type_text)?;
            Ok(FunctionParameterSpec {
                name: parameter.name,
                type_text: type_text(&data_type),
                type_name: type_name(&data_type).to_owned(),
                position: u32::try_from(position).unwrap_or(u32::MAX),
                parameter_default: None,
                comment: parameter.comment,
            })
        })
        .collect()
}

fn column_mut<'a>(spec: &'a mut TableSpec, name: &str) -> Result<&'a mut ColumnSpec, SqlError> {
    spec.columns
        .iter_mut()
        .find(|column| column.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| SqlError::Analysis(format!("no column `{name}`")))
}

fn column_spec(
    name: &str,
    data_type: &DataType,
    position: usize,
    nullable: bool,
    comment: Option<String>,
) -> Result<ColumnSpec, SqlError> {
    validate_name(name)
        .map_err(|error| SqlError::InvalidInput(format!("column `{name}`: {error}")))?;
    Ok(ColumnSpec {
        name: name.to_ascii_lowercase(),
        type_text: type_text(data_type),
        type_name: type_name(data_type).to_owned(),
        position: u32::try_from(position).unwrap_or(u32::MAX),
        nullable,
        comment,
        mask: None,
    })
}

/// A securable with everything stored under it (itself first).
fn descendants<'a>(
    directory: &'a Directory,
    root: &'a SecurableRecord,
) -> Vec<&'a SecurableRecord> {
    let mut found = vec![root];
    let mut index = 0;
    while let Some(current) = found.get(index).map(|record| record.id) {
        found.extend(
            directory
                .records()
                .iter()
                .filter(|record| record.parent_id == Some(current)),
        );
        index += 1;
    }
    found
}

fn parameter_value(parameter: &StatementParameter) -> Result<ScalarValue, SqlError> {
    let data_type = match &parameter.type_name {
        Some(type_name) => arrow_type(type_name)?,
        None => DataType::Utf8,
    };
    let value = match &parameter.value {
        Some(value) => ScalarValue::try_from_string(value.clone(), &data_type),
        None => ScalarValue::try_new_null(&data_type),
    };
    value.map_err(|error| {
        SqlError::InvalidInput(format!(
            "parameter `{}` is not a valid {}: {}",
            parameter.name,
            type_text(&data_type),
            error.message()
        ))
    })
}

/// Runs a planned query and adds its rows to a table directory as one new Parquet file, cast to the table's
/// `columns`. Returns the number of rows written.
async fn write_query(
    directory: &Path,
    columns: &[ColumnSpec],
    (state, plan): (SessionState, LogicalPlan),
) -> Result<usize, SqlError> {
    let schema = columns_schema(columns)?;
    let mut stream = SessionContext::new_with_state(state)
        .execute_logical_plan(plan)
        .await?
        .execute_stream()
        .await?;
    let mut file = ParquetFile::create(directory, &schema)?;
    while let Some(batch) = stream.next().await {
        file.write(&batch?)?;
    }
    file.finish()
}

/// The Arrow schema of a table's files, from its columns in position order.
fn columns_schema(columns: &[ColumnSpec]) -> Result<SchemaRef, SqlError> {
    let fields = columns
        .iter()
        .map(|column| {
            Ok(Field::new(
                &column.name,
                arrow_type(&column.type_text)?,
                true,
            ))
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}
