//! DELETE and UPDATE: the table's rows are rewritten into a new version, which replaces the old one atomically (see
//! the `storage` module), so a failed or cancelled statement leaves the table as it was.
//!
//! **Policies apply to DML as to queries**, as in Databricks:
//! - only rows the row filter shows the caller are deleted or updated; the others are written back untouched, so a
//!   caller cannot change, delete or count rows hidden from it;
//! - WHERE and SET expressions see the masked values, exactly as a SELECT by the same caller would: a predicate on a
//!   masked column compares the mask, and `SET c = masked_column` writes the masked value, never the clear one;
//! - a column the statement does not assign keeps its stored value, so an UPDATE never overwrites clear data with
//!   its mask.
//!
//! **Privileges:** `MODIFY` on the table (with the usage chain), and also `SELECT` for an UPDATE or a DELETE with a
//! WHERE clause. Databricks documents `MODIFY` alone for DELETE; Deputy also asks for `SELECT` whenever the
//! statement evaluates expressions over the table's values, because the number of affected rows it returns would
//! otherwise let a caller without `SELECT` probe those values one predicate at a time. `DELETE FROM t` without a
//! WHERE clause needs `MODIFY` only.
//!
//! **How:** DataFusion plans the statement against the caller's view of the table (masked, filtered), which resolves
//! the WHERE and SET expressions, subqueries included. The new rows are then the union of the visible rows the
//! statement hits, with their new values; the visible rows it misses; and the hidden rows, unchanged. Visible and
//! hidden rows come from two guarded scans ([`DmlSource`]), so the statement's expressions are never evaluated on a
//! hidden row, and an error in them cannot reveal one.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, WriteOp, lit};
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, FromTable, ObjectName, Statement, TableFactor, TableWithJoins,
};

use super::*;
use crate::parse::object_name;
use crate::table::{DmlRows, DmlSource, STORED_PREFIX};

/// The extra column of the rewritten rows that is true for the rows the statement deletes or updates.
const HIT: &str = "deputy hit";

/// What a DELETE or UPDATE statement changes, read from its syntax before planning.
struct Target {
    name: ObjectName,
    delete: bool,
    /// Whether the statement evaluates expressions over the table's values (see the module docs).
    reads_values: bool,
    /// The columns an UPDATE assigns, lower case.
    assigned: BTreeSet<String>,
}

impl Target {
    fn of(statement: &Statement) -> Result<Target, SqlError> {
        match statement {
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                // A LIMIT would make the deleted rows depend on the scan order, which the two branches of the
                // rewrite must agree on; Databricks has no DELETE ... LIMIT either.
                if delete.limit.is_some() {
                    return Err(SqlError::Unsupported(
                        "DELETE ... LIMIT is not supported".to_owned(),
                    ));
                }
                Ok(Target {
                    name: single_table(from, "DELETE")?,
                    delete: true,
                    reads_values: delete.selection.is_some(),
                    assigned: BTreeSet::new(),
                })
            }
            Statement::Update(update) => {
                let mut assigned = BTreeSet::new();
                for assignment in &update.assignments {
                    let AssignmentTarget::ColumnName(column) = &assignment.target else {
                        return Err(SqlError::Unsupported(
                            "UPDATE assigns one column at a time".to_owned(),
                        ));
                    };
                    let name = object_name(column).map_err(SqlError::Syntax)?;
                    if let Some(last) = name.last() {
                        assigned.insert(last.clone());
                    }
                }
                Ok(Target {
                    name: single_table(std::slice::from_ref(&update.table), "UPDATE")?,
                    delete: false,
                    reads_values: true,
                    assigned,
                })
            }
            _ => Err(SqlError::Internal("not a DELETE or UPDATE".to_owned())),
        }
    }
}

fn single_table(from: &[TableWithJoins], verb: &str) -> Result<ObjectName, SqlError> {
    match from {
        [
            TableWithJoins {
                relation: TableFactor::Table { name, .. },
                joins,
            },
        ] if joins.is_empty() => Ok(name.clone()),
        _ => Err(SqlError::Unsupported(format!(
            "{verb} changes exactly one table; use a subquery in WHERE to refer to others"
        ))),
    }
}

/// The WHERE predicate of a planned DELETE or UPDATE and the relation it was planned against.
fn split_filter(plan: &LogicalPlan) -> (Option<Expr>, &LogicalPlan) {
    match plan {
        LogicalPlan::Filter(filter) => (Some(filter.predicate.clone()), filter.input.as_ref()),
        other => (None, other),
    }
}

fn unqualified(name: String) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

impl Run<'_> {
    pub(super) async fn modify(&self, statement: Statement) -> Result<StatementResult, SqlError> {
        let target = Target::of(&statement)?;
        let name = object_name(&target.name).map_err(SqlError::Syntax)?;
        let full_name = self.qualify(&name, 3)?;
        let (record, securable) = self
            .visible(SecurableKind::Table, &full_name)
            .ok_or_else(|| SqlError::TableNotFound(full_name.clone()))?;
        if securable.kind() != SecurableKind::Table {
            return Err(SqlError::InvalidInput(format!(
                "`{full_name}` is a view; DELETE and UPDATE change tables"
            )));
        }
        let denied = |privilege: &str| {
            SqlError::PermissionDenied(format!("`{privilege}` on table `{full_name}` is required"))
        };
        let access = match full_name.split('.').collect::<Vec<_>>().as_slice() {
            [catalog, schema, table] => self.context.access(catalog, schema, table),
            _ => None,
        }
        .ok_or_else(|| denied("MODIFY"))?;
        if !access.write {
            return Err(denied("MODIFY"));
        }
        if target.reads_values && !access.read {
            return Err(denied("SELECT"));
        }
        // Held until the new version is committed: an append in between would land in the replaced version.
        let _lock = self.shared.locks.lock(record.id).await?;
        // Opened and planned under the lock, so the version read is the one replaced.
        let table = self.context.open_table(record, access)?;
        let (state, plan) = self.plan(statement).await?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(SqlError::Internal(
                "DELETE or UPDATE did not plan as DML".to_owned(),
            ));
        };
        let (predicate, relation, values) = match (&dml.op, dml.input.as_ref()) {
            (WriteOp::Delete, input) => {
                let (predicate, relation) = split_filter(input);
                (predicate, relation, None)
            }
            (WriteOp::Update, LogicalPlan::Projection(projection)) => {
                let (predicate, relation) = split_filter(&projection.input);
                (predicate, relation, Some(&projection.expr))
            }
            _ => {
                return Err(SqlError::Internal(format!(
                    "unexpected plan for {}",
                    dml.op
                )));
            }
        };
        let schema = table.schema();
        let width = schema.fields().len();
        if let Some(predicate) = &predicate
            && predicate.is_volatile()
        {
            // The branches below evaluate the predicate separately; they must agree on every row.
            return Err(SqlError::Unsupported(
                "a WHERE clause calling a non-deterministic function (rand(), uuid()...) is not supported in \
                 DELETE or UPDATE"
                    .to_owned(),
            ));
        }
        let hit = predicate.map(Expr::is_true);
        let stored = |index: usize| -> Expr {
            unqualified(format!("{STORED_PREFIX}{index}")).alias(schema.field(index).name())
        };
        let unchanged = || -> Vec<Expr> {
            (0..width)
                .map(stored)
                .chain([lit(false).alias(HIT)])
                .collect()
        };
        let mut new_values = Vec::with_capacity(width + 1);
        for (index, field) in schema.fields().iter().enumerate() {
            let value = match values {
                Some(values) if target.assigned.contains(field.name()) => {
                    values.get(index).cloned().ok_or_else(|| {
                        SqlError::Internal(format!("no new value for column `{}`", field.name()))
                    })?
                }
                _ => stored(index),
            };
            new_values.push(value);
        }
        new_values.push(lit(true).alias(HIT));
        // Scanned under the name the statement's expressions were resolved against: the table's, or its alias.
        let qualifier = relation
            .schema()
            .iter()
            .next()
            .and_then(|(qualifier, _)| qualifier.cloned())
            .unwrap_or_else(|| TableReference::from(full_name.as_str()));
        let table = Arc::new(table);
        let scan = |rows: DmlRows| {
            let source = Arc::new(DmlSource::new(Arc::clone(&table), rows));
            LogicalPlanBuilder::scan(qualifier.clone(), provider_as_source(source), None)
        };
        let mut hits = scan(DmlRows::Visible)?;
        let mut others = Vec::new();
        if let Some(hit) = hit {
            hits = hits.filter(hit.clone())?;
            others.push(
                scan(DmlRows::Visible)?
                    .filter(Expr::Not(Box::new(hit)))?
                    .project(unchanged())?
                    .build()?,
            );
        }
        if table
            .policy
            .as_ref()
            .is_some_and(|policy| policy.row_filter.is_some())
        {
            others.push(scan(DmlRows::Hidden)?.project(unchanged())?.build()?);
        }
        let mut plan = hits.project(new_values)?;
        for other in others {
            plan = plan.union(other)?;
        }
        let plan = plan.build()?;

        let frame = SessionContext::new_with_state(state)
            .execute_logical_plan(plan)
            .await?;
        let mut stream = frame.execute_stream().await?;
        let version = self.shared.files.new_version(record.id)?;
        let mut file = ParquetFile::create(version.directory(), &schema)?;
        let columns: Vec<usize> = (0..width).collect();
        let mut affected = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let hits = batch
                .columns()
                .get(width)
                .and_then(|column| column.as_any().downcast_ref::<BooleanArray>())
                .ok_or_else(|| SqlError::Internal("the rewrite lost its hit column".to_owned()))?;
            affected += hits.true_count();
            let rows = batch.project(&columns).map_err(internal)?;
            let rows = if target.delete {
                filter_record_batch(&rows, &not(hits).map_err(internal)?).map_err(internal)?
            } else {
                rows
            };
            file.write(&rows)?;
        }
        // Nothing to change: the unused version is deleted when dropped.
        if affected > 0 {
            file.finish()?;
            version.commit()?;
        }
        affected_rows(affected)
    }
}

fn internal(error: impl std::fmt::Display) -> SqlError {
    SqlError::Internal(error.to_string())
}

/// The result Databricks returns for DML: one row, `num_affected_rows`.
fn affected_rows(count: usize) -> Result<StatementResult, SqlError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "num_affected_rows",
        DataType::Int64,
        false,
    )]));
    let count = Int64Array::from(vec![i64::try_from(count).unwrap_or(i64::MAX)]);
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(count) as ArrayRef])
        .map_err(internal)?;
    Ok(StatementResult {
        schema,
        batches: vec![batch],
        changes: Vec::new(),
    })
}
