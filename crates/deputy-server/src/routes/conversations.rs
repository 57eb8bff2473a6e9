//! People's conversations with serving endpoints (beyond Databricks): the chat history a client such as the console
//! keeps through the API. The rules (owner only, no delegated tokens, limits) are `deputy_serving::conversations`'.
//!
//! - `POST /api/2.0/deputy/conversations {endpoint_name, title?}` (`CAN_QUERY` on the endpoint) →
//!   `{id, endpoint_name, title, created_timestamp}`
//! - `GET /api/2.0/deputy/conversations?endpoint_name=` → `{conversations: [...]}`, the caller's, newest first
//! - `GET /api/2.0/deputy/conversations/{id}` → the conversation with
//!   `messages: [{role, content, request_id?, sources, created_timestamp}]` in order
//! - `POST /api/2.0/deputy/conversations/{id}/messages {role, content, request_id?, sources?}` → the message
//! - `DELETE /api/2.0/deputy/conversations/{id}` → `{}`

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Error;
use deputy_core::ApiScope;
use deputy_serving::Serving;
use deputy_serving::conversations::{self, Conversation, NewMessage};
use deputy_store::EndpointMessage;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes(router: ApiRouter) -> ApiRouter {
    let serving = Requires::Scope(ApiScope::ServingEndpoints);
    router
        .post("/api/2.0/deputy/conversations", serving, create)
        .get("/api/2.0/deputy/conversations", serving, list)
        .get("/api/2.0/deputy/conversations/{id}", serving, get)
        .delete("/api/2.0/deputy/conversations/{id}", serving, delete)
        .post(
            "/api/2.0/deputy/conversations/{id}/messages",
            serving,
            append,
        )
}

#[derive(Deserialize)]
struct CreateRequest {
    endpoint_name: Option<String>,
    title: Option<String>,
}

async fn create(
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let endpoint_name = request
        .endpoint_name
        .ok_or_else(|| Error::invalid_parameter("`endpoint_name` is required"))?;
    let conversation =
        conversations::create(&serving, &caller, &endpoint_name, request.title).await?;
    Ok(Json(render(&conversation)))
}

#[derive(Deserialize)]
struct ListQuery {
    endpoint_name: Option<String>,
}

async fn list(
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let endpoint_name = query.endpoint_name.filter(|name| !name.is_empty());
    let listed = conversations::list(&serving, &caller, endpoint_name.as_deref()).await?;
    let rendered: Vec<Value> = listed.iter().map(render).collect();
    Ok(Json(json!({ "conversations": rendered })))
}

async fn get(
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (conversation, messages) = conversations::get(&serving, &caller, &id).await?;
    let mut rendered = render(&conversation);
    rendered["messages"] = messages.iter().map(render_message).collect();
    Ok(Json(rendered))
}

#[derive(Deserialize)]
struct MessageRequest {
    role: Option<String>,
    content: Option<String>,
    request_id: Option<String>,
    sources: Option<Vec<String>>,
}

async fn append(
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<MessageRequest>,
) -> Result<Json<Value>, ApiError> {
    let required = |value: Option<String>, name: &str| {
        value.ok_or_else(|| Error::invalid_parameter(format!("`{name}` is required")))
    };
    let message = NewMessage {
        role: required(request.role, "role")?,
        content: required(request.content, "content")?,
        request_id: request.request_id,
        sources: request.sources.unwrap_or_default(),
    };
    let stored = conversations::append(&serving, &caller, &id, message).await?;
    Ok(Json(render_message(&stored)))
}

async fn delete(
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    conversations::delete(&serving, &caller, &id).await?;
    Ok(Json(json!({})))
}

fn render(conversation: &Conversation) -> Value {
    json!({
        "id": conversation.id,
        "endpoint_name": conversation.endpoint_name,
        "title": conversation.title,
        "created_timestamp": conversation.created_ms,
    })
}

fn render_message(message: &EndpointMessage) -> Value {
    let mut rendered = json!({
        "role": message.role,
        "content": message.content,
        "sources": message.sources,
        "created_timestamp": message.created_at,
    });
    if let Some(request_id) = &message.request_id {
        rendered["request_id"] = json!(request_id);
    }
    rendered
}
