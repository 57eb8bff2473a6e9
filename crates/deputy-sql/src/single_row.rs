//! `single_value`: the aggregate that makes a function's scalar subquery callable per row of the caller's query.
//!
//! A scalar subquery answers one value, and an error when it finds more than one row (Databricks:
//! `SCALAR_SUBQUERY_TOO_MANY_ROWS`). DataFusion decorrelates a correlated scalar subquery only when it is
//! aggregated, so `lookup_email(id)` with the body `(SELECT email FROM customers WHERE id = cid)` could not be called
//! as `SELECT lookup_email(o.customer_id) FROM orders o`. Wrapping such a subquery in `single_value(email)` keeps its
//! meaning (no row: NULL, one row: its value, more: the error) in a shape the optimiser turns into a join.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature,
    Subquery, Volatility,
};

/// Wraps every scalar subquery of `expr` that is not already one aggregate row in [`SingleValue`].
pub(crate) fn single_row_subqueries(expr: Expr) -> DfResult<Expr> {
    Ok(expr
        .transform_up(|expr| match expr {
            Expr::ScalarSubquery(subquery) if !is_one_row(&subquery.subquery) => Ok(
                Transformed::yes(Expr::ScalarSubquery(single_row(subquery)?)),
            ),
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

/// An aggregate without grouping, under projections: exactly one row.
fn is_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(projection) => is_one_row(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => is_one_row(&alias.input),
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.is_empty(),
        _ => false,
    }
}

fn single_row(subquery: Subquery) -> DfResult<Subquery> {
    let plan = Arc::unwrap_or_clone(subquery.subquery);
    let (qualifier, field) = plan.schema().qualified_field(0);
    let name = field.name().clone();
    let value = Expr::Column(Column::from((qualifier, field)));
    let aggregate = AggregateUDF::new_from_impl(SingleValue::default())
        .call(vec![value])
        .alias(name);
    let plan = LogicalPlanBuilder::from(plan)
        .aggregate(Vec::<Expr>::new(), vec![aggregate])?
        .build()?;
    Ok(Subquery {
        subquery: Arc::new(plan),
        outer_ref_columns: subquery.outer_ref_columns,
        spans: subquery.spans,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleValue {
    signature: Signature,
}

impl Default for SingleValue {
    fn default() -> SingleValue {
        SingleValue {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SingleValue {
    fn name(&self) -> &str {
        "single_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("single_value takes one argument".to_owned()))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(SingleValueAccumulator {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(
                args.return_field
                    .as_ref()
                    .clone()
                    .with_name(format_state_name(args.name, "value"))
                    .with_nullable(true),
            ),
            Arc::new(Field::new(
                format_state_name(args.name, "rows"),
                DataType::UInt64,
                false,
            )),
        ])
    }
}

#[derive(Debug)]
struct SingleValueAccumulator {
    value: ScalarValue,
    rows: u64,
}

impl SingleValueAccumulator {
    fn take(&mut self, values: &ArrayRef, index: usize, rows: u64) -> DfResult<()> {
        self.rows += rows;
        if self.rows > 1 {
            return Err(DataFusionError::Execution(
                "[SCALAR_SUBQUERY_TOO_MANY_ROWS] a subquery used as a value returned more than one row"
                    .to_owned(),
            ));
        }
        self.value = ScalarValue::try_from_array(values, index)?;
        Ok(())
    }
}

impl Accumulator for SingleValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        for index in 0..values.len() {
            self.take(values, index, 1)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let [values, rows] = states else {
            return Err(DataFusionError::Internal(
                "single_value merges a value and a row count".to_owned(),
            ));
        };
        let rows = rows.as_primitive::<UInt64Type>();
        for index in 0..values.len() {
            if rows.value(index) > 0 {
                self.take(values, index, rows.value(index))?;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(self.value.clone())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::UInt64(Some(self.rows)),
        ])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}
