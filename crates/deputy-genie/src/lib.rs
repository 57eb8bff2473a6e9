//! Answering a Genie question, in the background after the POST that asked it returned:
//!
//! ```text
//! SUBMITTED -> FETCHING_METADATA: the space's tables the asking user may SELECT (decided as the SQL engine decides)
//!           -> ASKING_AI: the space's model gets the instructions, examples and ONLY those tables' schemas
//!           -> EXECUTING_QUERY: the SQL it wrote runs on the space's warehouse AS THE USER (grants, row filters,
//!              masks apply), through the statement engine, so its statement id works with the statement API
//!           -> COMPLETED (query + text + suggested questions)
//!            | FAILED: no readable table, model unavailable, or SQL still failing after MAX_REPAIRS repairs
//! ```
//! A failing or writing SQL goes back to the model with the error, at most [`MAX_REPAIRS`] times. Only a single
//! read-only query is ever run (`deputy_sql::is_read_only_query`), so no question changes data, whatever the user
//! could do with SQL themselves.
//!
//! **Invariants:** the SQL runs as the asking user (their grants, row filters and masks), never as the space's owner;
//! the model sees only the schemas of tables the user may read; every query is audited for the user and the agents
//! acting for them.

use deputy_access::{Access, Caller, Error};
use deputy_authz::{
    AccessRequest, Action, PermissionLevel, SecurableKind, SecurableRef, WorkspaceObjectKind,
    WorkspaceObjectRef, decide,
};
use deputy_core::{ApiScope, ScopeSet};
use deputy_models::types::ChatCompletionResponse;
use deputy_models::types::{ChatCompletionRequest, ChatMessage};
use deputy_store::PrincipalId;
use deputy_store::catalog::SecurableRecord;
use deputy_store::catalog::WorkspaceObjectRecord;
use deputy_store::genie::MessageRecord;
use deputy_store::specs::TableSpec;
use deputy_warehouse::{Limits, Outcome, StatementEntry, Warehouse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A chat model behind a serving endpoint, as the server serves it. Genie calls the space's model as the space's
/// owner chose it (see `model_endpoint`), never with the asking user's token.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    async fn chat(
        &self,
        endpoint: &WorkspaceObjectRecord,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, Error>;
}

/// What answering a question needs: the kernel it decides and audits with, the statement runtime its SQL runs on,
/// and the space's chat model. Cheap to build per question.
pub struct Genie {
    access: Arc<Access>,
    warehouse: Arc<Warehouse>,
    chat: Arc<dyn ChatModel>,
}

impl Genie {
    pub fn new(access: Arc<Access>, warehouse: Arc<Warehouse>, chat: Arc<dyn ChatModel>) -> Genie {
        Genie {
            access,
            warehouse,
            chat,
        }
    }

    fn access(&self) -> &Access {
        &self.access
    }

    fn warehouse(&self) -> &Arc<Warehouse> {
        &self.warehouse
    }
}

/// How many times a failing SQL goes back to the model before the message fails.
pub const MAX_REPAIRS: usize = 2;
/// Suggested questions offered with an answer.
const MAX_SUGGESTIONS: usize = 3;

/// What a space holds, stored as its workspace object's `spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceSpec {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub warehouse_id: String,
    /// Three-level names of the tables and views questions are answered from.
    pub table_identifiers: Vec<String>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub examples: Vec<Example>,
    /// The serving endpoint (by id, so a rename does not break the space) whose chat model writes the SQL.
    pub serving_endpoint_id: String,
    pub updated_at: i64,
}

/// A question with the SQL that answers it, shown to the model as an example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Example {
    pub question: String,
    pub sql: String,
}

/// What answering a message produced, stored as the message's `outcome` and rendered as its attachments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageOutcome {
    #[serde(default)]
    pub query: Option<QueryAttachment>,
    #[serde(default)]
    pub text: Option<TextAttachment>,
    #[serde(default)]
    pub suggested_questions: Vec<String>,
    #[serde(default)]
    pub suggestions_id: Option<String>,
    #[serde(default)]
    pub error: Option<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryAttachment {
    pub attachment_id: String,
    pub sql: String,
    pub description: String,
    /// The statement that ran `sql` for the asking user; re-running the attachment replaces it.
    #[serde(default)]
    pub statement_id: Option<String>,
    #[serde(default)]
    pub row_count: Option<usize>,
    #[serde(default)]
    pub is_truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextAttachment {
    pub attachment_id: String,
    pub content: String,
}

/// Why a message failed: `kind` is a Databricks `MessageErrorType`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

impl Failure {
    fn new(kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A question to answer: the space it was asked in, the message that holds it, and the conversation so far.
pub struct Question {
    pub space_id: String,
    pub space: SpaceSpec,
    pub space_owner: PrincipalId,
    pub message: MessageRecord,
    /// The conversation's earlier messages, oldest first: their questions and SQL give follow-ups their context.
    pub history: Vec<MessageRecord>,
}

/// Answers `question` for `caller` in a background task; its progress and result are stored on the message.
pub fn spawn_answer(state: &Arc<Genie>, caller: Caller, question: Question) {
    let state = state.clone();
    tokio::spawn(async move { answer(&state, &caller, &question).await });
}

/// The message's status and outcome as processing moves on, written to the store at every step so a poll sees it.
struct Progress<'a> {
    state: &'a Genie,
    message_id: &'a str,
    outcome: MessageOutcome,
}

impl Progress<'_> {
    async fn set(&self, status: &str) {
        let stored = match serde_json::to_string(&self.outcome) {
            Ok(outcome) => {
                self.state
                    .access()
                    .store()
                    .update_message(
                        self.message_id,
                        status,
                        &outcome,
                        deputy_access::clock::now_millis(),
                    )
                    .await
            }
            Err(error) => Err(deputy_store::StoreError::Corrupt(error.to_string())),
        };
        // Nobody waits on this task to hear the error: log it (the message then stays in its last stored status).
        if let Err(error) = stored {
            tracing::error!(message_id = self.message_id, %error, "cannot store a Genie message's progress");
        }
    }
}

/// Runs the whole pipeline and stores its end: COMPLETED, or FAILED with the reason.
pub async fn answer(state: &Genie, caller: &Caller, question: &Question) {
    let mut progress = Progress {
        state,
        message_id: &question.message.message_id,
        outcome: MessageOutcome::default(),
    };
    match run(&mut progress, caller, question).await {
        Ok(()) => progress.set("COMPLETED").await,
        Err(failure) => {
            audit_query(state, caller, question, &progress.outcome, Some(&failure)).await;
            progress.outcome.error = Some(failure);
            progress.set("FAILED").await;
        }
    }
}

async fn run(
    progress: &mut Progress<'_>,
    caller: &Caller,
    question: &Question,
) -> Result<(), Failure> {
    let state = progress.state;
    progress.set("FETCHING_METADATA").await;
    let tables = readable_tables(state, caller, &question.space).await?;
    let model = model_endpoint(state, question).await?;
    progress.set("ASKING_AI").await;
    let mut messages = prompt(&question.space, &tables, &question.history);
    messages.push(ChatMessage::new("user", question.message.content.clone()));
    let mut attempt = 0;
    loop {
        let request = ChatCompletionRequest {
            messages: messages.clone(),
            temperature: Some(0.0),
            ..ChatCompletionRequest::default()
        };
        let reply = state.chat.chat(&model, request).await.map_err(|error| {
            Failure::new(
                "CHAT_COMPLETION_CLIENT_EXCEPTION",
                format!(
                    "the space's model (serving endpoint `{}`) failed: {}",
                    model.name, error.message
                ),
            )
        })?;
        let answer = reply
            .choices
            .into_iter()
            .next()
            .map(|choice| choice.message.content)
            .unwrap_or_default();
        let sql = extract_sql(&answer);
        let error = match run_sql(progress, caller, question, &sql).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if attempt == MAX_REPAIRS {
            return Err(Failure::new(
                "SQL_EXECUTION_EXCEPTION",
                format!(
                    "the generated SQL still failed after {} attempts: {error}",
                    MAX_REPAIRS + 1
                ),
            ));
        }
        attempt += 1;
        progress.set("ASKING_AI").await;
        messages.push(ChatMessage::new("assistant", answer));
        messages.push(ChatMessage::new(
            "user",
            format!(
                "That SQL failed: {error}\nWrite a corrected query that answers: {}",
                question.message.content
            ),
        ));
    }
}

/// Runs one SQL answer as the asking user; on success the message's attachments are complete. The error is what the
/// model gets to repair.
async fn run_sql(
    progress: &mut Progress<'_>,
    caller: &Caller,
    question: &Question,
    sql: &str,
) -> Result<(), String> {
    let state = progress.state;
    match deputy_sql::is_read_only_query(sql) {
        Ok(true) => {}
        Ok(false) => {
            return Err("only one read-only query (SELECT, WITH or VALUES) may be run".into());
        }
        Err(error) => return Err(error.to_string()),
    }
    let (statement_id, entry) = run_statement(state, caller, sql);
    let attachment_id = progress
        .outcome
        .query
        .as_ref()
        .map_or_else(new_id, |query| query.attachment_id.clone());
    progress.outcome.query = Some(QueryAttachment {
        attachment_id,
        sql: sql.to_owned(),
        description: format!("Query answering: {}", question.message.content),
        statement_id: Some(statement_id),
        row_count: None,
        is_truncated: false,
    });
    progress.set("EXECUTING_QUERY").await;
    let result = match entry.finished().await {
        Outcome::Succeeded { result } => result,
        Outcome::Failed { message, .. } => return Err(message),
        Outcome::Canceled => return Err("the query was canceled".into()),
    };
    if let Some(query) = progress.outcome.query.as_mut() {
        query.row_count = Some(result.rows.len());
        query.is_truncated = result.truncated;
    }
    progress.outcome.text = Some(TextAttachment {
        attachment_id: new_id(),
        content: summary(&result.columns, &result.rows),
    });
    progress.outcome.suggested_questions = question
        .space
        .examples
        .iter()
        .map(|example| example.question.clone())
        .filter(|suggestion| !suggestion.eq_ignore_ascii_case(&question.message.content))
        .take(MAX_SUGGESTIONS)
        .collect();
    if !progress.outcome.suggested_questions.is_empty() {
        progress.outcome.suggestions_id = Some(new_id());
    }
    audit_query(state, caller, question, &progress.outcome, None).await;
    Ok(())
}

/// Submits `sql` as the caller on the statement engine: the statement is the caller's, visible through the statement
/// API under its id. Genie's token scope stands for the SQL it runs: the session decides with
/// `sql.statement-execution` only, so the user's Unity Catalog privileges, row filters and masks bound it.
pub fn run_statement(
    state: &Genie,
    caller: &Caller,
    sql: &str,
) -> (String, std::sync::Arc<StatementEntry>) {
    let warehouse = state.warehouse();
    let session = warehouse.session_of(caller, ScopeSet::from(ApiScope::SqlStatementExecution));
    warehouse.submit(session, sql.to_owned(), Vec::new(), Limits::default())
}

/// The table or view `name` names, as the SQL engine resolves names for a session's catalog.
pub async fn find_table(
    state: &Genie,
    name: &str,
) -> Result<Option<(SecurableRecord, SecurableRef)>, Error> {
    let record = state
        .access()
        .store()
        .find_securable(
            deputy_catalog::namespace_of(SecurableKind::Table),
            &name.to_ascii_lowercase(),
        )
        .await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let securable = deputy_catalog::securable_ref(&record).map_err(Error::internal)?;
    Ok(
        matches!(securable.kind(), SecurableKind::Table | SecurableKind::View)
            .then_some((record, securable)),
    )
}

/// The space's tables the caller may read, with their columns, decided exactly as the SQL engine decides what a
/// session's catalog holds. None readable fails the message with what is missing.
async fn readable_tables(
    state: &Genie,
    caller: &Caller,
    space: &SpaceSpec,
) -> Result<Vec<(String, TableSpec)>, Failure> {
    let mut readable = Vec::new();
    let mut missing = Vec::new();
    for name in &space.table_identifiers {
        let found = find_table(state, name)
            .await
            .map_err(|error| Failure::new("COULD_NOT_GET_UC_SCHEMA_EXCEPTION", error.message))?;
        let Some((record, securable)) = found else {
            missing.push(format!("`{name}` does not exist"));
            continue;
        };
        let decision = state.access().decide(
            caller,
            ApiScope::DashboardsGenie,
            Action::ReadTable(securable),
        );
        if !decision.is_allowed() {
            let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
            missing.push(reasons.join("; "));
            continue;
        }
        let spec: TableSpec = serde_json::from_str(&record.spec).map_err(|error| {
            Failure::new("COULD_NOT_GET_UC_SCHEMA_EXCEPTION", error.to_string())
        })?;
        readable.push((record.full_name.clone(), spec));
    }
    if readable.is_empty() {
        return Err(Failure::new(
            "NO_TABLES_TO_QUERY_EXCEPTION",
            format!(
                "{} cannot read any table of this space: {}",
                caller.identity.name,
                missing.join("; ")
            ),
        ));
    }
    Ok(readable)
}

/// The space's model endpoint, which its owner must still be allowed to query: the owner chose it and vouches for
/// it, as for the warehouse on Databricks; askers need only `CAN_RUN` on the space.
async fn model_endpoint(
    state: &Genie,
    question: &Question,
) -> Result<WorkspaceObjectRecord, Failure> {
    let unavailable = |why: String| {
        Failure::new(
            "CHAT_COMPLETION_CLIENT_EXCEPTION",
            format!("the space's model is unavailable: {why}"),
        )
    };
    let endpoint_id = &question.space.serving_endpoint_id;
    let record = state
        .access()
        .store()
        .get_workspace_object(
            deputy_catalog::object_type_of(WorkspaceObjectKind::ServingEndpoint),
            endpoint_id,
        )
        .await
        .map_err(|error| unavailable(error.to_string()))?
        .ok_or_else(|| unavailable(format!("serving endpoint `{endpoint_id}` no longer exists")))?;
    let request = AccessRequest {
        principal: deputy_catalog::principal_id(question.space_owner),
        token_scopes: ScopeSet::all(),
        required_scope: ApiScope::ServingEndpoints,
        action: Action::UseWorkspaceObject {
            object: WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, endpoint_id),
            level: PermissionLevel::CanQuery,
        },
    };
    let decision = decide(&request, &state.access().snapshot());
    match decision.is_allowed() {
        true => Ok(record),
        false => Err(unavailable(format!(
            "the space's owner may no longer query serving endpoint `{}` ({decision})",
            record.name
        ))),
    }
}

/// The conversation so far for the model: a system prompt with the instructions, the readable tables' schemas and
/// the examples, then each earlier question with the SQL that answered it.
fn prompt(
    space: &SpaceSpec,
    tables: &[(String, TableSpec)],
    history: &[MessageRecord],
) -> Vec<ChatMessage> {
    let mut system = String::from(
        "You translate questions about data into one Databricks SQL query. Answer with the SQL only: a single \
         read-only SELECT statement, no explanation. Use only these tables, with their three-level names.\n",
    );
    if let Some(instructions) = space
        .instructions
        .as_deref()
        .filter(|text| !text.is_empty())
    {
        system.push_str("\nInstructions:\n");
        system.push_str(instructions);
        system.push('\n');
    }
    system.push_str("\nTables:\n");
    for (name, spec) in tables {
        let columns: Vec<String> = spec
            .columns
            .iter()
            .map(|column| match &column.comment {
                Some(comment) => {
                    format!("{} {} COMMENT '{comment}'", column.name, column.type_text)
                }
                None => format!("{} {}", column.name, column.type_text),
            })
            .collect();
        system.push_str(&format!("{name} ({})\n", columns.join(", ")));
    }
    if !space.examples.is_empty() {
        system.push_str("\nExamples:\n");
        for example in &space.examples {
            system.push_str(&format!("Q: {}\nSQL: {}\n", example.question, example.sql));
        }
    }
    let mut messages = vec![ChatMessage::new("system", system)];
    for earlier in history {
        let Ok(outcome) = serde_json::from_str::<MessageOutcome>(&earlier.outcome) else {
            continue;
        };
        if let Some(query) = outcome.query.filter(|_| outcome.error.is_none()) {
            messages.push(ChatMessage::new("user", earlier.content.clone()));
            messages.push(ChatMessage::new("assistant", query.sql));
        }
    }
    messages
}

/// The SQL in a model's answer: the first fenced block if there is one, else the whole answer; without a final `;`.
fn extract_sql(answer: &str) -> String {
    let fenced = answer.split("```").nth(1).map(|block| {
        // What follows the opening fence on its own line is a language tag (or nothing).
        match block.split_once('\n') {
            Some((tag, rest)) if !tag.trim().contains(char::is_whitespace) => rest,
            _ => block,
        }
    });
    fenced
        .unwrap_or(answer)
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_owned()
}

/// A one-sentence answer from the result: the values of a single row, else the row count.
fn summary(columns: &[serde_json::Value], rows: &[Vec<Option<String>>]) -> String {
    match rows {
        [] => "The query returned no rows.".into(),
        [row] => {
            let values: Vec<String> = columns
                .iter()
                .zip(row)
                .map(|(column, value)| {
                    format!(
                        "{} = {}",
                        column["name"].as_str().unwrap_or("?"),
                        value.as_deref().unwrap_or("NULL")
                    )
                })
                .collect();
            format!("The answer is {}.", values.join(", "))
        }
        many => format!("The query returned {} rows.", many.len()),
    }
}

/// Records the SQL a question ran for its user (or why it failed), with the actor chain when an agent asked.
async fn audit_query(
    state: &Genie,
    caller: &Caller,
    question: &Question,
    outcome: &MessageOutcome,
    failure: Option<&Failure>,
) {
    let sql = outcome.query.as_ref().map(|query| query.sql.as_str());
    let reason = match (failure, sql) {
        (Some(failure), Some(sql)) => {
            format!("question failed: {}; last SQL: {sql}", failure.message)
        }
        (Some(failure), None) => format!("question failed: {}", failure.message),
        (None, sql) => format!(
            "ran as {}: {}",
            caller.identity.name,
            sql.unwrap_or_default()
        ),
    };
    let entry = question_event(state, caller, &question.space_id, "genie.query");
    let event = match failure {
        None => entry.allowed(reason),
        Some(_) => entry.denied(reason),
    };
    if let Err(error) = state.access().record(&[event]).await {
        tracing::error!(message = %error.message, "cannot audit a Genie query");
    }
}

/// An audit event about a question in a space, for the end user and the agents acting for them.
pub fn question_event(
    state: &Genie,
    caller: &Caller,
    space_id: &str,
    api: &str,
) -> deputy_access::audit::AuditEntry {
    state
        .access()
        .audit_entry(caller, api)
        .scope(ApiScope::DashboardsGenie)
        .securable(format!("genie/{space_id}"))
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_taken_from_fences_or_the_whole_answer() {
        assert_eq!(extract_sql("SELECT 1;"), "SELECT 1");
        assert_eq!(
            extract_sql("Here:\n```sql\nSELECT region FROM t;\n```\nDone"),
            "SELECT region FROM t"
        );
        assert_eq!(extract_sql("```\nSELECT 2\n```"), "SELECT 2");
        assert_eq!(extract_sql("```\nSELECT\n  3\n```"), "SELECT\n  3");
    }

    #[test]
    fn one_row_is_spelled_out_and_more_are_counted() {
        let columns = vec![serde_json::json!({ "name": "total" })];
        assert_eq!(
            summary(&columns, &[vec![Some("40.0".into())]]),
            "The answer is total = 40.0."
        );
        assert_eq!(
            summary(&columns, &[vec![None], vec![None]]),
            "The query returned 2 rows."
        );
        assert_eq!(summary(&columns, &[]), "The query returned no rows.");
    }
}
