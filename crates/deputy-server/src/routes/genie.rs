//! Genie (`/api/2.0/genie/spaces`): spaces, and conversations in which a user asks questions about a space's tables
//! that the space's model answers with SQL run as that user (see `deputy_genie` for how a question is answered).
//!
//! A space is a workspace object of type `genie` (ACL at `/api/2.0/permissions/genie/{space_id}`, levels CAN_VIEW <
//! CAN_RUN < CAN_EDIT < CAN_MANAGE; its creator gets CAN_MANAGE). Reading a space needs CAN_VIEW; asking questions
//! and reading one's own conversations CAN_RUN (plus CAN_USE on the space's warehouse); changing it CAN_EDIT;
//! deleting it CAN_MANAGE. Databricks has no public routes to write spaces in the shape Deputy stores, so Deputy's
//! own are `POST /api/2.0/genie/spaces`, `PATCH` and `DELETE /api/2.0/genie/spaces/{space_id}` (the last two as the
//! SDK's `update_space` and `trash_space` call them). Conversations and messages belong to the user who started
//! them: anyone else is told they do not exist. Every route needs the `dashboards.genie` scope.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use crate::routes::statements;
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::Caller;
use deputy_access::error::decode_stored;
use deputy_authz::{Action, PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_catalog::object_type_of;
use deputy_core::ApiScope;
use deputy_genie::{ChatModel, Example, Genie, MessageOutcome, Question, SpaceSpec, new_id};
use deputy_serving::Serving;
use deputy_store::catalog::WorkspaceObjectRecord;
use deputy_store::genie::{ConversationRecord, MessageRecord};
use deputy_warehouse::Warehouse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const GENIE: Requires = Requires::Scope(ApiScope::DashboardsGenie);
const SPACE: &str = "/api/2.0/genie/spaces/{space_id}";
const CONVERSATION: &str = "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}";
const MESSAGE: &str =
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}";
/// Listing pages hold at most this many spaces or conversations.
const MAX_PAGE_SIZE: usize = 100;

/// The serving endpoints' models, as Genie's chat model.
struct ServingChat(Arc<Serving>);

#[async_trait::async_trait]
impl ChatModel for ServingChat {
    async fn chat(
        &self,
        endpoint: &WorkspaceObjectRecord,
        request: deputy_models::types::ChatCompletionRequest,
    ) -> Result<deputy_models::types::ChatCompletionResponse, Error> {
        deputy_serving::chat_on_endpoint(&self.0, endpoint, request).await
    }
}

/// Genie for one request: the kernel, the statement runtime and the serving endpoints' models.
fn genie(access: &Arc<Access>, warehouse: &Arc<Warehouse>, serving: &Arc<Serving>) -> Arc<Genie> {
    Arc::new(Genie::new(
        access.clone(),
        warehouse.clone(),
        Arc::new(ServingChat(serving.clone())),
    ))
}

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/genie/spaces", GENIE, create_space)
        .get("/api/2.0/genie/spaces", GENIE, list_spaces)
        .get(SPACE, GENIE, get_space)
        .patch(SPACE, GENIE, update_space)
        .delete(SPACE, GENIE, delete_space)
        .post(
            "/api/2.0/genie/spaces/{space_id}/start-conversation",
            GENIE,
            start_conversation,
        )
        .get(
            "/api/2.0/genie/spaces/{space_id}/conversations",
            GENIE,
            list_conversations,
        )
        .delete(CONVERSATION, GENIE, delete_conversation)
        .post(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages",
            GENIE,
            create_message,
        )
        .get(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages",
            GENIE,
            list_messages,
        )
        .get(MESSAGE, GENIE, get_message)
        .get(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}/query-result",
            GENIE,
            |a, w, s, c, p| attachment_query(a, w, s, c, p, false),
        )
        .post(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}/execute-query",
            GENIE,
            |a, w, s, c, p| attachment_query(a, w, s, c, p, true),
        )
        // Deprecated forms the older SDK calls and ai-bridge versions still use.
        .get(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/query-result",
            GENIE,
            message_query_result,
        )
        .get(
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/query-result/{attachment_id}",
            GENIE,
            |a, w, s, c, p| attachment_query(a, w, s, c, p, false),
        )
}

fn object_type() -> &'static str {
    object_type_of(WorkspaceObjectKind::GenieSpace)
}

fn space_action(space_id: &str, level: PermissionLevel) -> Action {
    Action::UseWorkspaceObject {
        object: WorkspaceObjectRef::new(WorkspaceObjectKind::GenieSpace, space_id),
        level,
    }
}

/// A space with its stored definition.
struct Space {
    record: WorkspaceObjectRecord,
    spec: SpaceSpec,
}

/// The space if the caller holds `level` on it; a space the caller cannot view does not exist for them.
async fn find_space(
    access: &Arc<Access>,
    caller: &Caller,
    space_id: &str,
    level: PermissionLevel,
) -> Result<Space, Error> {
    let missing = || Error::not_found(format!("Genie space `{space_id}` does not exist"));
    let record = access
        .store()
        .get_workspace_object(object_type(), space_id)
        .await?
        .ok_or_else(missing)?;
    access.authorize_workspace_object(
        caller,
        ApiScope::DashboardsGenie,
        WorkspaceObjectRef::new(WorkspaceObjectKind::GenieSpace, space_id),
        level,
        &format!("Genie space `{space_id}`"),
    )?;
    let spec = decode_stored("Genie space spec", &record.spec)?;
    Ok(Space { record, spec })
}

fn render_space(access: &Arc<Access>, space: &Space) -> Value {
    let spec = &space.spec;
    json!({
        "space_id": space.record.object_id,
        "title": spec.title,
        "description": spec.description,
        "warehouse_id": spec.warehouse_id,
        "table_identifiers": spec.table_identifiers,
        "instructions": spec.instructions,
        "examples": spec.examples.iter().map(|e| json!({ "question": e.question, "sql": e.sql })).collect::<Vec<_>>(),
        "sample_questions": spec.examples.iter().map(|e| e.question.clone()).collect::<Vec<_>>(),
        "serving_endpoint_id": spec.serving_endpoint_id,
        "creator_name": access.directory().get(space.record.owner_id).map(|owner| owner.name.clone()),
        "created_timestamp": space.record.created_at,
        "last_updated_timestamp": spec.updated_at,
    })
}

/// A create or update request: every field optional, so PATCH changes only what it names.
#[derive(Deserialize)]
struct SpaceInput {
    title: Option<String>,
    description: Option<String>,
    warehouse_id: Option<String>,
    table_identifiers: Option<Vec<String>>,
    instructions: Option<String>,
    examples: Option<Vec<ExampleInput>>,
    /// Deputy's extension: the serving endpoint, by name, whose chat model writes the SQL.
    serving_endpoint_name: Option<String>,
    /// The space in Databricks' export form, as the SDK's `create_space`/`update_space` send it; fields given
    /// directly take precedence.
    serialized_space: Option<String>,
}

/// The parts of Databricks' `serialized_space` export that Deputy keeps (text fields are lists of lines there),
/// and Deputy's own `deputy` section naming the model endpoint, which the export format has no place for.
#[derive(Default, Deserialize, serde::Serialize)]
struct SerializedSpace {
    #[serde(default)]
    version: i64,
    #[serde(default)]
    data_sources: DataSources,
    #[serde(default)]
    instructions: Instructions,
    #[serde(default)]
    deputy: DeputySection,
}

#[derive(Default, Deserialize, serde::Serialize)]
struct DataSources {
    #[serde(default)]
    tables: Vec<TableSource>,
}

#[derive(Deserialize, serde::Serialize)]
struct TableSource {
    identifier: String,
}

#[derive(Default, Deserialize, serde::Serialize)]
struct Instructions {
    #[serde(default)]
    text_instructions: Vec<TextInstruction>,
    #[serde(default)]
    example_question_sqls: Vec<ExampleSql>,
}

#[derive(Deserialize, serde::Serialize)]
struct TextInstruction {
    #[serde(default)]
    content: Vec<String>,
}

#[derive(Deserialize, serde::Serialize)]
struct ExampleSql {
    #[serde(default)]
    question: Vec<String>,
    #[serde(default)]
    sql: Vec<String>,
}

#[derive(Default, Deserialize, serde::Serialize)]
struct DeputySection {
    #[serde(default)]
    serving_endpoint_name: Option<String>,
}

impl SpaceInput {
    /// Fills what the request left out from its `serialized_space`.
    fn merge_serialized(mut self) -> Result<SpaceInput, Error> {
        let Some(text) = self.serialized_space.take() else {
            return Ok(self);
        };
        let serialized: SerializedSpace = serde_json::from_str(&text).map_err(|error| {
            Error::invalid_parameter(format!("`serialized_space` is not a space export: {error}"))
        })?;
        let tables: Vec<String> = serialized
            .data_sources
            .tables
            .into_iter()
            .map(|table| table.identifier)
            .collect();
        if self.table_identifiers.is_none() && !tables.is_empty() {
            self.table_identifiers = Some(tables);
        }
        let text: Vec<String> = serialized
            .instructions
            .text_instructions
            .into_iter()
            .map(|instruction| instruction.content.concat())
            .collect();
        if self.instructions.is_none() && !text.is_empty() {
            self.instructions = Some(text.join("\n"));
        }
        let examples: Vec<ExampleInput> = serialized
            .instructions
            .example_question_sqls
            .into_iter()
            .map(|example| ExampleInput {
                question: Some(example.question.concat()),
                sql: Some(example.sql.concat()),
            })
            .collect();
        if self.examples.is_none() && !examples.is_empty() {
            self.examples = Some(examples);
        }
        if self.serving_endpoint_name.is_none() {
            self.serving_endpoint_name = serialized.deputy.serving_endpoint_name;
        }
        Ok(self)
    }
}

/// The space in the export form `get_space(include_serialized_space=True)` returns.
async fn serialized(access: &Arc<Access>, spec: &SpaceSpec) -> Result<String, Error> {
    let endpoint = access
        .store()
        .get_workspace_object(
            deputy_serving::serving_object_type(),
            &spec.serving_endpoint_id,
        )
        .await?
        .map(|record| record.name);
    let export = SerializedSpace {
        version: 1,
        data_sources: DataSources {
            tables: spec
                .table_identifiers
                .iter()
                .map(|identifier| TableSource {
                    identifier: identifier.clone(),
                })
                .collect(),
        },
        instructions: Instructions {
            text_instructions: spec
                .instructions
                .iter()
                .map(|text| TextInstruction {
                    content: vec![text.clone()],
                })
                .collect(),
            example_question_sqls: spec
                .examples
                .iter()
                .map(|example| ExampleSql {
                    question: vec![example.question.clone()],
                    sql: vec![example.sql.clone()],
                })
                .collect(),
        },
        deputy: DeputySection {
            serving_endpoint_name: endpoint,
        },
    };
    serde_json::to_string(&export).map_err(Error::internal)
}

#[derive(Deserialize)]
struct ExampleInput {
    question: Option<String>,
    sql: Option<String>,
}

/// Applies `input` to `spec`, checking that the editor may use everything the space names: CAN_USE on the
/// warehouse, CAN_QUERY on a chat-model endpoint, SELECT on every table (a space cannot expose, even by name, a
/// table its author cannot read).
async fn apply(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    serving: &Arc<Serving>,
    caller: &Caller,
    spec: &mut SpaceSpec,
    input: SpaceInput,
) -> Result<(), Error> {
    let input = input.merge_serialized()?;
    if let Some(title) = input.title {
        if title.trim().is_empty() || title.chars().count() > 255 {
            return Err(Error::invalid_parameter(
                "`title` must be a non-empty string of at most 255 characters",
            ));
        }
        spec.title = title;
    }
    if let Some(description) = input.description {
        spec.description = Some(description);
    }
    if let Some(instructions) = input.instructions {
        spec.instructions = Some(instructions);
    }
    if let Some(warehouse_id) = input.warehouse_id {
        warehouse.authorize_warehouse(caller, &warehouse_id, ApiScope::DashboardsGenie)?;
        spec.warehouse_id = warehouse_id;
    }
    if let Some(tables) = input.table_identifiers {
        if tables.is_empty() {
            return Err(Error::invalid_parameter(
                "`table_identifiers` must name at least one table",
            ));
        }
        spec.table_identifiers =
            readable_tables(access, warehouse, serving, caller, tables).await?;
    }
    if let Some(examples) = input.examples {
        spec.examples = examples
            .into_iter()
            .map(|example| match (example.question, example.sql) {
                (Some(question), Some(sql))
                    if !question.trim().is_empty() && !sql.trim().is_empty() =>
                {
                    Ok(Example { question, sql })
                }
                _ => Err(Error::invalid_parameter(
                    "each example needs a non-empty `question` and `sql`",
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(endpoint) = input.serving_endpoint_name {
        let (record, _) =
            deputy_serving::endpoint_by_name(serving, caller, &endpoint, PermissionLevel::CanQuery)
                .await?;
        deputy_serving::chat_model_spec(&record)?;
        spec.serving_endpoint_id = record.object_id;
    }
    spec.updated_at = deputy_access::clock::now_millis();
    Ok(())
}

/// The space's tables, lowercased, after checking the editor may read each: a space cannot expose, even by name, a
/// table its author cannot read.
async fn readable_tables(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    serving: &Arc<Serving>,
    caller: &Caller,
    tables: Vec<String>,
) -> Result<Vec<String>, Error> {
    let mut names = Vec::with_capacity(tables.len());
    for name in tables {
        let securable =
            match deputy_genie::find_table(&genie(access, warehouse, serving), &name).await? {
                Some((_, securable)) => securable,
                // The engine then answers "does not exist", as for any name the caller may not know.
                None => deputy_authz::SecurableRef::new(deputy_authz::SecurableKind::Table, &name),
            };
        access
            .authorize(
                caller,
                ApiScope::DashboardsGenie,
                Action::ReadTable(securable),
            )
            .map_err(|error| {
                Error::new(error.code, format!("table `{name}`: {}", error.message))
            })?;
        names.push(name.to_ascii_lowercase());
    }
    Ok(names)
}

/// Creates a space; the creator gets CAN_MANAGE.
async fn create_space(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(input): ApiJson<SpaceInput>,
) -> Result<Json<Value>, ApiError> {
    let input = input.merge_serialized()?;
    for (present, field) in [
        (input.title.is_some(), "title"),
        (input.warehouse_id.is_some(), "warehouse_id"),
        (input.table_identifiers.is_some(), "table_identifiers"),
        (
            input.serving_endpoint_name.is_some(),
            "serving_endpoint_name",
        ),
    ] {
        if !present {
            return Err(ApiError(Error::invalid_parameter(format!(
                "`{field}` is required"
            ))));
        }
    }
    let mut spec = SpaceSpec {
        title: String::new(),
        description: None,
        warehouse_id: String::new(),
        table_identifiers: Vec::new(),
        instructions: None,
        examples: Vec::new(),
        serving_endpoint_id: String::new(),
        updated_at: 0,
    };
    apply(&access, &warehouse, &serving, &caller, &mut spec, input).await?;
    let space_id = new_id();
    let record = WorkspaceObjectRecord {
        object_type: object_type().into(),
        object_id: space_id.clone(),
        // Titles need not be unique; the object's unique name is its id (agents may name a space by it).
        name: space_id,
        owner_id: caller.identity.id,
        spec: serde_json::to_string(&spec).map_err(Error::internal)?,
        created_at: spec.updated_at,
    };
    access
        .create_workspace_object(record.clone(), PermissionLevel::CanManage)
        .await?;
    Ok(Json(render_space(&access, &Space { record, spec })))
}

#[derive(Deserialize)]
struct PageQuery {
    page_size: Option<usize>,
    page_token: Option<String>,
}

impl PageQuery {
    /// `(offset, size)`: the token is the offset of the page's first item.
    fn window(&self) -> Result<(usize, usize), Error> {
        let offset = match self.page_token.as_deref().filter(|token| !token.is_empty()) {
            None => 0,
            Some(token) => token
                .parse()
                .map_err(|_| Error::invalid_parameter(format!("invalid `page_token` `{token}`")))?,
        };
        let size = self
            .page_size
            .filter(|size| *size > 0)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE);
        Ok((offset, size))
    }
}

async fn list_spaces(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (offset, size) = page.window()?;
    let visible: Vec<WorkspaceObjectRecord> = access
        .store()
        .list_workspace_objects(object_type())
        .await?
        .into_iter()
        .filter(|record| {
            access
                .decide(
                    &caller,
                    ApiScope::DashboardsGenie,
                    space_action(&record.object_id, PermissionLevel::CanView),
                )
                .is_allowed()
        })
        .collect();
    let mut spaces = Vec::new();
    for record in visible.iter().skip(offset).take(size) {
        let spec = serde_json::from_str(&record.spec).map_err(Error::internal)?;
        spaces.push(render_space(
            &access,
            &Space {
                record: record.clone(),
                spec,
            },
        ));
    }
    let mut body = json!({ "spaces": spaces });
    if offset + size < visible.len() {
        body["next_page_token"] = json!((offset + size).to_string());
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct GetSpaceQuery {
    #[serde(default)]
    include_serialized_space: bool,
}

/// The space; with `include_serialized_space=true` also its export, which needs CAN_EDIT as on Databricks.
async fn get_space(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(space_id): Path<String>,
    ApiQuery(query): ApiQuery<GetSpaceQuery>,
) -> Result<Json<Value>, ApiError> {
    let level = match query.include_serialized_space {
        true => PermissionLevel::CanEdit,
        false => PermissionLevel::CanView,
    };
    let space = find_space(&access, &caller, &space_id, level).await?;
    let mut body = render_space(&access, &space);
    if query.include_serialized_space {
        body["serialized_space"] = json!(serialized(&access, &space.spec).await?);
    }
    Ok(Json(body))
}

async fn update_space(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(space_id): Path<String>,
    ApiJson(input): ApiJson<SpaceInput>,
) -> Result<Json<Value>, ApiError> {
    let mut space = find_space(&access, &caller, &space_id, PermissionLevel::CanEdit).await?;
    apply(
        &access,
        &warehouse,
        &serving,
        &caller,
        &mut space.spec,
        input,
    )
    .await?;
    let spec = serde_json::to_string(&space.spec).map_err(Error::internal)?;
    access
        .store()
        .update_workspace_object_spec(object_type(), &space_id, &spec)
        .await?;
    Ok(Json(render_space(&access, &space)))
}

async fn delete_space(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(space_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_space(&access, &caller, &space_id, PermissionLevel::CanManage).await?;
    let deleted = access
        .store()
        .delete_workspace_object(object_type(), &space_id)
        .await;
    access.publish().await?;
    deleted?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct AskInput {
    content: Option<String>,
}

/// The question of a start-conversation or create-message request.
fn question_text(input: AskInput) -> Result<String, Error> {
    input
        .content
        .filter(|content| !content.trim().is_empty())
        .ok_or_else(|| Error::invalid_parameter("`content` is required"))
}

/// The space a question is asked in: CAN_RUN on it, and CAN_USE on its warehouse, which runs the SQL as the asker.
async fn runnable_space(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    caller: &Caller,
    space_id: &str,
) -> Result<Space, Error> {
    let space = find_space(access, caller, space_id, PermissionLevel::CanRun).await?;
    warehouse.authorize_warehouse(caller, &space.spec.warehouse_id, ApiScope::DashboardsGenie)?;
    Ok(space)
}

async fn start_conversation(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(space_id): Path<String>,
    ApiJson(input): ApiJson<AskInput>,
) -> Result<Json<Value>, ApiError> {
    let content = question_text(input)?;
    let space = runnable_space(&access, &warehouse, &caller, &space_id).await?;
    let now = deputy_access::clock::now_millis();
    let conversation = ConversationRecord {
        conversation_id: new_id(),
        space_id: space_id.clone(),
        owner_id: caller.identity.id,
        title: content.chars().take(255).collect(),
        created_at: now,
        updated_at: now,
    };
    let message = new_message(&conversation.conversation_id, content, now);
    audit_question(&access, &warehouse, &serving, &caller, &space_id, &message).await?;
    access
        .store()
        .create_conversation(&conversation, &message)
        .await?;
    let rendered_message = render_message(&space_id, &conversation, &message)?;
    ask(
        &access,
        &warehouse,
        &serving,
        caller,
        space,
        message,
        Vec::new(),
    );
    Ok(Json(json!({
        "conversation_id": conversation.conversation_id,
        "message_id": rendered_message["message_id"],
        "conversation": render_conversation(&conversation),
        "message": rendered_message,
    })))
}

async fn create_message(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id)): Path<(String, String)>,
    ApiJson(input): ApiJson<AskInput>,
) -> Result<Json<Value>, ApiError> {
    let content = question_text(input)?;
    let space = runnable_space(&access, &warehouse, &caller, &space_id).await?;
    let conversation = own_conversation(&access, &caller, &space_id, &conversation_id).await?;
    let history = access.store().messages_of(&conversation_id).await?;
    let message = new_message(
        &conversation_id,
        content,
        deputy_access::clock::now_millis(),
    );
    audit_question(&access, &warehouse, &serving, &caller, &space_id, &message).await?;
    access.store().add_message(&message).await?;
    let rendered = render_message(&space_id, &conversation, &message)?;
    ask(
        &access, &warehouse, &serving, caller, space, message, history,
    );
    Ok(Json(rendered))
}

fn new_message(conversation_id: &str, content: String, now: i64) -> MessageRecord {
    MessageRecord {
        message_id: new_id(),
        conversation_id: conversation_id.to_owned(),
        content,
        status: "SUBMITTED".into(),
        outcome: "{}".into(),
        created_at: now,
        updated_at: now,
    }
}

/// Every question is audited, durably, before it is answered: who asked (and through which agents), in which space.
async fn audit_question(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    serving: &Arc<Serving>,
    caller: &Caller,
    space_id: &str,
    message: &MessageRecord,
) -> Result<(), Error> {
    let event = deputy_genie::question_event(
        &genie(access, warehouse, serving),
        caller,
        space_id,
        "genie.question",
    )
    .allowed(format!(
        "{} may run the space and asked: {}",
        caller.identity.name, message.content
    ));
    access.record(&[event]).await
}

fn ask(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    serving: &Arc<Serving>,
    caller: Caller,
    space: Space,
    message: MessageRecord,
    history: Vec<MessageRecord>,
) {
    let question = Question {
        space_id: space.record.object_id,
        space: space.spec,
        space_owner: space.record.owner_id,
        message,
        history,
    };
    deputy_genie::spawn_answer(&genie(access, warehouse, serving), caller, question);
}

/// The caller's conversation in this space; anyone else's, or one in another space, does not exist.
async fn own_conversation(
    access: &Arc<Access>,
    caller: &Caller,
    space_id: &str,
    conversation_id: &str,
) -> Result<ConversationRecord, Error> {
    access
        .store()
        .get_conversation(conversation_id)
        .await?
        .filter(|conversation| {
            conversation.owner_id == caller.identity.id && conversation.space_id == space_id
        })
        .ok_or_else(|| Error::not_found(format!("conversation `{conversation_id}` does not exist")))
}

/// The caller's message, found through its conversation.
async fn own_message(
    access: &Arc<Access>,
    caller: &Caller,
    (space_id, conversation_id, message_id): (&str, &str, &str),
) -> Result<(ConversationRecord, MessageRecord), Error> {
    find_space(access, caller, space_id, PermissionLevel::CanRun).await?;
    let conversation = own_conversation(access, caller, space_id, conversation_id).await?;
    let message = access
        .store()
        .get_message(message_id)
        .await?
        .filter(|message| message.conversation_id == conversation_id)
        .ok_or_else(|| Error::not_found(format!("message `{message_id}` does not exist")))?;
    Ok((conversation, message))
}

fn render_conversation(conversation: &ConversationRecord) -> Value {
    json!({
        "id": conversation.conversation_id,
        "conversation_id": conversation.conversation_id,
        "space_id": conversation.space_id,
        "user_id": conversation.owner_id.0,
        "title": conversation.title,
        "created_timestamp": conversation.created_at,
        "last_updated_timestamp": conversation.updated_at,
    })
}

fn outcome_of(message: &MessageRecord) -> Result<MessageOutcome, Error> {
    serde_json::from_str(&message.outcome).map_err(Error::internal)
}

/// A GenieMessage. Attachments: the query (with its statement and result metadata), the text answer, and the
/// suggested follow-up questions.
fn render_message(
    space_id: &str,
    conversation: &ConversationRecord,
    message: &MessageRecord,
) -> Result<Value, Error> {
    // A stored outcome that does not parse renders as none; `get_message` reports it as an error instead.
    let outcome: MessageOutcome = decode_stored("Genie message outcome", &message.outcome)?;
    let mut attachments = Vec::new();
    if let Some(query) = &outcome.query {
        let mut attachment = json!({
            "query": query.sql,
            "description": query.description,
            "title": query.description,
        });
        if let Some(statement_id) = &query.statement_id {
            attachment["statement_id"] = json!(statement_id);
        }
        if let Some(row_count) = query.row_count {
            attachment["query_result_metadata"] =
                json!({ "row_count": row_count, "is_truncated": query.is_truncated });
        }
        attachments.push(json!({ "attachment_id": query.attachment_id, "query": attachment }));
    }
    if let Some(text) = &outcome.text {
        attachments.push(json!({
            "attachment_id": text.attachment_id,
            "text": { "id": text.attachment_id, "content": text.content },
        }));
    }
    if let Some(id) = &outcome.suggestions_id {
        attachments.push(json!({
            "attachment_id": id,
            "suggested_questions": { "questions": outcome.suggested_questions },
        }));
    }
    let mut body = json!({
        "id": message.message_id,
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "space_id": space_id,
        "user_id": conversation.owner_id.0,
        "content": message.content,
        "status": message.status,
        "created_timestamp": message.created_at,
        "last_updated_timestamp": message.updated_at,
        "attachments": attachments,
    });
    if let Some(query) = outcome
        .query
        .as_ref()
        .filter(|_| message.status == "COMPLETED")
    {
        body["query_result"] = json!({
            "statement_id": query.statement_id,
            "row_count": query.row_count,
            "is_truncated": query.is_truncated,
        });
    }
    if let Some(error) = &outcome.error {
        body["error"] = json!({ "error": error.message, "type": error.kind });
    }
    Ok(body)
}

async fn get_message(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id, message_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (conversation, message) =
        own_message(&access, &caller, (&space_id, &conversation_id, &message_id)).await?;
    outcome_of(&message)?;
    Ok(Json(render_message(&space_id, &conversation, &message)?))
}

async fn list_conversations(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(space_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    find_space(&access, &caller, &space_id, PermissionLevel::CanRun).await?;
    let (offset, size) = page.window()?;
    let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    // One more than the page, to know whether another page follows.
    let mut conversations = access
        .store()
        .list_conversations(
            &space_id,
            caller.identity.id,
            to_i64(offset),
            to_i64(size + 1),
        )
        .await?;
    let more = conversations.len() > size;
    conversations.truncate(size);
    let mut body = json!({
        "conversations": conversations.iter().map(|c| json!({
            "conversation_id": c.conversation_id,
            "title": c.title,
            "created_timestamp": c.created_at,
        })).collect::<Vec<_>>(),
    });
    if more {
        body["next_page_token"] = json!((offset + size).to_string());
    }
    Ok(Json(body))
}

/// The caller's conversation's messages, oldest first, by page.
async fn list_messages(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id)): Path<(String, String)>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    find_space(&access, &caller, &space_id, PermissionLevel::CanRun).await?;
    let conversation = own_conversation(&access, &caller, &space_id, &conversation_id).await?;
    let (offset, size) = page.window()?;
    let messages = access.store().messages_of(&conversation_id).await?;
    let mut body = json!({
        "messages": messages
            .iter()
            .skip(offset)
            .take(size)
            .map(|message| render_message(&space_id, &conversation, message))
            .collect::<Result<Vec<_>, _>>()?,
    });
    if offset + size < messages.len() {
        body["next_page_token"] = json!((offset + size).to_string());
    }
    Ok(Json(body))
}

async fn delete_conversation(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    find_space(&access, &caller, &space_id, PermissionLevel::CanRun).await?;
    own_conversation(&access, &caller, &space_id, &conversation_id).await?;
    access.store().delete_conversation(&conversation_id).await?;
    Ok(Json(json!({})))
}

/// `{"statement_response": StatementResponse}` of the message's query attachment `attachment_id`; with `rerun`
/// (`execute-query`), its SQL runs again as the caller, now.
async fn attachment_query(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id, message_id, attachment_id)): Path<(
        String,
        String,
        String,
        String,
    )>,
    rerun: bool,
) -> Result<Json<Value>, ApiError> {
    let ids = (
        space_id.as_str(),
        conversation_id.as_str(),
        message_id.as_str(),
    );
    query_result(
        &access,
        &warehouse,
        &serving,
        &caller,
        ids,
        Some(&attachment_id),
        rerun,
    )
    .await
}

/// The deprecated form without an attachment id: the message's query attachment.
async fn message_query_result(
    State(access): State<Arc<Access>>,
    State(warehouse): State<Arc<Warehouse>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path((space_id, conversation_id, message_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ids = (
        space_id.as_str(),
        conversation_id.as_str(),
        message_id.as_str(),
    );
    query_result(&access, &warehouse, &serving, &caller, ids, None, false).await
}

/// The result of a message's query. A statement that is no longer remembered (results expire, and a restart forgets
/// them) or `rerun` runs the SQL again as the caller, with today's grants and filters, and the attachment then
/// names the new statement.
async fn query_result(
    access: &Arc<Access>,
    warehouse: &Arc<Warehouse>,
    serving: &Arc<Serving>,
    caller: &Caller,
    ids: (&str, &str, &str),
    attachment_id: Option<&str>,
    rerun: bool,
) -> Result<Json<Value>, ApiError> {
    let (_, message) = own_message(access, caller, ids).await?;
    let mut outcome = outcome_of(&message)?;
    let missing = || {
        Error::not_found(format!(
            "message `{}` has no query attachment{}",
            message.message_id,
            attachment_id
                .map(|id| format!(" `{id}`"))
                .unwrap_or_default()
        ))
    };
    let query = outcome
        .query
        .as_mut()
        .filter(|query| attachment_id.is_none_or(|id| id == query.attachment_id))
        .ok_or_else(missing)?;
    let remembered = query
        .statement_id
        .as_deref()
        .filter(|_| !rerun)
        .and_then(|id| {
            warehouse
                .owned(id, caller.identity.id)
                .ok()
                .map(|entry| (id.to_owned(), entry))
        });
    let (statement_id, entry) = match remembered {
        Some(found) => found,
        None => {
            runnable_space(access, warehouse, caller, ids.0).await?;
            let (id, entry) =
                deputy_genie::run_statement(&genie(access, warehouse, serving), caller, &query.sql);
            entry.finished().await;
            query.statement_id = Some(id.clone());
            let stored = serde_json::to_string(&outcome).map_err(Error::internal)?;
            access
                .store()
                .update_message(
                    &message.message_id,
                    &message.status,
                    &stored,
                    deputy_access::clock::now_millis(),
                )
                .await?;
            (id, entry)
        }
    };
    Ok(Json(
        json!({ "statement_response": statements::render(&statement_id, &entry) }),
    ))
}
