//! Unity Catalog functions whose bodies read data, prepared for the one statement that calls them.
//!
//! A function whose body is an expression over its parameters is compiled to a scalar UDF (`functions` module).
//! A function whose body reads data (a scalar subquery, a call of another catalog function) and every table function
//! (`RETURNS TABLE`) is *planned* instead: with its owner's rights, because Unity Catalog runs function bodies as
//! `SQL SECURITY DEFINER`, and with the caller's identity, so the row filters and column masks of every table the body
//! reads see the end user. The plan is then inlined at each call: a scalar call becomes its body with the arguments in
//! place of the parameters, a table function in `FROM` becomes its query. The statement is optimised as one plan, so
//! a function costs what the same query written inline costs, and no policy is evaluated differently.
//!
//! Parameters are planned as the columns of an outermost scope, so a column of a table the body reads wins over a
//! parameter of the same name, as in Databricks, and a parameter can be qualified by the function's name.
//!
//! **Invariants:** a body resolves names only in its owner's catalog, never the caller's; the arguments of a call
//! are cast to the parameters' types before they replace them; a function reached again while its own body is being
//! prepared is refused, and nesting is bounded (`catalog::MAX_NESTING`).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, ExprSchema, ResolvedTableReference, TableReference,
};
use datafusion::config::ConfigOptions;
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::planner::{
    ContextProvider, ExprPlanner, PlannedRelation, RelationPlanner, RelationPlannerContext,
    RelationPlanning,
};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, EmptyRelation, Expr, HigherOrderUDF, LogicalPlan,
    LogicalPlanBuilder, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableSource, WindowUDF, cast,
};
use datafusion::sql::planner::{ParserOptions, PlannerContext, SqlToRel};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, Statement,
    TableFactor, visit_expressions, visit_expressions_mut, visit_relations,
};

use crate::SqlError;
use crate::functions::{call_signature, coerce_arguments};

/// One catalog function prepared for a statement.
pub(crate) enum Routine {
    /// Registered in the session: compiled, or an [`InlinedFunction`] stand-in.
    Scalar(Arc<ScalarUDF>),
    Table(Arc<TableRoutine>),
}

/// The catalog functions one statement may call, prepared.
#[derive(Debug, Default)]
pub(crate) struct Routines {
    /// Registered in the session by full name: compiled expression functions, and the stand-ins of inlined ones.
    pub(crate) scalar: Vec<Arc<ScalarUDF>>,
    /// Table functions by full name, planned in `FROM` by [`TableFunctions`].
    pub(crate) tables: HashMap<String, Arc<TableRoutine>>,
}

/// One parameter of a planned body: the column it is planned as, and its declared type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Parameter {
    column: Column,
    data_type: DataType,
}

/// The parameters of `function` as an outermost scope: one row of columns qualified by the function's own name.
pub(crate) fn parameter_scope(
    short_name: &str,
    parameters: &[(String, DataType)],
) -> DfResult<(DFSchemaRef, Vec<Parameter>)> {
    let qualifier = TableReference::bare(short_name);
    let fields: Vec<(Option<TableReference>, FieldRef)> = parameters
        .iter()
        .map(|(name, data_type)| {
            (
                Some(qualifier.clone()),
                Arc::new(Field::new(name, data_type.clone(), true)),
            )
        })
        .collect();
    let schema = Arc::new(DFSchema::new_with_metadata(fields, HashMap::new())?);
    let parameters = parameters
        .iter()
        .map(|(name, data_type)| Parameter {
            column: Column::new(Some(qualifier.clone()), name),
            data_type: data_type.clone(),
        })
        .collect();
    Ok((schema, parameters))
}

/// A scalar function whose body reads data. It is registered under the function's name so the SQL planner types
/// the call, and [`inline_calls`] replaces every call with the body before the plan runs; it is never invoked.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct InlinedFunction {
    name: String,
    signature: Signature,
    parameters: Vec<Parameter>,
    parameter_types: Vec<DataType>,
    return_type: DataType,
    /// `SELECT <body>` over one row of the parameters: the body is planned, bound and inlined as a plan, so its
    /// subqueries are handled the same way as a table function's.
    body: LogicalPlan,
}

impl InlinedFunction {
    pub(crate) fn new(
        name: &str,
        parameters: Vec<Parameter>,
        scope: DFSchemaRef,
        body: Expr,
        return_type: DataType,
    ) -> DfResult<InlinedFunction> {
        let parameter_types: Vec<DataType> = parameters
            .iter()
            .map(|parameter| parameter.data_type.clone())
            .collect();
        let signature = call_signature(&parameter_types);
        let row = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: true,
            schema: scope,
        });
        let body = LogicalPlanBuilder::from(row)
            .project(vec![cast(body, return_type.clone()).alias("value")])?
            .build()?;
        // The functions this body calls are inlined into it now, so a call of this one inlines them all.
        let body = inline_calls(body)?;
        Ok(InlinedFunction {
            name: name.to_owned(),
            signature,
            parameters,
            parameter_types,
            return_type,
            body,
        })
    }

    /// The body with `arguments` in place of the parameters. `correlated` are the same arguments as seen from
    /// inside a subquery (their columns as outer references); `caller` holds the columns the arguments use.
    fn call(
        &self,
        arguments: Vec<Expr>,
        correlated: Vec<Expr>,
        caller: &DFSchema,
    ) -> DfResult<Expr> {
        let LogicalPlan::Projection(body) = &self.body else {
            return Err(self.lost_shape());
        };
        // The body's row grows the caller's columns, so the arguments that replace the parameters resolve in it.
        let mut scope = body.input.schema().as_ref().clone();
        scope.merge(caller);
        let row = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: true,
            schema: Arc::new(scope),
        });
        let body = LogicalPlan::Projection(Projection::try_new(body.expr.clone(), Arc::new(row))?);
        let binding = Binding::new(&self.parameters, arguments, correlated);
        match binding.plan(body)? {
            LogicalPlan::Projection(mut projection) if projection.expr.len() == 1 => {
                Ok(projection.expr.remove(0).unalias())
            }
            _ => Err(self.lost_shape()),
        }
    }

    fn lost_shape(&self) -> DataFusionError {
        DataFusionError::Internal(format!(
            "the inlined body of `{}` lost its shape",
            self.name
        ))
    }
}

impl ScalarUDFImpl for InlinedFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        coerce_arguments(&self.name, &self.parameter_types, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "`{}` reads tables and must be inlined before it runs",
            self.name
        )))
    }
}

/// A table function: its body planned with its owner's rights, the declared columns projected.
#[derive(Debug)]
pub(crate) struct TableRoutine {
    full_name: String,
    short_name: String,
    parameters: Vec<Parameter>,
    names: Vec<String>,
    body: LogicalPlan,
}

impl TableRoutine {
    pub(crate) fn new(
        full_name: &str,
        short_name: &str,
        parameters: Vec<Parameter>,
        body: LogicalPlan,
        columns: &[(String, DataType)],
    ) -> Result<TableRoutine, SqlError> {
        let produced = body.schema().fields().len();
        if produced != columns.len() {
            return Err(SqlError::Analysis(format!(
                "the body of table function `{full_name}` returns {produced} column(s); it declares {}",
                columns.len()
            )));
        }
        let projection = body
            .schema()
            .columns()
            .into_iter()
            .zip(columns)
            .map(|(column, (name, data_type))| {
                cast(Expr::Column(column), data_type.clone()).alias(name)
            })
            .collect::<Vec<_>>();
        let body = LogicalPlanBuilder::from(body)
            .project(projection)?
            .build()?;
        Ok(TableRoutine {
            full_name: full_name.to_owned(),
            short_name: short_name.to_owned(),
            parameters,
            names: columns.iter().map(|(name, _)| name.clone()).collect(),
            body,
        })
    }

    /// The body with `arguments` bound, by position or by parameter name.
    fn call(&self, arguments: Vec<(Option<String>, Expr)>) -> DfResult<LogicalPlan> {
        let mut bound: Vec<Option<Expr>> = vec![None; self.parameters.len()];
        for (position, (name, argument)) in arguments.into_iter().enumerate() {
            let index = match name {
                Some(name) => self
                    .parameters
                    .iter()
                    .position(|parameter| parameter.column.name.eq_ignore_ascii_case(&name))
                    .ok_or_else(|| self.mismatch(&format!("it has no parameter `{name}`")))?,
                None => position,
            };
            let slot = bound.get_mut(index).ok_or_else(|| {
                self.mismatch(&format!("it takes {} argument(s)", self.parameters.len()))
            })?;
            if slot.replace(argument).is_some() {
                return Err(self.mismatch("an argument is given twice"));
            }
        }
        let arguments = bound
            .into_iter()
            .zip(&self.parameters)
            .map(|(argument, parameter)| {
                argument.ok_or_else(|| {
                    self.mismatch(&format!("no value for `{}`", parameter.column.name))
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        // Arguments are evaluated once per call, not per row of a table the body reads: a column of the caller's
        // query would make the call lateral, which is not supported.
        if arguments
            .iter()
            .any(|argument| !argument.column_refs().is_empty())
        {
            return Err(self.mismatch("its arguments must not refer to columns"));
        }
        // A statement parameter has no type until it is bound, and is cast to its parameter's type then.
        let parameters: Vec<DataType> = self
            .parameters
            .iter()
            .map(|parameter| parameter.data_type.clone())
            .collect();
        let types: Vec<DataType> = arguments
            .iter()
            .zip(&parameters)
            .map(|(argument, parameter)| {
                argument
                    .get_type(&DFSchema::empty())
                    .unwrap_or_else(|_| parameter.clone())
            })
            .collect();
        coerce_arguments(&self.full_name, &parameters, &types)?;
        let binding = Binding::new(&self.parameters, arguments.clone(), arguments);
        binding.plan(self.body.clone())
    }

    fn mismatch(&self, why: &str) -> DataFusionError {
        SqlError::Analysis(format!("cannot call `{}`: {why}", self.full_name)).into_datafusion()
    }
}

/// Replaces a body's parameters with a call's arguments, cast to the parameters' types.
struct Binding<'a> {
    parameters: &'a [Parameter],
    direct: Vec<Expr>,
    correlated: Vec<Expr>,
}

impl<'a> Binding<'a> {
    fn new(parameters: &'a [Parameter], direct: Vec<Expr>, correlated: Vec<Expr>) -> Binding<'a> {
        let typed = |arguments: Vec<Expr>| {
            arguments
                .into_iter()
                .zip(parameters)
                .map(|(argument, parameter)| cast(argument, parameter.data_type.clone()))
                .collect()
        };
        Binding {
            parameters,
            direct: typed(direct),
            correlated: typed(correlated),
        }
    }

    fn index(&self, column: &Column) -> Option<usize> {
        self.parameters
            .iter()
            .position(|parameter| &parameter.column == column)
    }

    fn plan(&self, plan: LogicalPlan) -> DfResult<LogicalPlan> {
        let bound = plan
            .transform_up_with_subqueries(|node| {
                rewrite_expressions(node, |expr| {
                    expr.transform_up(|expr| match &expr {
                        Expr::Column(column) => Ok(match self.index(column) {
                            Some(index) => Transformed::yes(self.direct[index].clone()),
                            None => Transformed::no(expr),
                        }),
                        Expr::OuterReferenceColumn(_, column) => Ok(match self.index(column) {
                            Some(index) => Transformed::yes(self.correlated[index].clone()),
                            None => Transformed::no(expr),
                        }),
                        _ => Ok(Transformed::no(expr)),
                    })
                })
            })?
            .data;
        Ok(bound)
    }
}

/// Applies `rewrite` to a plan node's expressions, keeping the names its output columns had; refreshes what a
/// subquery records of the outer columns it uses.
fn rewrite_expressions(
    node: LogicalPlan,
    mut rewrite: impl FnMut(Expr) -> DfResult<Transformed<Expr>>,
) -> DfResult<Transformed<LogicalPlan>> {
    if let LogicalPlan::Subquery(mut subquery) = node {
        let outer = subquery.subquery.all_out_ref_exprs();
        let changed = outer != subquery.outer_ref_columns;
        subquery.outer_ref_columns = outer;
        return Ok(Transformed::new_transformed(
            LogicalPlan::Subquery(subquery),
            changed,
        ));
    }
    let preserver = NamePreserver::new(&node);
    let rewritten = node.map_expressions(|expr| {
        let name = preserver.save(&expr);
        Ok(rewrite(expr)?.update_data(|expr| name.restore(expr)))
    })?;
    if rewritten.transformed {
        rewritten.map_data(LogicalPlan::recompute_schema)
    } else {
        Ok(rewritten)
    }
}

/// Replaces every call of an [`InlinedFunction`] in `plan`, its subqueries included, with the function's body.
pub(crate) fn inline_calls(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    let inlined = plan
        .transform_up_with_subqueries(|node| {
            if !matches!(node, LogicalPlan::Subquery(_))
                && !node.expressions().iter().any(calls_inlined_function)
            {
                return Ok(Transformed::no(node));
            }
            let scope = input_scope(&node)?;
            rewrite_expressions(node, |expr| {
                expr.transform_up(|expr| {
                    let Expr::ScalarFunction(call) = &expr else {
                        return Ok(Transformed::no(expr));
                    };
                    let Some(function) = call.func.inner().downcast_ref::<InlinedFunction>() else {
                        return Ok(Transformed::no(expr));
                    };
                    let correlated = call
                        .args
                        .iter()
                        .map(|argument| as_outer_reference(argument.clone(), &scope))
                        .collect::<DfResult<Vec<_>>>()?;
                    function
                        .call(call.args.clone(), correlated, &scope)
                        .map(Transformed::yes)
                })
            })
        })?
        .data;
    Ok(inlined)
}

fn calls_inlined_function(expr: &Expr) -> bool {
    expr.exists(|expr| {
        Ok(matches!(expr, Expr::ScalarFunction(call)
            if call.func.inner().downcast_ref::<InlinedFunction>().is_some()))
    })
    .unwrap_or(true)
}

/// The columns a node's expressions may refer to: those of its inputs.
fn input_scope(node: &LogicalPlan) -> DfResult<DFSchema> {
    let mut scope = DFSchema::empty();
    for input in node.inputs() {
        scope.merge(input.schema());
    }
    Ok(scope)
}

/// An argument as the inlined body's subqueries see it: each column of the caller's query an outer reference.
fn as_outer_reference(argument: Expr, scope: &DFSchema) -> DfResult<Expr> {
    Ok(argument
        .transform_up(|expr| match expr {
            Expr::Column(column) => {
                let field = scope.field_from_column(&column)?;
                Ok(Transformed::yes(Expr::OuterReferenceColumn(
                    Arc::clone(field),
                    column,
                )))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

/// Plans table functions named in `FROM`: `SELECT * FROM catalog.schema.function(arguments)`.
#[derive(Debug)]
pub(crate) struct TableFunctions {
    pub(crate) routines: HashMap<String, Arc<TableRoutine>>,
}

impl RelationPlanner for TableFunctions {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DfResult<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(arguments),
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let Some(full_name) = catalog_function_name(name) else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let routine = self
            .routines
            .get(&full_name)
            .ok_or_else(|| SqlError::FunctionNotFound(full_name.clone()).into_datafusion())?;
        let empty = DFSchema::empty();
        let mut planned = Vec::with_capacity(arguments.args.len());
        for argument in &arguments.args {
            let (name, expr) = match argument {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => (None, expr),
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(expr),
                    ..
                } => (Some(context.normalize_ident(name.clone())), expr),
                other => {
                    return Err(SqlError::Analysis(format!(
                        "unsupported argument `{other}` of `{full_name}`"
                    ))
                    .into_datafusion());
                }
            };
            planned.push((name, context.sql_to_expr(expr.clone(), &empty)?));
        }
        let mut plan = routine.call(planned)?;
        if alias.is_none() {
            plan = LogicalPlanBuilder::from(plan)
                .alias(routine.short_name.as_str())?
                .build()?;
        }
        debug_assert_eq!(plan.schema().fields().len(), routine.names.len());
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan,
            alias.clone(),
        ))))
    }
}

/// `catalog.schema.function` in lower case, for a name of exactly three parts.
pub(crate) fn catalog_function_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<&Ident> = name.0.iter().filter_map(ObjectNamePart::as_ident).collect();
    (parts.len() == 3 && name.0.len() == 3).then(|| {
        parts
            .iter()
            .map(|part| part.value.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// The catalog functions a statement names: scalar calls and relations of three parts, for which `is_function`
/// holds. Scalar call names are rewritten to plain lower-case parts, the name the session registers them under.
pub(crate) fn named_functions(
    statement: &mut Statement,
    is_function: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut names = Vec::new();
    let _ = visit_expressions_mut(statement, |expr| {
        if let SqlExpr::Function(function) = expr
            && let Some(full_name) = catalog_function_name(&function.name)
            && is_function(&full_name)
        {
            function.name =
                ObjectName::from(full_name.split('.').map(Ident::new).collect::<Vec<_>>());
            names.push(full_name);
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_relations(statement, |relation| {
        if let Some(full_name) = catalog_function_name(relation)
            && is_function(&full_name)
        {
            names.push(full_name);
        }
        ControlFlow::<()>::Continue(())
    });
    names.sort();
    names.dedup();
    names
}

/// Whether a scalar body (`SELECT <body>`) reads data: it has a subquery or calls a catalog function.
pub(crate) fn reads_data(body: &Statement) -> bool {
    visit_expressions(body, |expr| match expr {
        SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
            ControlFlow::Break(())
        }
        SqlExpr::Function(function) if function.name.0.len() > 1 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Plans a body in its owner's session: the tables it names are opened first (planning is synchronous, opening a
/// table is not), everything else comes from the session.
pub(crate) struct BodyPlanner<'a> {
    state: &'a SessionState,
    tables: HashMap<ResolvedTableReference, Arc<dyn TableSource>>,
    defaults: (String, String),
}

impl<'a> BodyPlanner<'a> {
    pub(crate) async fn new(
        state: &'a SessionState,
        statement: &Statement,
    ) -> Result<BodyPlanner<'a>, SqlError> {
        let options = &state.config_options().catalog;
        let defaults = (
            options.default_catalog.clone(),
            options.default_schema.clone(),
        );
        let wrapped = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
        let (references, _ctes) =
            datafusion::sql::resolve::resolve_table_references(&wrapped, true)?;
        let mut tables = HashMap::with_capacity(references.len());
        for reference in references {
            let resolved = reference.resolve(&defaults.0, &defaults.1);
            if tables.contains_key(&resolved) {
                continue;
            }
            if let Ok(schema) = state.schema_for_ref(resolved.clone())
                && let Some(table) = schema.table(&resolved.table).await?
            {
                tables.insert(resolved, provider_as_source(table));
            }
        }
        Ok(BodyPlanner {
            state,
            tables,
            defaults,
        })
    }

    fn sql(&self) -> SqlToRel<'_, BodyPlanner<'a>> {
        SqlToRel::new_with_options(
            self,
            ParserOptions::from(&self.state.config_options().sql_parser),
        )
    }

    /// A scalar body as an expression over the parameters in `scope`.
    pub(crate) fn expression(&self, body: SqlExpr, scope: &DFSchema) -> DfResult<Expr> {
        self.sql()
            .sql_to_expr(body, scope, &mut PlannerContext::new())
    }

    /// A table function's query, its parameters the outermost scope.
    pub(crate) fn query(&self, body: Statement, scope: DFSchemaRef) -> DfResult<LogicalPlan> {
        let mut context = PlannerContext::new();
        context.append_outer_query_schema(scope);
        self.sql()
            .sql_statement_to_plan_with_context(body, &mut context)
    }
}

impl ContextProvider for BodyPlanner<'_> {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        let resolved = name.clone().resolve(&self.defaults.0, &self.defaults.1);
        self.tables.get(&resolved).cloned().ok_or_else(|| {
            SqlError::TableNotFound(name.to_string().to_ascii_lowercase()).into_datafusion()
        })
    }

    fn create_cte_work_table(
        &self,
        name: &str,
        schema: SchemaRef,
    ) -> DfResult<Arc<dyn TableSource>> {
        Ok(provider_as_source(Arc::new(CteWorkTable::new(
            name, schema,
        ))))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        self.state.relation_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
