//! The per-statement catalog: what one principal may see, exposed to DataFusion as its catalog list.
//!
//! **Invariant:** a catalog, schema, table or function the principal may not use is absent, exactly as if it did not
//! exist; DataFusion's "not found" for it is the same error, word for word, as for a missing one. Catalogs and
//! schemas are listed when `decide` allows reading their metadata (`BROWSE`, or the usage chain above and any
//! privilege on them); tables and views when it allows `SELECT` or `MODIFY` (usage chain included); functions when
//! it allows `EXECUTE`.
//!
//! The securables are read from the store once per statement, so a statement sees one consistent catalog and a new
//! object is visible to the next statement as soon as the caller publishes the new snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema};
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
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionConfig;
use deputy_authz::{Action, SecurableKind, SecurableRef};
use deputy_store::Store;
use deputy_store::catalog::SecurableRecord;
use deputy_store::specs::{FunctionSpec, TableSpec};

use crate::SqlError;
use crate::functions::{Identity, compile_function};
use crate::session::Rights;
use crate::snapshot::authz_principal;
use crate::storage::{TableFiles, TableLocks};
use crate::table::{Access, DeputyTable, Policy, PolicyCall};
use crate::types::arrow_type;

/// Views may reference views; a chain longer than this is refused rather than followed.
const MAX_VIEW_DEPTH: usize = 8;

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
    /// Full names of the functions the principal may execute.
    executable: Vec<String>,
    /// Plans function bodies: built-ins and identity functions only. Built on first use.
    planner: OnceLock<SessionState>,
    view_depth: usize,
}

impl CatalogContext {
    pub(crate) fn new(
        shared: Arc<Shared>,
        directory: Arc<Directory>,
        rights: Rights,
        identity: Arc<Identity>,
        defaults: (String, String),
        view_depth: usize,
    ) -> Arc<CatalogContext> {
        let mut tree = Tree::new();
        let mut executable = Vec::new();
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
                (SecurableKind::Function, [_, _, _])
                    if rights.allows(Action::ExecuteFunction(securable.clone())) =>
                {
                    executable.push(securable.full_name().to_owned());
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
            executable,
            planner: OnceLock::new(),
            view_depth,
        })
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
    /// functions it may execute.
    pub(crate) fn session_state(self: &Arc<Self>) -> Result<SessionState, SqlError> {
        let mut state = self
            .state_builder()
            .with_catalog_list(Arc::new(DeputyCatalogList {
                context: Arc::clone(self),
            }))
            .build();
        for function in self.identity.functions() {
            state.register_udf(function)?;
        }
        for name in &self.executable {
            let udf = self.compile(name)?;
            state.register_udf(Arc::new(udf))?;
        }
        Ok(state)
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

    /// Compiles a stored function by full name, whoever may execute it (policies run with the owner's rights).
    pub(crate) fn compile(&self, full_name: &str) -> Result<ScalarUDF, SqlError> {
        let record = self
            .directory
            .find("function", full_name)
            .ok_or_else(|| SqlError::FunctionNotFound(full_name.to_owned()))?;
        let spec: FunctionSpec = serde_json::from_str(&record.spec).map_err(|error| {
            SqlError::Internal(format!("stored function `{full_name}`: {error}"))
        })?;
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

    /// A view is planned with its owner's rights (definer's rights, as in Unity Catalog), but with the session's
    /// identity, so policies on the tables it reads still see the end user.
    async fn view(
        &self,
        record: &SecurableRecord,
        full_name: &str,
    ) -> Result<Arc<dyn TableProvider>, SqlError> {
        if self.view_depth >= MAX_VIEW_DEPTH {
            return Err(SqlError::Analysis(format!(
                "view `{full_name}` nests views more than {MAX_VIEW_DEPTH} deep"
            )));
        }
        let spec = table_spec(record)?;
        let definition = spec
            .view_definition
            .ok_or_else(|| SqlError::Internal(format!("view `{full_name}` has no definition")))?;
        let owner = authz_principal(record.owner_id).map_err(SqlError::Internal)?;
        let mut parts = full_name.split('.');
        let defaults = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let definer = CatalogContext::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.directory),
            Rights::owner(owner, &self.rights.snapshot),
            Arc::clone(&self.identity),
            defaults,
            self.view_depth + 1,
        );
        let state = definer.session_state()?;
        let plan = state.create_logical_plan(&definition).await?;
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
                function: Arc::new(self.compile(function)?),
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
