//! The server's public API as tools use it: declarative agents' tools and the managed MCP servers both reach data
//! only through it (a request with a token, through the same authentication, scope check, authorization and audit
//! as any client's), and share here how a tool's call becomes a request and its answer a result.

use deputy_access::Caller;
use deputy_store::specs::{FunctionParameterSpec, FunctionSpec};
use serde_json::{Map, Value, json};

/// The server's REST API as tools use it; the server implements it in process on its route table.
#[async_trait::async_trait]
pub trait PublicApi: Send + Sync {
    /// `POST path` with `body` and `Authorization: Bearer token`; the answer's body, or its Databricks error.
    async fn post(&self, token: &str, path: &str, body: &Value) -> Result<Value, CallError>;

    /// `GET path` (with its query) and `Authorization: Bearer token`; the answer's body, or its Databricks error.
    async fn get(&self, token: &str, path: &str) -> Result<Value, CallError>;

    /// The declaration of a Unity Catalog function (parameters, scalar or table), asked only for a tool the acting
    /// principal was found to hold `EXECUTE` on (the tool's token holds the SQL scope only, not the catalog's).
    async fn function_spec(&self, name: &str) -> Result<FunctionSpec, CallError>;

    /// Records that the model asked `acting`'s agent for `tool`, which it does not offer here; an error means the
    /// refusal could not be recorded.
    async fn refuse_tool(
        &self,
        acting: &Caller,
        endpoint: &str,
        tool: &str,
        reason: &str,
    ) -> Result<(), String>;
}

/// An error answer of this server's API, as a tool reports it.
#[derive(Debug)]
pub struct CallError {
    pub error_code: String,
    pub message: String,
}

/// One statement a tool runs on a warehouse, with its named parameters, keeping at most `max_rows` rows.
pub struct StatementRequest<'a> {
    pub warehouse_id: &'a str,
    pub statement: &'a str,
    pub parameters: Vec<Value>,
    pub max_rows: u32,
}

/// Runs SQL through the statement-execution API and renders the rows as JSON text: `columns`, `rows`, `truncated`.
pub async fn run_statement(
    api: &dyn PublicApi,
    token: &str,
    request: &StatementRequest<'_>,
) -> Result<String, CallError> {
    let body = json!({
        "statement": request.statement,
        "warehouse_id": request.warehouse_id,
        "parameters": request.parameters,
        "wait_timeout": "50s",
        "on_wait_timeout": "CANCEL",
        "row_limit": request.max_rows,
    });
    let answer = api.post(token, "/api/2.0/sql/statements", &body).await?;
    match answer["status"]["state"].as_str() {
        Some("SUCCEEDED") => {
            let columns: Vec<Value> = answer["manifest"]["schema"]["columns"]
                .as_array()
                .map(|columns| {
                    columns
                        .iter()
                        .map(|column| column["name"].clone())
                        .collect()
                })
                .unwrap_or_default();
            Ok(json!({
                "columns": columns,
                "rows": answer["result"]["data_array"],
                "truncated": answer["manifest"]["truncated"],
            })
            .to_string())
        }
        state => Err(CallError {
            error_code: answer["status"]["error"]["error_code"]
                .as_str()
                .unwrap_or("STATEMENT_FAILED")
                .to_owned(),
            message: answer["status"]["error"]["message"].as_str().map_or_else(
                || format!("the statement ended {}", state.unwrap_or("unknown")),
                str::to_owned,
            ),
        }),
    }
}

/// A vector-search answer as a list of hits, each an object of the requested columns and the score.
pub fn vector_hits(answer: &Value) -> Value {
    let names: Vec<&str> = answer["manifest"]["columns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .filter_map(|column| column["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let rows = answer["result"]["data_array"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|row| {
                let cells = row.as_array().cloned().unwrap_or_default();
                Value::Object(
                    names
                        .iter()
                        .zip(cells)
                        .map(|(name, cell)| ((*name).to_owned(), cell))
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The function's parameters as a JSON schema.
pub fn function_parameters(parameters: &[FunctionParameterSpec]) -> Value {
    let properties: Map<String, Value> = parameters
        .iter()
        .map(|parameter| {
            let kind = match parameter.type_name.to_ascii_uppercase().as_str() {
                "INT" | "LONG" | "SHORT" | "BYTE" => "integer",
                "FLOAT" | "DOUBLE" | "DECIMAL" => "number",
                "BOOLEAN" => "boolean",
                _ => "string",
            };
            let mut schema = json!({ "type": kind });
            if let Some(comment) = &parameter.comment {
                schema["description"] = json!(comment);
            }
            (parameter.name.clone(), schema)
        })
        .collect();
    let required: Vec<&str> = parameters
        .iter()
        .map(|parameter| parameter.name.as_str())
        .collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// `SELECT catalog.schema.fn(:a, :b) AS result` and its named parameters, typed as the function declares them, from
/// the model's arguments (a missing one is NULL).
pub fn function_call(spec: &FunctionSpec, name: &str, arguments: &Value) -> (String, Vec<Value>) {
    let mut placeholders = Vec::new();
    let mut parameters = Vec::new();
    for parameter in &spec.input_params {
        placeholders.push(format!(":{}", parameter.name));
        let value = match &arguments[&parameter.name] {
            Value::Null => Value::Null,
            Value::String(text) => json!(text),
            other => json!(other.to_string()),
        };
        parameters
            .push(json!({ "name": parameter.name, "value": value, "type": parameter.type_text }));
    }
    // INVARIANT: `name` was checked to be three plain identifiers when the agent was deployed.
    let call = format!("{name}({})", placeholders.join(", "));
    let statement = if spec.is_table_function() {
        format!("SELECT * FROM {call}")
    } else {
        format!("SELECT {call} AS result")
    };
    (statement, parameters)
}
