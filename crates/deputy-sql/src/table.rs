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
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, ScalarUDF, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterPushdownResult, ChildPushdownResult, FilterPushdownPhase,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use crate::SqlError;

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

#[derive(Debug)]
pub(crate) struct DeputyTable {
    pub(crate) full_name: String,
    pub(crate) files: Arc<ListingTable>,
    pub(crate) access: Access,
    pub(crate) policy: Option<Policy>,
}

impl DeputyTable {
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
        // Read only the columns the output, the masks and the row filter need.
        let mut needed: Vec<usize> = output.clone();
        for index in &output {
            if let Some(Some(mask)) = policy.masks.get(*index) {
                needed.extend(&mask.columns);
            }
        }
        if let Some(filter) = &policy.row_filter {
            needed.extend(&filter.columns);
        }
        needed.sort_unstable();
        needed.dedup();
        // Never the limit, which would cut rows before the row filter.
        let mut raw = self.files.scan(state, Some(&needed), &[], None).await?;
        let raw_schema = DFSchema::try_from(raw.schema())?;
        // `filters` are the predicates accepted as `Inexact` in `supports_filters_pushdown`. They are offered to the
        // Parquet source through the filter-pushdown interface, which with row-level pushdown off (see the session
        // config) only adds them to the statistics-pruning predicate.
        if let Some(predicate) = conjunction(filters.iter().map(unqualified)) {
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
        let column = |index: usize| -> DfResult<Expr> {
            let field = schema.fields().get(index).ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!(
                    "policy column {index} out of range"
                ))
            })?;
            Ok(Expr::Column(Column::new_unqualified(field.name())))
        };
        let call = |policy_call: &PolicyCall| -> DfResult<Expr> {
            let arguments = policy_call
                .columns
                .iter()
                .map(|index| column(*index))
                .collect::<DfResult<Vec<_>>>()?;
            Ok(policy_call.function.call(arguments))
        };
        let mut plan = raw;
        if let Some(filter) = &policy.row_filter {
            // `IS TRUE`: rows whose filter is NULL are dropped too.
            let predicate = state.create_physical_expr(call(filter)?.is_true(), &raw_schema)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
        }
        let mut expressions: Vec<(Arc<dyn PhysicalExpr>, String)> =
            Vec::with_capacity(output.len());
        for index in output {
            let field = schema.field(index);
            let expression = match policy.masks.get(index) {
                Some(Some(mask)) => {
                    datafusion::logical_expr::cast(call(mask)?, field.data_type().clone())
                }
                _ => column(index)?,
            };
            expressions.push((
                state.create_physical_expr(expression, &raw_schema)?,
                field.name().clone(),
            ));
        }
        let plan = Arc::new(ProjectionExec::try_new(expressions, plan)?);
        Ok(Arc::new(PolicyExec::new(plan)))
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
            Err(_) => Err(datafusion::error::DataFusionError::Internal(
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
