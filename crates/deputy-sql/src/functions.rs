//! Scalar functions built per session: the identity functions (`current_user()`, `is_account_group_member()`),
//! which answer for the session's end user, and Unity Catalog SQL functions compiled from their stored body.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use deputy_store::specs::FunctionSpec;

use crate::SqlError;
use crate::types::arrow_type;

/// Who `current_user()` and `is_account_group_member()` describe: the session's end user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub(crate) user_name: String,
    /// Sorted, so membership is a binary search.
    pub(crate) groups: Vec<String>,
}

impl Identity {
    pub(crate) fn new(user_name: &str, groups: &[String]) -> Identity {
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        Identity {
            user_name: user_name.to_owned(),
            groups,
        }
    }

    /// The identity functions bound to this identity. Registering them replaces nothing built in: DataFusion has no
    /// `current_user` or `is_account_group_member`.
    ///
    /// They are `Immutable` because a session lives for one statement and never changes user: the planner may fold
    /// them to constants, so a policy such as `is_account_group_member('admins') OR region = 'EU'` costs nothing per
    /// row for an admin. Plans are never cached across sessions, which is what makes this sound.
    pub(crate) fn functions(self: &Arc<Identity>) -> Vec<Arc<ScalarUDF>> {
        vec![
            Arc::new(ScalarUDF::new_from_impl(CurrentUser {
                identity: Arc::clone(self),
                signature: Signature::nullary(Volatility::Immutable),
            })),
            Arc::new(ScalarUDF::new_from_impl(IsAccountGroupMember {
                identity: Arc::clone(self),
                signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
            })),
        ]
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentUser {
    identity: Arc<Identity>,
    signature: Signature,
}

impl ScalarUDFImpl for CurrentUser {
    fn name(&self) -> &str {
        "current_user"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.identity.user_name.clone(),
        ))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IsAccountGroupMember {
    identity: Arc<Identity>,
    signature: Signature,
}

impl IsAccountGroupMember {
    fn is_member(&self, group: &str) -> bool {
        self.identity
            .groups
            .binary_search_by(|held| held.as_str().cmp(group))
            .is_ok()
    }
}

impl ScalarUDFImpl for IsAccountGroupMember {
    fn name(&self) -> &str {
        "is_account_group_member"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Scalar(ScalarValue::Utf8(group))) => Ok(ColumnarValue::Scalar(
                ScalarValue::Boolean(group.as_deref().map(|group| self.is_member(group))),
            )),
            Some(ColumnarValue::Array(array)) => {
                let groups = cast(array, &DataType::Utf8)?;
                let groups = groups
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .ok_or_else(|| {
                        DataFusionError::Internal("group names are not strings".to_owned())
                    })?;
                let members: BooleanArray = groups
                    .iter()
                    .map(|group| group.map(|group| self.is_member(group)))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(members)))
            }
            _ => Err(DataFusionError::Plan(
                "is_account_group_member expects one string argument".to_owned(),
            )),
        }
    }
}

/// A Unity Catalog SQL function (`RETURN <expr>`), compiled once per session: the body is planned against a schema
/// made of the parameters, and each call evaluates it over a batch built from the arguments. Nothing is inlined as
/// text, so a body behaves exactly as the same expression written in a query.
#[derive(Debug)]
pub(crate) struct SqlFunction {
    name: String,
    signature: Signature,
    parameters: SchemaRef,
    parameter_types: Vec<DataType>,
    return_type: DataType,
    body: Arc<dyn PhysicalExpr>,
}

impl PartialEq for SqlFunction {
    fn eq(&self, other: &SqlFunction) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.body, &other.body)
    }
}

impl Eq for SqlFunction {}

impl Hash for SqlFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Compiles a stored function. `planner` must know the functions a body may call: the built-ins and the identity
/// functions, nothing from the catalog (bodies run with their definer's rights, which this engine does not extend
/// to other catalog functions).
pub(crate) fn compile_function(
    full_name: &str,
    spec: &FunctionSpec,
    planner: &SessionState,
) -> Result<ScalarUDF, SqlError> {
    let mut fields = Vec::with_capacity(spec.input_params.len());
    let mut parameters: Vec<_> = spec.input_params.iter().collect();
    parameters.sort_by_key(|parameter| parameter.position);
    for parameter in parameters {
        fields.push(Field::new(
            parameter.name.to_ascii_lowercase(),
            arrow_type(&parameter.type_text)?,
            true,
        ));
    }
    let types: Vec<DataType> = fields
        .iter()
        .map(|field| field.data_type().clone())
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
    let return_type = arrow_type(&spec.full_data_type)?;
    let body = planner
        .create_logical_expr(&spec.routine_definition, &df_schema)
        .map_err(|error| {
            SqlError::Analysis(format!(
                "the body of function `{full_name}`: {}",
                SqlError::from(error)
            ))
        })?;
    // Simplified before it is compiled: the identity functions are constants of the session, so folding them here
    // turns `CASE WHEN is_account_group_member('x') THEN e ELSE '***' END` into `e` or `'***'`, and a filter's
    // `is_account_group_member('admins') OR r = 'EU'` into `true` or `r = 'EU'`, instead of evaluating the branch
    // logic on every row of every batch.
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(df_schema.clone()))
            .with_config_options(Arc::clone(planner.config_options()))
            .build(),
    );
    let body = simplifier.simplify(simplifier.coerce(
        datafusion::logical_expr::cast(body, return_type.clone()),
        &df_schema,
    )?)?;
    let body = planner.create_physical_expr(body, &df_schema)?;
    Ok(ScalarUDF::new_from_impl(SqlFunction {
        name: full_name.to_owned(),
        signature: call_signature(&types),
        parameters: schema,
        parameter_types: types,
        return_type,
        body,
    }))
}

/// The signature of a catalog function: its arguments are checked and cast by [`coerce_arguments`].
pub(crate) fn call_signature(parameters: &[DataType]) -> Signature {
    if parameters.is_empty() {
        Signature::nullary(Volatility::Stable)
    } else {
        Signature::user_defined(Volatility::Stable)
    }
}

/// The types a call's arguments are cast to: the parameters' own, when each argument casts implicitly to its
/// parameter as Databricks casts function arguments (a number to another number, a string or NULL to anything that
/// can be read from it, a date to a timestamp). Anything else is refused when the call is planned.
pub(crate) fn coerce_arguments(
    function: &str,
    parameters: &[DataType],
    arguments: &[DataType],
) -> DfResult<Vec<DataType>> {
    if parameters.len() != arguments.len() {
        return Err(DataFusionError::Plan(format!(
            "`{function}` takes {} argument(s), not {}",
            parameters.len(),
            arguments.len()
        )));
    }
    for (position, (argument, parameter)) in arguments.iter().zip(parameters).enumerate() {
        if !casts_implicitly(argument, parameter) {
            return Err(DataFusionError::Plan(format!(
                "argument {} of `{function}` is {argument}; the parameter is {parameter}",
                position + 1
            )));
        }
    }
    Ok(parameters.to_vec())
}

fn casts_implicitly(from: &DataType, to: &DataType) -> bool {
    from == to
        || from.is_null()
        || (from.is_numeric() && to.is_numeric())
        || (matches!(
            from,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && can_cast_types(from, to))
        || (*from == DataType::Date32 && matches!(to, DataType::Timestamp(..)))
}

impl SqlFunction {
    /// The value of a body that folded to a constant for this session (see [`compile_function`]), such as a row
    /// filter `is_account_group_member('readers') OR region = 'EU'` for a member of `readers`.
    pub(crate) fn constant(&self) -> Option<&ScalarValue> {
        self.body
            .downcast_ref::<Literal>()
            .map(|literal| literal.value())
    }
}

impl ScalarUDFImpl for SqlFunction {
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

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .into_iter()
            .zip(self.parameters.fields())
            .map(|(argument, field)| {
                let array = argument.into_array(rows)?;
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    Ok(cast(&array, field.data_type())?)
                }
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.parameters),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        self.body.evaluate(&batch)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::FunctionRegistry;
    use datafusion::execution::session_state::SessionStateBuilder;
    use deputy_store::specs::FunctionParameterSpec;

    use super::*;

    fn compiled_body(groups: &[&str], body: &str) -> String {
        let identity = Arc::new(Identity::new(
            "reader",
            &groups
                .iter()
                .map(|group| group.to_string())
                .collect::<Vec<_>>(),
        ));
        let mut planner = SessionStateBuilder::new()
            .with_config(
                datafusion::prelude::SessionConfig::new()
                    .set_str("datafusion.sql_parser.dialect", "databricks"),
            )
            .with_default_features()
            .build();
        for function in identity.functions() {
            planner.register_udf(function).unwrap();
        }
        let spec = FunctionSpec {
            input_params: vec![FunctionParameterSpec {
                name: "e".to_owned(),
                type_text: "string".to_owned(),
                type_name: "STRING".to_owned(),
                position: 0,
                ..FunctionParameterSpec::default()
            }],
            return_params: Vec::new(),
            data_type: "STRING".to_owned(),
            full_data_type: "string".to_owned(),
            routine_body: "SQL".to_owned(),
            routine_definition: body.to_owned(),
            external_language: None,
            is_deterministic: true,
            sql_data_access: None,
        };
        let udf = compile_function("c.s.f", &spec, &planner).unwrap();
        let function = udf.inner().downcast_ref::<SqlFunction>().unwrap();
        function.body.to_string()
    }

    #[test]
    fn identity_functions_fold_to_constants_in_a_body() {
        let mask = "CASE WHEN is_account_group_member('readers') THEN e ELSE '***' END";
        assert_eq!(compiled_body(&["readers"], mask), "e@0");
        assert_eq!(compiled_body(&["others"], mask), "***");
        let by_user = "CASE WHEN current_user() = 'reader' THEN e ELSE NULL END";
        assert_eq!(compiled_body(&[], by_user), "e@0");
    }
}
