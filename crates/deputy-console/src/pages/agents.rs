//! Agents and the playground: the agent endpoints the person may query, a conversation with one, and for each
//! answer what ran for it (the audited calls the agent made with the person's downscoped token: which API, as whom,
//! with which scope, allowed or not and why) and the sources it returned.

use crate::api::{ApiFailure, AsPerson, encode};
use crate::layout::{Section, csrf_field, failure_notice, page, when};
use crate::{ConsoleError, ConsoleState, SignedIn, checked_form};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

pub(crate) const CONVERSATIONS: &str = "/api/2.0/deputy/conversations";
/// A conversation is named after the start of its first question.
const TITLE_CHARS: usize = 80;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/agents", get(list))
        .route("/console/agents/{name}", get(playground))
        .route("/console/agents/{name}/conversations", post(start))
        .route("/console/conversations/{id}", get(conversation))
        .route("/console/conversations/{id}/messages", post(follow_up))
}

/// Endpoints that serve an agent and that the person may query.
pub(crate) async fn queryable_agents(api: &AsPerson<'_>) -> Result<Vec<Value>, ApiFailure> {
    let listed = api.get("/api/2.0/serving-endpoints").await?;
    Ok(listed["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|endpoint| {
            let agent = endpoint["config"]["served_entities"][0]
                .get("deputy_agent")
                .is_some();
            let level = endpoint["permission_level"].as_str().unwrap_or("");
            agent && matches!(level, "CAN_QUERY" | "CAN_MANAGE")
        })
        .cloned()
        .collect())
}

pub(crate) fn agent_scopes(endpoint: &Value) -> Vec<String> {
    endpoint["config"]["served_entities"][0]["deputy_agent"]["user_api_scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A scope's name and what it lets an agent do, in plain words.
pub(crate) fn scope_item(scope: &str) -> Markup {
    let words = deputy_core::ApiScope::from_name(scope).map(deputy_core::ApiScope::plain_words);
    html! {
        li {
            @if let Some(words) = words { (words) " " }
            code { (scope) }
        }
    }
}

async fn list(signed_in: SignedIn) -> Result<Response, ConsoleError> {
    let agents = queryable_agents(&signed_in.api()).await?;
    let body = html! {
        p { "The agents you may ask. An agent acts for you only with the scopes listed, and only on what you may see yourself." }
        @if agents.is_empty() { p.empty { "No agent is shared with you yet." } }
        @else {
            table #agents {
                thead { tr { th { "Agent" } th { "It may, for you" } } }
                tbody {
                    @for agent in &agents {
                        @let name = agent["name"].as_str().unwrap_or_default();
                        tr data-endpoint=(name) {
                            td { a href={ "/console/agents/" (encode(name)) } { (name) } }
                            td { ul.scopes { @for scope in agent_scopes(agent) { (scope_item(&scope)) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&signed_in.viewer(), Section::Agents, "Agents", body))
}

async fn playground(
    signed_in: SignedIn,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    playground_page(&signed_in, &name, None).await
}

async fn playground_page(
    signed_in: &SignedIn,
    name: &str,
    refusal: Option<&ApiFailure>,
) -> Result<Response, ConsoleError> {
    let api = signed_in.api();
    let endpoint = api
        .get(&format!("/api/2.0/serving-endpoints/{}", encode(name)))
        .await?;
    let conversations = api
        .get(&format!("{CONVERSATIONS}?endpoint_name={}", encode(name)))
        .await?;
    let body = html! {
        p { "Ask " strong { (name) } " a question. It answers as itself, acting for you with these scopes:" }
        ul.scopes { @for scope in agent_scopes(&endpoint) { (scope_item(&scope)) } }
        @if let Some(failure) = refusal { (failure_notice(failure)) }
        (ask_form(&format!("/console/agents/{}", encode(name)), "conversations", &signed_in.session.csrf))
        h2 { "Your conversations" }
        ul #conversations {
            @for conversation in conversations["conversations"].as_array().into_iter().flatten() {
                li {
                    a href={ "/console/conversations/" (encode(conversation["id"].as_str().unwrap_or_default())) } {
                        (conversation["title"].as_str().unwrap_or("(untitled)"))
                    }
                    " · " (when(conversation["created_timestamp"].as_i64().unwrap_or_default()))
                }
            }
        }
    };
    let mut response = page(&signed_in.viewer(), Section::Agents, name, body);
    if let Some(failure) = refusal {
        *response.status_mut() = failure.status;
    }
    Ok(response)
}

/// The question form: it posts to `{base}/{plain}` and the page appears with the whole answer; the script posts
/// it to `{base}/stream` instead and shows the answer while it is written.
fn ask_form(base: &str, plain: &str, csrf: &str) -> Markup {
    html! {
        form #ask method="post" action={ (base) "/" (plain) } data-stream={ (base) "/stream" } {
            (csrf_field(csrf))
            label for="question" { "Your question" }
            textarea #question name="question" rows="3" required {}
            button type="submit" { "Ask" }
            output #streaming aria-live="polite" {}
        }
    }
}

/// The question of an ask form, once the form is checked (origin, CSRF token); an empty one is refused.
pub(crate) fn asked(
    state: &ConsoleState,
    signed_in: &SignedIn,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, ConsoleError> {
    let fields = checked_form(&state.console, signed_in, headers, body)?;
    let question = fields.get("question").map(|text| text.trim()).unwrap_or("");
    match question.is_empty() {
        true => Err(ConsoleError::BadRequest("ask a question first".into())),
        false => Ok(question.to_owned()),
    }
}

/// A conversation's endpoint and its messages so far.
pub(crate) async fn conversation_so_far(
    api: &AsPerson<'_>,
    id: &str,
) -> Result<(String, Vec<Value>), ApiFailure> {
    let conversation = api.get(&format!("{CONVERSATIONS}/{}", encode(id))).await?;
    let endpoint = conversation["endpoint_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let history = conversation["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((endpoint, history))
}

/// Deletes a conversation whose first question was refused: it holds nothing worth keeping.
pub(crate) async fn forget_conversation(api: &AsPerson<'_>, id: &str) {
    let forgotten = api.delete(&format!("{CONVERSATIONS}/{}", encode(id))).await;
    if let Err(failure) = forgotten {
        tracing::warn!(error = %failure.message, "could not delete a refused conversation");
    }
}

async fn start(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let question = asked(&state, &signed_in, &headers, &body)?;
    let api = signed_in.api();
    let id = create_conversation(&api, &name, &question).await?;
    match ask(&api, &id, &name, &[], &question).await {
        Ok(()) => Ok(to_conversation(&id)),
        Err(refusal) => {
            forget_conversation(&api, &id).await;
            playground_page(&signed_in, &name, Some(&refusal)).await
        }
    }
}

async fn follow_up(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let question = asked(&state, &signed_in, &headers, &body)?;
    let api = signed_in.api();
    let (name, history) = conversation_so_far(&api, &id).await?;
    match ask(&api, &id, &name, &history, &question).await {
        Ok(()) => Ok(to_conversation(&id)),
        Err(refusal) => conversation_page(&signed_in, &id, Some(&refusal)).await,
    }
}

fn to_conversation(id: &str) -> Response {
    Redirect::to(&format!("/console/conversations/{}", encode(id))).into_response()
}

/// A new conversation with `endpoint`, named after the start of its first question; its id.
pub(crate) async fn create_conversation(
    api: &AsPerson<'_>,
    endpoint: &str,
    question: &str,
) -> Result<String, ApiFailure> {
    let title: String = question.chars().take(TITLE_CHARS).collect();
    let created = api
        .post(
            CONVERSATIONS,
            &json!({ "endpoint_name": endpoint, "title": title }),
        )
        .await?;
    Ok(created["id"].as_str().unwrap_or_default().to_owned())
}

/// A conversation's messages as the agent reads them.
pub(crate) fn history_messages(history: &[Value]) -> Vec<Value> {
    history
        .iter()
        .map(|message| json!({ "role": message["role"], "content": message["content"] }))
        .collect()
}

/// Records a question and its answer; the answer keeps the request id that ties it to the audited calls.
pub(crate) async fn record_exchange(
    api: &AsPerson<'_>,
    conversation: &str,
    question: &str,
    answer: &str,
    request_id: Option<&str>,
    sources: &[String],
) -> Result<(), ApiFailure> {
    let messages_path = format!("{CONVERSATIONS}/{}/messages", encode(conversation));
    api.post(
        &messages_path,
        &json!({ "role": "user", "content": question }),
    )
    .await?;
    api.post(
        &messages_path,
        &json!({ "role": "assistant", "content": answer, "request_id": request_id, "sources": sources }),
    )
    .await?;
    Ok(())
}

/// Asks the agent `question` after `history`, as the person, and records both in the conversation. A refused
/// question is not recorded: the page shows why instead.
async fn ask(
    api: &AsPerson<'_>,
    conversation: &str,
    endpoint: &str,
    history: &[Value],
    question: &str,
) -> Result<(), ApiFailure> {
    let mut messages = history_messages(history);
    messages.push(json!({ "role": "user", "content": question }));
    let answer = api
        .call(
            Method::POST,
            &format!("/serving-endpoints/{}/invocations", encode(endpoint)),
            Some(&json!({ "messages": messages })),
        )
        .await?;
    let request_id = answer
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let text = answer_text(&answer.body);
    let sources: Vec<String> = answer.body["custom_outputs"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|source| {
            source
                .as_str()
                .map_or_else(|| source.to_string(), str::to_owned)
        })
        .collect();
    record_exchange(
        api,
        conversation,
        question,
        &text,
        request_id.as_deref(),
        &sources,
    )
    .await
}

/// The answer's text: a ChatAgent's last message, or an OpenAI-style choice.
fn answer_text(body: &Value) -> String {
    let last_message = body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str());
    let choice = body["choices"][0]["message"]["content"].as_str();
    last_message.or(choice).unwrap_or_default().to_owned()
}

async fn conversation(
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    conversation_page(&signed_in, &id, None).await
}

async fn conversation_page(
    signed_in: &SignedIn,
    id: &str,
    refusal: Option<&ApiFailure>,
) -> Result<Response, ConsoleError> {
    let api = signed_in.api();
    let conversation = match api.get(&format!("{CONVERSATIONS}/{}", encode(id))).await {
        Ok(conversation) => conversation,
        Err(failure) if failure.status == StatusCode::NOT_FOUND => {
            return Err(ConsoleError::NotFound(failure.message));
        }
        Err(failure) => return Err(failure.into()),
    };
    let name = conversation["endpoint_name"].as_str().unwrap_or_default();
    let mut rendered = Vec::new();
    for message in conversation["messages"].as_array().into_iter().flatten() {
        rendered.push(render_message(&api, message).await?);
    }
    let body = html! {
        p { "With " a href={ "/console/agents/" (encode(name)) } { (name) } }
        ol #messages { @for message in &rendered { (message) } }
        @if let Some(failure) = refusal { (failure_notice(failure)) }
        (ask_form(&format!("/console/conversations/{}", encode(id)), "messages", &signed_in.session.csrf))
    };
    let title = conversation["title"].as_str().unwrap_or("Conversation");
    let mut response = page(&signed_in.viewer(), Section::Agents, title, body);
    if let Some(failure) = refusal {
        *response.status_mut() = failure.status;
    }
    Ok(response)
}

async fn render_message(api: &AsPerson<'_>, message: &Value) -> Result<Markup, ApiFailure> {
    let content = message["content"].as_str().unwrap_or_default();
    if message["role"].as_str() != Some("assistant") {
        return Ok(html! { li.message.user { p.question { (content) } } });
    }
    let events = match message["request_id"].as_str() {
        Some(request_id) => api
            .get(&format!(
                "/api/2.0/deputy/audit?request_id={}&limit=200",
                encode(request_id)
            ))
            .await?["events"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let sources: Vec<&str> = message["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Ok(html! {
        li.message.assistant {
            div.answer { (content) }
            details.run open {
                summary { "What ran for this answer" }
                h3 { "Calls made for you" }
                @if events.is_empty() { p.empty { "The agent made no call on your behalf." } }
                @else { (events_table("tools", None, &events)) }
                h3 { "Sources" }
                @if sources.is_empty() { p.empty { "No sources." } }
                ul.sources { @for source in &sources { li { (source) } } }
            }
        }
    })
}

/// Audit events as a table: when, who for whom, which API with which scope, on what, the decision and its reason.
pub(crate) fn events_table(class: &str, id: Option<&str>, events: &[Value]) -> Markup {
    html! {
        table class=(class) id=[id] {
            thead { tr {
                th { "Time" } th { "Acting" } th { "API" } th { "Scope" } th { "On" } th { "Decision" } th { "Reason" }
            } }
            tbody {
                @for event in events {
                    @let allowed = event["allowed"].as_bool().unwrap_or(false);
                    @let decision = if allowed { "allowed" } else { "denied" };
                    tr data-request-id=(event["request_id"].as_str().unwrap_or_default()) data-decision=(decision)
                        data-user=(event["user_name"].as_str().unwrap_or_default()) {
                        td { (when(event["time_ms"].as_i64().unwrap_or_default())) }
                        td { (acting(event)) }
                        td { code { (event["api"].as_str().unwrap_or_default()) } }
                        td { (event["scope"].as_str().unwrap_or("—")) }
                        td { (event["securable"].as_str().unwrap_or("—")) }
                        td class=(decision) { (decision) }
                        td { (event["reason"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// "agent X for user Y", or the user alone when they acted directly.
fn acting(event: &Value) -> String {
    let user = event["user_name"].as_str().unwrap_or_default();
    let agent = event["endpoint"]
        .as_str()
        .or_else(|| event["actors"][0].as_str());
    match agent {
        Some(agent) => format!("agent {agent} for {user}"),
        None => user.to_owned(),
    }
}
