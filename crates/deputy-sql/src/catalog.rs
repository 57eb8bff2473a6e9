//! The per-statement catalog: what one principal may see, exposed to DataFusion as its catalog list.
//!
//! **Invariant:** a catalog, schema, table or function the principal may not use is absent, exactly as if it did not
//! exist; DataFusion's "not found" for it is the same error, word for word, as for a missing one. Catalogs and
//! schemas are listed when `decide` allows reading their metadata (`BROWSE`, or the usage chain above and any
//! privilege on them); tables and views when it allows `SELECT` or `MODIFY` (usage chain included); functions when
//! it allows `EXECUTE`. One exception, as in Databricks: calling a function the principal may not execute, in a
//! schema whose metadata it may read, is refused naming `EXECUTE` rather than reported missing.
//!
//! The securables are read from the store once per statement, so a statement sees one consistent catalog and a new
//! object is visible to the next statement as soon as the caller publishes the new snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use deputy_authz::{Action, PrincipalId, SecurableKind, SecurableRef};
use deputy_store::Store;
use deputy_store::catalog::SecurableRecord;
use deputy_store::specs::{FunctionParameterSpec, FunctionSpec, TableSpec};
use futures_util::future::BoxFuture;

use crate::SqlError;
use crate::functions::{Identity, compile_function};
use crate::parse::{body_expression, scalar_body, stored_query};
use crate::routines::{
    BodyPlanner, InlinedFunction, Routine, Routines, TableFunctions, TableRoutine, inline_calls,
    named_functions, parameter_scope, reads_data,
};
use crate::session::Rights;
use crate::single_row::single_row_subqueries;
use crate::snapshot::authz_principal;
use crate::storage::{TableFiles, TableLocks};
use crate::table::{Access, DeputyTable, Policy, PolicyCall};
use crate::types::arrow_type;

/// Views and function bodies may use views and functions; a chain longer than this is refused rather than followed.
const MAX_NESTING: usize = 8;

/// What every statement of one engine shares.
pub(crate) struct Shared {
    pub(crate) data_dir: PathBuf,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: Arc<RuntimeEnv>,
    /// The managed tables' files, under `data_dir/tables/`.
    pub(crate) files: TableFiles,
    pub(crate) locks: TableLocks,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// All securables as the store held them when the statement started.
#[derive(Debug)]
pub(crate) struct Directory {
    records: Vec<SecurableRecord>,
    by_name: HashMap<(String, String), usize>,
}

impl Directory {
    pub(crate) async fn load(store: &dyn Store) -> Result<Directory, SqlError> {
        let records = store.all_securables().await?;
        let by_name = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                (
                    (
                        record.namespace.clone(),
                        record.full_name.to_ascii_lowercase(),
                    ),
                    index,
                )
            })
            .collect();
        Ok(Directory { records, by_name })
    }

    pub(crate) fn find(&self, namespace: &str, full_name: &str) -> Option<&SecurableRecord> {
        self.by_name
            .get(&(namespace.to_owned(), full_name.to_ascii_lowercase()))
            .and_then(|index| self.records.get(*index))
    }

    pub(crate) fn records(&self) -> &[SecurableRecord] {
        &self.records
    }
}

/// The authz reference of a stored securable; `None` for kinds the engine does not know.
pub(crate) fn reference(record: &SecurableRecord) -> Option<SecurableRef> {
    SecurableKind::from_name(&record.kind).map(|kind| SecurableRef::new(kind, &record.full_name))
}

type Tree = BTreeMap<String, BTreeMap<String, BTreeMap<String, Access>>>;

/// One principal's view of the catalog for one statement.
#[derive(Debug)]
pub(crate) struct CatalogContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) rights: Rights,
    pub(crate) identity: Arc<Identity>,
    pub(crate) default_catalog: String,
    pub(crate) default_schema: String,
    tree: Tree,
    /// Plans expression function bodies: built-ins and identity functions only. Built on first use, and shared
    /// with the contexts of the views and functions the statement uses (it holds nothing of anyone's rights).
    planner: Arc<OnceLock<SessionState>>,
    /// How many view and function bodies enclose this context's statement.
    depth: usize,
    /// The functions whose bodies enclose this context's statement, outermost first: reaching one again is a cycle.
    callers: Vec<String>,
}

impl CatalogContext {
    pub(crate) fn new(
        shared: Arc<Shared>,
        directory: Arc<Directory>,
        rights: Rights,
        identity: Arc<Identity>,
        defaults: (String, String),
    ) -> Arc<CatalogContext> {
        let mut tree = Tree::new();
        for record in directory.records() {
            let Some(securable) = reference(record) else {
                continue;
            };
            let parts: Vec<String> = securable
                .full_name()
                .split('.')
                .map(str::to_owned)
                .collect();
            match (securable.kind(), parts.as_slice()) {
                (SecurableKind::Catalog, [catalog])
                    if rights.allows(Action::ReadMetadata(securable.clone())) =>
                {
                    tree.entry(catalog.clone()).or_default();
                }
                (SecurableKind::Schema, [catalog, schema])
                    if rights.allows(Action::ReadMetadata(securable.clone())) =>
                {
                    tree.entry(catalog.clone())
                        .or_default()
                        .entry(schema.clone())
                        .or_default();
                }
                (SecurableKind::Table | SecurableKind::View, [catalog, schema, table]) => {
                    let access = Access {
                        read: rights.allows(Action::ReadTable(securable.clone())),
                        write: securable.kind() == SecurableKind::Table
                            && rights.allows(Action::WriteTable(securable.clone())),
                    };
                    if access.read || access.write {
                        tree.entry(catalog.clone())
                            .or_default()
                            .entry(schema.clone())
                            .or_default()
                            .insert(table.clone(), access);
                    }
                }
                _ => {}
            }
        }
        Arc::new(CatalogContext {
            shared,
            directory,
            rights,
            identity,
            default_catalog: defaults.0,
            default_schema: defaults.1,
            tree,
            planner: Arc::default(),
            depth: 0,
            callers: Vec::new(),
        })
    }

    /// The context a view's or a function's body is planned in: the securable's owner's rights (definer's rights,
    /// as in Unity Catalog) with this session's identity, so policies still see the end user; unqualified names
    /// resolve in the securable's own schema.
    fn definer(
        &self,
        full_name: &str,
        owner: PrincipalId,
        caller: Option<&str>,
    ) -> Result<Arc<CatalogContext>, SqlError> {
        if self.depth >= MAX_NESTING {
            return Err(SqlError::Analysis(format!(
                "`{full_name}` nests views and functions more than {MAX_NESTING} deep"
            )));
        }
        let mut parts = full_name.split('.');
        let defaults = (
            parts.next().unwrap_or_default().to_ascii_lowercase(),
            parts.next().unwrap_or_default().to_ascii_lowercase(),
        );
        let mut definer = CatalogContext::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.directory),
            Rights::owner(owner, &self.rights.snapshot),
            Arc::clone(&self.identity),
            defaults,
        );
        let context = Arc::get_mut(&mut definer)
            .ok_or_else(|| SqlError::Internal("a new context is shared".into()))?;
        context.depth = self.depth + 1;
        context.planner = Arc::clone(&self.planner);
        context.callers = self.callers.clone();
        context.callers.extend(caller.map(str::to_owned));
        Ok(definer)
    }

    fn config(&self) -> SessionConfig {
        SessionConfig::new()
            // Built by DataFusion from this catalog list, so it lists only what the principal may see.
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(&self.default_catalog, &self.default_schema)
            .set_str("datafusion.sql_parser.dialect", "databricks")
            // Table schemas use plain `Utf8`; keep strings in one representation from files to results.
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            )
            // INVARIANT: predicates given to a policy table's raw scan may only prune by statistics, never be
            // evaluated on rows (see the `table` module).
            .set_bool("datafusion.execution.parquet.pushdown_filters", false)
    }

    fn state_builder(&self) -> SessionStateBuilder {
        SessionStateBuilder::new()
            .with_config(self.config())
            .with_runtime_env(Arc::clone(&self.shared.runtime))
            .with_default_features()
    }

    /// The DataFusion session for this principal: its visible catalog, the identity functions, and the catalog
    /// functions prepared for the statement.
    pub(crate) fn session_state(
        self: &Arc<Self>,
        routines: Routines,
    ) -> Result<SessionState, SqlError> {
        let mut state = self
            .state_builder()
            .with_catalog_list(Arc::new(DeputyCatalogList {
                context: Arc::clone(self),
            }))
            .with_relation_planners(vec![Arc::new(TableFunctions {
                routines: routines.tables,
            })])
            .build();
        for function in self.identity.functions() {
            state.register_udf(function)?;
        }
        for function in routines.scalar {
            state.register_udf(function)?;
        }
        Ok(state)
    }

    /// Plans one statement in this principal's session, with the catalog functions it calls prepared and the
    /// bodies of those that read data inlined. Boxed: planning state is large, and a statement's future lives on
    /// the stack of whoever polls it.
    pub(crate) fn plan_statement(
        self: &Arc<Self>,
        mut statement: Statement,
    ) -> BoxFuture<'_, Result<(SessionState, LogicalPlan), SqlError>> {
        Box::pin(async move {
            let routines = self.prepare_routines(&mut statement).await?;
            let state = self.session_state(routines)?;
            let plan = state
                .statement_to_plan(DfStatement::Statement(Box::new(statement)))
                .await?;
            Ok((state, inline_calls(plan)?))
        })
    }

    /// Prepares the catalog functions `statement` names that this principal may execute.
    fn prepare_routines<'a>(
        self: &'a Arc<Self>,
        statement: &'a mut Statement,
    ) -> BoxFuture<'a, Result<Routines, SqlError>> {
        Box::pin(async move {
            let names = named_functions(statement, |name| {
                self.directory.find("function", name).is_some()
            });
            let mut routines = Routines::default();
            for name in names {
                match self.prepare_routine(&name).await? {
                    Some(Routine::Scalar(function)) => routines.scalar.push(function),
                    Some(Routine::Table(function)) => {
                        routines.tables.insert(name, function);
                    }
                    None => {}
                }
            }
            Ok(routines)
        })
    }

    /// One function, if this principal may execute it.
    async fn prepare_routine(
        self: &Arc<Self>,
        full_name: &str,
    ) -> Result<Option<Routine>, SqlError> {
        let Some(record) = self.directory.find("function", full_name) else {
            return Ok(None);
        };
        let securable = SecurableRef::new(SecurableKind::Function, &record.full_name);
        let decision = self.rights.decide(Action::ExecuteFunction(securable));
        if !decision.is_allowed() {
            let schema = full_name
                .rsplit_once('.')
                .map(|(schema, _)| schema)
                .unwrap_or_default();
            let schema = SecurableRef::new(SecurableKind::Schema, schema);
            if self.rights.allows(Action::ReadMetadata(schema)) {
                return Err(SqlError::PermissionDenied(format!(
                    "EXECUTE on function `{full_name}` is required ({decision})"
                )));
            }
            return Ok(None);
        }
        if self.callers.iter().any(|caller| caller == full_name) {
            return Err(SqlError::Analysis(format!(
                "function `{full_name}` calls itself (through {})",
                self.callers.join(" -> ")
            )));
        }
        let spec = function_spec(record)?;
        let owner = authz_principal(record.owner_id).map_err(SqlError::Internal)?;
        self.routine(owner, full_name, &spec).await.map(Some)
    }

    /// Compiles or plans a function body with its owner's rights (for a new function, its creator's).
    pub(crate) async fn routine(
        self: &Arc<Self>,
        owner: PrincipalId,
        full_name: &str,
        spec: &FunctionSpec,
    ) -> Result<Routine, SqlError> {
        let short_name = full_name.rsplit('.').next().unwrap_or(full_name);
        let parameters = parameter_types(spec)?;
        let (scope, parameters) = parameter_scope(short_name, &parameters)?;
        if spec.is_table_function() {
            let definer = self.definer(full_name, owner, Some(full_name))?;
            let mut body = stored_query(&spec.routine_definition)?;
            let routines = definer.prepare_routines(&mut body).await?;
            let state = definer.session_state(routines)?;
            let planner = BodyPlanner::new(&state, &body).await?;
            let plan = planner.query(body, scope)?;
            let columns = return_columns(spec)?;
            let routine = TableRoutine::new(
                full_name,
                short_name,
                parameters,
                inline_calls(plan)?,
                &columns,
            )?;
            return Ok(Routine::Table(Arc::new(routine)));
        }
        let mut body = scalar_body(&spec.routine_definition)?;
        if !reads_data(&body) {
            return Ok(Routine::Scalar(Arc::new(compile_function(
                full_name,
                spec,
                self.planner()?,
            )?)));
        }
        let definer = self.definer(full_name, owner, Some(full_name))?;
        let routines = definer.prepare_routines(&mut body).await?;
        let state = definer.session_state(routines)?;
        let planner = BodyPlanner::new(&state, &body).await?;
        let planned = single_row_subqueries(planner.expression(body_expression(body)?, &scope)?)?;
        let return_type = arrow_type(&spec.full_data_type)?;
        let function = InlinedFunction::new(full_name, parameters, scope, planned, return_type)?;
        Ok(Routine::Scalar(Arc::new(ScalarUDF::new_from_impl(
            function,
        ))))
    }

    /// A session for planning function bodies and expressions that must not see the catalog.
    pub(crate) fn planner(&self) -> Result<&SessionState, SqlError> {
        if let Some(planner) = self.planner.get() {
            return Ok(planner);
        }
        let mut state = self.state_builder().build();
        for function in self.identity.functions() {
            state.register_udf(function)?;
        }
        Ok(self.planner.get_or_init(|| state))
    }

    /// Compiles a row filter or column mask function by full name, whoever may execute it (policies run with the
    /// owner's rights). Its body must be an expression over its arguments: a policy is evaluated inside the table's
    /// scan, where no other table can be read; one that reads data fails the scan (closed).
    pub(crate) fn compile_policy(&self, full_name: &str) -> Result<ScalarUDF, SqlError> {
        let record = self
            .directory
            .find("function", full_name)
            .ok_or_else(|| SqlError::FunctionNotFound(full_name.to_owned()))?;
        let spec = function_spec(record)?;
        if spec.is_table_function() || reads_data(&scalar_body(&spec.routine_definition)?) {
            return Err(SqlError::Unsupported(format!(
                "`{full_name}` reads data; a row filter or column mask must be an expression over its arguments"
            )));
        }
        compile_function(
            &record.full_name.to_ascii_lowercase(),
            &spec,
            self.planner()?,
        )
    }

    pub(crate) fn catalog_names(&self) -> Vec<String> {
        self.tree.keys().cloned().collect()
    }

    pub(crate) fn schema_names(&self, catalog: &str) -> Option<Vec<String>> {
        self.tree
            .get(catalog)
            .map(|schemas| schemas.keys().cloned().collect())
    }

    pub(crate) fn table_names(&self, catalog: &str, schema: &str) -> Option<Vec<String>> {
        self.tree
            .get(catalog)
            .and_then(|schemas| schemas.get(schema))
            .map(|tables| tables.keys().cloned().collect())
    }

    pub(crate) fn access(&self, catalog: &str, schema: &str, table: &str) -> Option<Access> {
        self.tree.get(catalog)?.get(schema)?.get(table).copied()
    }

    /// The provider of a visible table or view, `None` when it is missing or hidden.
    async fn relation(
        self: &Arc<Self>,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, SqlError> {
        let Some(access) = self.access(catalog, schema, table) else {
            return Ok(None);
        };
        let full_name = format!("{catalog}.{schema}.{table}");
        let Some(record) = self.directory.find("relation", &full_name) else {
            return Ok(None);
        };
        if record.kind == SecurableKind::View.name() {
            return self.view(record, &full_name).await.map(Some);
        }
        Ok(Some(Arc::new(self.open_table(record, access)?)))
    }

    /// A view is planned in its definer's context (see [`CatalogContext::definer`]).
    async fn view(
        &self,
        record: &SecurableRecord,
        full_name: &str,
    ) -> Result<Arc<dyn TableProvider>, SqlError> {
        let spec = table_spec(record)?;
        let definition = spec
            .view_definition
            .ok_or_else(|| SqlError::Internal(format!("view `{full_name}` has no definition")))?;
        let owner = authz_principal(record.owner_id).map_err(SqlError::Internal)?;
        let definer = self.definer(full_name, owner, None)?;
        let (_, plan) = definer.plan_statement(stored_query(&definition)?).await?;
        Ok(Arc::new(ViewTable::new(plan, Some(definition))))
    }

    /// A managed table with its policy compiled for this session.
    pub(crate) fn open_table(
        &self,
        record: &SecurableRecord,
        access: Access,
    ) -> Result<DeputyTable, SqlError> {
        let spec = table_spec(record)?;
        let mut columns = spec.columns.clone();
        columns.sort_by_key(|column| column.position);
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
        let schema = Arc::new(Schema::new(fields));
        let index_of = |name: &str| -> Result<usize, SqlError> {
            columns
                .iter()
                .position(|column| column.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    SqlError::Internal(format!(
                        "policy of `{}` names missing column `{name}`",
                        record.full_name
                    ))
                })
        };
        let policy_call = |function: &str, names: &[&str]| -> Result<PolicyCall, SqlError> {
            Ok(PolicyCall {
                function: Arc::new(self.compile_policy(function)?),
                columns: names
                    .iter()
                    .map(|name| index_of(name))
                    .collect::<Result<_, _>>()?,
            })
        };
        let row_filter = spec
            .row_filter
            .as_ref()
            .map(|filter| {
                let names: Vec<&str> = filter
                    .input_column_names
                    .iter()
                    .map(String::as_str)
                    .collect();
                policy_call(&filter.function_name, &names)
            })
            .transpose()?;
        let masks = columns
            .iter()
            .map(|column| {
                column
                    .mask
                    .as_ref()
                    .map(|mask| {
                        let mut names = vec![column.name.as_str()];
                        names.extend(mask.using_column_names.iter().map(String::as_str));
                        policy_call(&mask.function_name, &names)
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policy = (row_filter.is_some() || masks.iter().any(Option::is_some))
            .then_some(Policy { row_filter, masks });
        let directory = self.shared.files.current(record.id)?;
        let url = ListingTableUrl::parse(format!("{}/", directory.display()))?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        Ok(DeputyTable {
            full_name: record.full_name.clone(),
            files: Arc::new(ListingTable::try_new(config)?),
            access,
            policy,
        })
    }
}

/// The stored spec of a function; one that does not parse fails whatever uses it.
pub(crate) fn function_spec(record: &SecurableRecord) -> Result<FunctionSpec, SqlError> {
    serde_json::from_str(&record.spec).map_err(|error| {
        SqlError::Internal(format!("stored function `{}`: {error}", record.full_name))
    })
}

fn typed(parameters: &[FunctionParameterSpec]) -> Result<Vec<(String, DataType)>, SqlError> {
    let mut parameters: Vec<_> = parameters.iter().collect();
    parameters.sort_by_key(|parameter| parameter.position);
    parameters
        .into_iter()
        .map(|parameter| {
            Ok((
                parameter.name.to_ascii_lowercase(),
                arrow_type(&parameter.type_text)?,
            ))
        })
        .collect()
}

fn parameter_types(spec: &FunctionSpec) -> Result<Vec<(String, DataType)>, SqlError> {
    typed(&spec.input_params)
}

fn return_columns(spec: &FunctionSpec) -> Result<Vec<(String, DataType)>, SqlError> {
    typed(&spec.return_params)
}

pub(crate) fn table_spec(record: &SecurableRecord) -> Result<TableSpec, SqlError> {
    serde_json::from_str(&record.spec).map_err(|error| {
        SqlError::Internal(format!("stored table `{}`: {error}", record.full_name))
    })
}

#[derive(Debug)]
struct DeputyCatalogList {
    context: Arc<CatalogContext>,
}

impl CatalogProviderList for DeputyCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Catalogs are created through the store (CREATE CATALOG), never registered in a session.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        self.context.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.context.schema_names(name)?;
        Some(Arc::new(DeputyCatalog {
            context: Arc::clone(&self.context),
            catalog: name.to_owned(),
        }))
    }
}

#[derive(Debug)]
struct DeputyCatalog {
    context: Arc<CatalogContext>,
    catalog: String,
}

impl CatalogProvider for DeputyCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.context.schema_names(&self.catalog).unwrap_or_default()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.context.table_names(&self.catalog, name)?;
        Some(Arc::new(DeputySchema {
            context: Arc::clone(&self.context),
            catalog: self.catalog.clone(),
            schema: name.to_owned(),
        }))
    }
}

#[derive(Debug)]
struct DeputySchema {
    context: Arc<CatalogContext>,
    catalog: String,
    schema: String,
}

#[async_trait]
impl SchemaProvider for DeputySchema {
    fn table_names(&self) -> Vec<String> {
        self.context
            .table_names(&self.catalog, &self.schema)
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.context
            .relation(&self.catalog, &self.schema, name)
            .await
            .map_err(SqlError::into_datafusion)
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::External(Box::new(SqlError::Unsupported(
            format!("`{name}`: tables are created with CREATE TABLE"),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.context
            .access(&self.catalog, &self.schema, name)
            .is_some()
    }
}
