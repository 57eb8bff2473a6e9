//! Access: every agent and app that may act for the person, what each may do in plain words, since when; consents
//! still to give (when the workspace requires consent), and withdrawal, effective on the agent's next request.

use crate::api::encode;
use crate::layout::{Section, csrf_field, page, when};
use crate::pages::agents::scope_item;
use crate::{ConsoleError, ConsoleState, SignedIn, checked_form};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

const CONSENTS: &str = "/api/2.0/deputy/consents";
const APP_CONSENTS: &str = "/api/2.0/deputy/app-consents";

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/access", get(show))
        .route("/console/access/agents/{name}/{change}", post(change_agent))
        .route(
            "/console/access/apps/{client_id}/withdraw",
            post(withdraw_app),
        )
}

/// Scopes as the API lists them: an array of names or one space-separated string.
fn scopes_of(value: &Value) -> Vec<String> {
    match value {
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(names) => names.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn action_form(class: &str, action: &str, csrf: &str, label: &str) -> Markup {
    html! {
        form class=(class) method="post" action=(action) {
            (csrf_field(csrf))
            button type="submit" { (label) }
        }
    }
}

async fn show(signed_in: SignedIn) -> Result<Response, ConsoleError> {
    let api = signed_in.api();
    let csrf = &signed_in.session.csrf;
    let consents = api.get(CONSENTS).await?;
    let consents = consents["consents"].as_array().cloned().unwrap_or_default();
    let settings = api.get("/api/2.0/deputy/settings").await?;
    let consent_required = settings["consent-required"].as_bool().unwrap_or(false);
    let pending: Vec<Value> = match consent_required {
        true => super::agents::queryable_agents(&api)
            .await?
            .into_iter()
            .filter(|agent| {
                !consents
                    .iter()
                    .any(|consent| consent["endpoint_name"] == agent["name"])
            })
            .collect(),
        false => Vec::new(),
    };
    let apps = api.get(APP_CONSENTS).await?;
    let apps = apps["app_consents"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h2 { "Agents" }
        @if consent_required {
            p { "Agents act for you only after you approve the scopes they declare. Withdrawing takes effect on the agent's next request." }
        } @else {
            p { "This workspace does not ask for consent: every agent you may query acts for you with the scopes it declares. Consents you gave are kept for when it does." }
        }
        table #agent-consents {
            thead { tr { th { "Agent" } th { "May, for you" } th { "Approved" } th {} } }
            tbody {
                @for consent in &consents {
                    @let name = consent["endpoint_name"].as_str().unwrap_or_default();
                    tr data-endpoint=(name) {
                        td { (name) }
                        td { ul.scopes { @for scope in scopes_of(&consent["scopes"]) { (scope_item(&scope)) } } }
                        td { (when(consent["granted_timestamp"].as_i64().unwrap_or_default())) }
                        td { (action_form("withdraw", &format!("/console/access/agents/{}/withdraw", encode(name)), csrf, "Withdraw")) }
                    }
                }
            }
        }
        @if consents.is_empty() { p.empty { "You have approved no agent." } }
        @if consent_required {
            h2 { "Waiting for your approval" }
            table #pending-consents {
                thead { tr { th { "Agent" } th { "Asks to, for you" } th {} } }
                tbody {
                    @for agent in &pending {
                        @let name = agent["name"].as_str().unwrap_or_default();
                        tr data-endpoint=(name) {
                            td { (name) }
                            td { ul.scopes { @for scope in super::agents::agent_scopes(agent) { (scope_item(&scope)) } } }
                            td { (action_form("approve", &format!("/console/access/agents/{}/approve", encode(name)), csrf, "Approve")) }
                        }
                    }
                }
            }
            @if pending.is_empty() { p.empty { "Nothing is waiting." } }
        }
        h2 { "Apps" }
        p { "Apps you approved at sign-in; withdrawing signs them out everywhere." }
        table #app-consents {
            thead { tr { th { "App" } th { "May, for you" } th { "Approved" } th {} } }
            tbody {
                @for app in &apps {
                    @let client_id = app["client_id"].as_str().unwrap_or_default();
                    tr data-client-id=(client_id) {
                        td { (app["app_name"].as_str().unwrap_or(client_id)) }
                        td { ul.scopes { @for scope in scopes_of(&app["scopes"]) { (scope_item(&scope)) } } }
                        td { (app["granted_time"].as_str().unwrap_or_default()) }
                        td { (action_form("withdraw", &format!("/console/access/apps/{}/withdraw", encode(client_id)), csrf, "Withdraw")) }
                    }
                }
            }
        }
        @if apps.is_empty() { p.empty { "You have approved no app." } }
    };
    Ok(page(&signed_in.viewer(), Section::Access, "Access", body))
}

/// Approves (`approve`) or withdraws (`withdraw`) the person's consent to an agent.
async fn change_agent(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path((name, change)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    checked_form(&state.console, &signed_in, &headers, &body)?;
    let api = signed_in.api();
    match change.as_str() {
        "approve" => {
            api.post(CONSENTS, &json!({ "endpoint_name": name }))
                .await?
        }
        "withdraw" => api.delete(&format!("{CONSENTS}/{}", encode(&name))).await?,
        other => return Err(ConsoleError::NotFound(format!("no such change `{other}`"))),
    };
    Ok(Redirect::to("/console/access").into_response())
}

async fn withdraw_app(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    checked_form(&state.console, &signed_in, &headers, &body)?;
    signed_in
        .api()
        .delete(&format!("{APP_CONSENTS}/{}", encode(&client_id)))
        .await?;
    Ok(Redirect::to("/console/access").into_response())
}
