//! A managed table: Parquet files under `data_dir/tables/<id>/`, read and appended through DataFusion's listing
//! table, with the table's row filter and column masks applied inside every scan.
//!
//! **Why in the scan:** every reference to a table in any query shape (join, self-join, CTE, subquery, UNION,
//! view, CTAS, EXPLAIN ANALYZE) becomes a `TableScan` of this provider, and the provider returns
//! `PolicyExec <- Projection(masks) <- Filter(row filter IS TRUE) <- raw Parquet scan`. Nothing outside can reach the
//! raw scan:
//! - user predicates stay above the policy and only ever see permitted rows and masked values (a predicate on a
//!   masked column compares the masked value). A predicate on unmasked columns only is also handed to the Parquet
//!   scan as `Inexact`, which uses it to skip row groups by their statistics and nothing else (row-level pushdown
//!   is off, and pruning ignores evaluation errors), so it cannot change results or fail on a hidden row;
//! - [`PolicyExec`] is an optimizer barrier: physical filter pushdown (including dynamic join/TopK filters), limit
//!   pushdown and projection swapping all stop at it, so no user expression is evaluated on a hidden row, and no
//!   error from one can reveal it;
//! - it reports unknown statistics, so `COUNT(*)` and min/max cannot be answered from the files' metadata.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, ScalarUDF, TableProviderFilterPushDown, cast, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterPushdownResult, ChildPushdownResult, FilterPushdownPhase,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use crate::SqlError;
use crate::functions::SqlFunction;

/// What the session's principal may do with the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

/// A policy function and the table columns (by index) it is called with.
#[derive(Debug)]
pub(crate) struct PolicyCall {
    pub(crate) function: Arc<ScalarUDF>,
    pub(crate) columns: Vec<usize>,
}

/// A table's row filter and column masks, compiled for one session.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) row_filter: Option<PolicyCall>,
    /// One entry per column; a mask's first argument is the column itself, then its `USING COLUMNS`.
    pub(crate) masks: Vec<Option<PolicyCall>>,
}

impl PolicyCall {
    /// The call on the stored columns of a table with `schema`.
    fn call(&self, schema: &Schema) -> DfResult<Expr> {
        let arguments = self
            .columns
            .iter()
            .map(|index| stored_column(schema, *index))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(self.function.call(arguments))
    }
}

impl Policy {
    /// What the session sees of column `index`: its mask applied to the stored values, or the stored value.
    fn visible_value(&self, schema: &Schema, index: usize) -> DfResult<Expr> {
        match self.masks.get(index) {
            Some(Some(mask)) => Ok(cast(
                mask.call(schema)?,
                schema.field(index).data_type().clone(),
            )),
            _ => stored_column(schema, index),
        }
    }
}

/// Column `index` of the raw scan, whose schema is the table's, unqualified.
fn stored_column(schema: &Schema, index: usize) -> DfResult<Expr> {
    let field = schema
        .fields()
        .get(index)
        .ok_or_else(|| DataFusionError::Internal(format!("policy column {index} out of range")))?;
    Ok(Expr::Column(Column::new_unqualified(field.name())))
}

#[derive(Debug)]
pub(crate) struct DeputyTable {
    pub(crate) full_name: String,
    pub(crate) files: Arc<ListingTable>,
    pub(crate) access: Access,
    pub(crate) policy: Option<Policy>,
}

impl DeputyTable {
    /// The guarded plan of a scan: the stored columns `outputs` need, the rows `keep` (if any) is true for, the
    /// `outputs` computed on them, under a [`PolicyExec`] barrier. `outputs` and `keep` are over the stored
    /// columns, unqualified. `pruning` are predicates the Parquet source may use to skip row groups by statistics.
    async fn guarded(
        &self,
        state: &dyn DfSession,
        keep: Option<Expr>,
        outputs: Vec<(Expr, String)>,
        pruning: &[Expr],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.files.schema();
        // Read only the columns the outputs and the filter need.
        let mut needed = Vec::new();
        for expr in keep.iter().chain(outputs.iter().map(|(expr, _)| expr)) {
            for column in expr.column_refs() {
                needed.push(schema.index_of(&column.name)?);
            }
        }
        needed.sort_unstable();
        needed.dedup();
        // Never the limit, which would cut rows before the row filter.
        let mut raw = self.files.scan(state, Some(&needed), &[], None).await?;
        let raw_schema = DFSchema::try_from(raw.schema())?;
        // `pruning` are the predicates accepted as `Inexact` in `supports_filters_pushdown`. They are offered to the
        // Parquet source through the filter-pushdown interface, which with row-level pushdown off (see the session
        // config) only adds them to the statistics-pruning predicate.
        if let Some(predicate) = conjunction(pruning.iter().map(unqualified)) {
            let predicate = state.create_physical_expr(predicate, &raw_schema)?;
            let offered = ChildPushdownResult {
                parent_filters: vec![ChildFilterPushdownResult {
                    filter: predicate,
                    child_results: Vec::new(),
                }],
                self_filters: Vec::new(),
            };
            let pruned = raw.handle_child_pushdown_result(
                FilterPushdownPhase::Post,
                offered,
                state.config_options(),
            )?;
            if let Some(updated) = pruned.updated_node {
                raw = updated;
            }
        }
        let mut plan = raw;
        if let Some(keep) = keep {
            let predicate = state.create_physical_expr(keep, &raw_schema)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
        }
        let expressions = outputs
            .into_iter()
            .map(|(expr, name)| Ok((state.create_physical_expr(expr, &raw_schema)?, name)))
            .collect::<DfResult<Vec<(Arc<dyn PhysicalExpr>, String)>>>()?;
        let plan = Arc::new(ProjectionExec::try_new(expressions, plan)?);
        Ok(Arc::new(PolicyExec::new(plan)))
    }

    /// The row filter's verdict on a stored row, `IS TRUE` so that a NULL hides the row; `None` when every row is
    /// shown: without a filter, or with one whose body folded to `true` for this session (a group that sees
    /// everything), which then costs nothing, not even reading its columns.
    fn shown(&self) -> DfResult<Option<Expr>> {
        let schema = self.files.schema();
        let Some(filter) = self
            .policy
            .as_ref()
            .and_then(|policy| policy.row_filter.as_ref())
        else {
            return Ok(None);
        };
        let constant = filter
            .function
            .inner()
            .downcast_ref::<SqlFunction>()
            .and_then(SqlFunction::constant);
        Ok(match constant {
            Some(ScalarValue::Boolean(Some(true))) => None,
            Some(_) => Some(lit(false)),
            None => Some(filter.call(&schema)?.is_true()),
        })
    }

    /// What the session sees of column `index`.
    fn visible_value(&self, index: usize) -> DfResult<Expr> {
        let schema = self.files.schema();
        match &self.policy {
            Some(policy) => policy.visible_value(&schema, index),
            None => stored_column(&schema, index),
        }
    }

    fn denied(&self, privilege: &str) -> datafusion::error::DataFusionError {
        SqlError::PermissionDenied(format!(
            "`{privilege}` on table `{}` is required",
            self.full_name
        ))
        .into_datafusion()
    }
}

#[async_trait]
impl TableProvider for DeputyTable {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let Some(policy) = &self.policy else {
            return self.files.supports_filters_pushdown(filters);
        };
        // INVARIANT: user predicates stay above the policy (see the module docs); those on unmasked columns are
        // also given to the raw scan, for statistics pruning only.
        let schema = self.files.schema();
        let masked: Vec<&str> = schema
            .fields()
            .iter()
            .zip(&policy.masks)
            .filter(|(_, mask)| mask.is_some())
            .map(|(field, _)| field.name().as_str())
            .collect();
        Ok(filters
            .iter()
            .map(|filter| {
                let touches_mask = filter
                    .column_refs()
                    .iter()
                    .any(|column| masked.contains(&column.name.as_str()));
                if touches_mask {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.access.read {
            return Err(self.denied("SELECT"));
        }
        let Some(policy) = &self.policy else {
            return self.files.scan(state, projection, filters, limit).await;
        };
        let schema = self.files.schema();
        let output: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let outputs = output
            .into_iter()
            .map(|index| {
                Ok((
                    policy.visible_value(&schema, index)?,
                    schema.field(index).name().clone(),
                ))
            })
            .collect::<DfResult<Vec<_>>>()?;
        self.guarded(state, self.shown()?, outputs, filters).await
    }

    async fn insert_into(
        &self,
        state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.access.write {
            return Err(self.denied("MODIFY"));
        }
        if insert_op != InsertOp::Append {
            return Err(
                SqlError::Unsupported("only INSERT INTO (append) is supported".to_owned())
                    .into_datafusion(),
            );
        }
        self.files.insert_into(state, input, insert_op).await
    }
}

/// Names of the stored-value columns of a [`DmlRows`] scan. They contain spaces, which no column name may, so the
/// statement's own expressions, resolved against the table's columns, can never name them.
pub(crate) const STORED_PREFIX: &str = "deputy stored ";

/// The rows DELETE and UPDATE rewrite (see `engine::dml`), as a scan under the same barrier as a query's.
///
/// [`DmlRows::Visible`] are the rows the row filter shows the session: the table's columns as the session sees them
/// (masked), then every column's stored value (`STORED_PREFIX<index>`). [`DmlRows::Hidden`] are the others, with
/// their stored values only. The statement's WHERE and SET expressions are evaluated above the visible rows' barrier,
/// never on a hidden row, so no error or count can reveal one.
#[derive(Debug)]
pub(crate) struct DmlSource {
    table: Arc<DeputyTable>,
    rows: DmlRows,
    schema: SchemaRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DmlRows {
    Visible,
    Hidden,
}

impl DmlSource {
    pub(crate) fn new(table: Arc<DeputyTable>, rows: DmlRows) -> DmlSource {
        let stored = table.files.schema();
        let mut fields: Vec<Field> = Vec::new();
        if rows == DmlRows::Visible {
            fields.extend(stored.fields().iter().map(|field| field.as_ref().clone()));
        }
        fields.extend(stored.fields().iter().enumerate().map(|(index, field)| {
            Field::new(
                format!("{STORED_PREFIX}{index}"),
                field.data_type().clone(),
                true,
            )
        }));
        DmlSource {
            table,
            rows,
            schema: Arc::new(Schema::new(fields)),
        }
    }
}

#[async_trait]
impl TableProvider for DmlSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let width = self.table.files.schema().fields().len();
        let visible_width = if self.rows == DmlRows::Visible {
            width
        } else {
            0
        };
        let output: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let stored = self.table.files.schema();
        let outputs = output
            .into_iter()
            .map(|index| {
                let value = match index.checked_sub(visible_width) {
                    Some(stored_index) => stored_column(&stored, stored_index)?,
                    None => self.table.visible_value(index)?,
                };
                Ok((value, self.schema.field(index).name().clone()))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let keep = match (self.rows, self.table.shown()?) {
            (DmlRows::Visible, shown) => shown,
            (DmlRows::Hidden, Some(shown)) => Some(Expr::Not(Box::new(shown))),
            (DmlRows::Hidden, None) => Some(lit(false)),
        };
        self.table.guarded(state, keep, outputs, &[]).await
    }
}

/// The expression with column qualifiers dropped: the raw scan's schema is unqualified.
fn unqualified(expr: &Expr) -> Expr {
    expr.clone()
        .transform(|expr| match expr {
            Expr::Column(column) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                column.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map_or_else(|_| expr.clone(), |transformed| transformed.data)
}

/// The barrier above a table's policy (see the module docs). It passes batches through unchanged and relies on the
/// defaults of [`ExecutionPlan`]: no filter, limit or projection crosses it and its statistics are unknown.
#[derive(Debug)]
pub(crate) struct PolicyExec {
    input: Arc<dyn ExecutionPlan>,
}

impl PolicyExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> PolicyExec {
        PolicyExec { input }
    }
}

impl DisplayAs for PolicyExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeputyPolicyExec")
    }
}

impl ExecutionPlan for PolicyExec {
    fn name(&self) -> &str {
        "DeputyPolicyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match <[Arc<dyn ExecutionPlan>; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(PolicyExec::new(input))),
            Err(_) => Err(DataFusionError::Internal(
                "DeputyPolicyExec has exactly one child".to_owned(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
