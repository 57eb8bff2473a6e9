//! Admin (workspace admins only): the on-behalf-of and consent switches, identity providers and federation
//! policies, users and groups, serving endpoints and their agents' deployments, and `why` for any principal, action
//! and securable. Everything comes from admin-only API calls made with the admin's own token, so the page can show
//! nothing the API would not.

use crate::api::encode;
use crate::layout::{Section, csrf_field, failure_notice, page, when};
use crate::{ConsoleError, ConsoleState, SignedIn, checked_form};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

const SCIM: &str = "/api/2.0/preview/scim/v2";

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/admin", get(show))
        .route("/console/admin/settings", post(change_settings))
}

#[derive(Deserialize, Default)]
struct WhyQuestion {
    principal: Option<String>,
    action: Option<String>,
    securable_type: Option<String>,
    securable: Option<String>,
}

fn list<'a>(value: &'a Value, key: &str) -> Vec<&'a Value> {
    value[key].as_array().into_iter().flatten().collect()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

fn names(values: &Value, key: &str) -> String {
    values
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value[key].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn show(
    signed_in: SignedIn,
    Query(question): Query<WhyQuestion>,
) -> Result<Response, ConsoleError> {
    signed_in.require_admin()?;
    let api = signed_in.api();
    let settings = api.get("/api/2.0/deputy/settings").await?;
    let providers = api.get("/api/2.0/deputy/identity-providers").await?;
    let config = api.get("/.well-known/databricks-config").await?;
    let account = text(&config, "workspace_id");
    let policies = api
        .get(&format!(
            "/api/2.0/accounts/{}/federationPolicies",
            encode(account)
        ))
        .await?;
    let users = api.get(&format!("{SCIM}/Users")).await?;
    let groups = api.get(&format!("{SCIM}/Groups")).await?;
    let endpoints = api.get("/api/2.0/serving-endpoints").await?;
    let why = match (&question.principal, &question.action, &question.securable) {
        (Some(principal), Some(action), Some(securable)) => {
            let securable = format!(
                "{}:{securable}",
                question.securable_type.as_deref().unwrap_or("table")
            );
            Some(
                api.get(&format!(
                    "/api/2.0/deputy/authz/why?principal={}&action={}&securable={}",
                    encode(principal),
                    encode(action),
                    encode(&securable)
                ))
                .await,
            )
        }
        _ => None,
    };
    let csrf = &signed_in.session.csrf;
    let body = html! {
        section #settings {
            h2 { "On-behalf-of access" }
            form method="post" action="/console/admin/settings" {
                (csrf_field(csrf))
                label { input type="checkbox" name="obo-enabled" value="true" checked[settings["obo-enabled"] == true];
                    " Agents may act on behalf of the users who query them" }
                label { input type="checkbox" name="consent-required" value="true" checked[settings["consent-required"] == true];
                    " Each user must approve an agent's scopes first" }
                button type="submit" { "Save" }
            }
        }
        section #identity-providers {
            h2 { "Identity providers" }
            p { "People sign in through these; callback " code { (text(&providers, "redirect_uri")) } }
            (table(&["Issuer", "Client id", "User name claim", "Groups claim", "Allowed domains"],
                list(&providers, "identity_providers").into_iter().map(|provider| vec![
                    text(provider, "issuer").to_owned(), text(provider, "client_id").to_owned(),
                    text(provider, "username_claim").to_owned(),
                    provider["groups_claim"].as_str().unwrap_or("— (not synced)").to_owned(),
                    provider["allowed_domains"].as_array().into_iter().flatten()
                        .filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                ]).collect()))
        }
        section #federation-policies {
            h2 { "Federation policies" }
            p { "Workloads' tokens from these issuers are exchanged for Deputy tokens." }
            (table(&["Policy", "Issuer", "Audiences", "Subject claim", "Description"],
                list(&policies, "policies").into_iter().map(|policy| vec![
                    text(policy, "policy_id").to_owned(), text(&policy["oidc_policy"], "issuer").to_owned(),
                    policy["oidc_policy"]["audiences"].as_array().into_iter().flatten()
                        .filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                    text(&policy["oidc_policy"], "subject_claim").to_owned(), text(policy, "description").to_owned(),
                ]).collect()))
        }
        section #users {
            h2 { "Users" }
            (table(&["User", "Name", "Groups", "Active"],
                list(&users, "Resources").into_iter().map(|user| vec![
                    text(user, "userName").to_owned(), text(user, "displayName").to_owned(),
                    names(&user["groups"], "display"),
                    if user["active"] == false { "no".into() } else { "yes".into() },
                ]).collect()))
        }
        section #groups {
            h2 { "Groups" }
            (table(&["Group", "Members"],
                list(&groups, "Resources").into_iter().map(|group| vec![
                    text(group, "displayName").to_owned(), names(&group["members"], "display"),
                ]).collect()))
        }
        section #endpoints {
            h2 { "Serving endpoints" }
            (table(&["Endpoint", "Serves", "State", "Agent", "Workers", "Created"],
                list(&endpoints, "endpoints").into_iter().map(endpoint_row).collect()))
        }
        section #why {
            h2 { "Why" }
            p { "Explain whether a principal may do something, and which grant decides it." }
            form method="get" action="/console/admin" {
                label { "Principal " input type="text" name="principal" required value=(question.principal.as_deref().unwrap_or("")); }
                label { "Action " input type="text" name="action" required placeholder="SELECT" value=(question.action.as_deref().unwrap_or("")); }
                label { "Securable type " input type="text" name="securable_type" placeholder="table" value=(question.securable_type.as_deref().unwrap_or("")); }
                label { "Securable " input type="text" name="securable" required placeholder="main.sales.orders" value=(question.securable.as_deref().unwrap_or("")); }
                button type="submit" { "Explain" }
            }
            @match &why {
                Some(Ok(answer)) => pre #why-answer { (serde_json::to_string_pretty(answer).unwrap_or_default()) },
                Some(Err(failure)) => (failure_notice(failure)),
                None => {},
            }
        }
    };
    Ok(page(&signed_in.viewer(), Section::Admin, "Admin", body))
}

fn endpoint_row(endpoint: &Value) -> Vec<String> {
    let entity = &endpoint["config"]["served_entities"][0];
    let agent = &entity["deputy_agent"];
    let serves = match agent.is_object() {
        true => format!("agent ({})", text(agent, "kind")),
        false => entity["external_model"]["name"]
            .as_str()
            .or(entity["foundation_model"]["name"].as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    vec![
        text(endpoint, "name").to_owned(),
        serves,
        text(&endpoint["state"], "ready").to_owned(),
        agent["service_principal"]
            .as_str()
            .unwrap_or("—")
            .to_owned(),
        workers(&agent["worker_health"]),
        when(endpoint["creation_timestamp"].as_i64().unwrap_or_default()),
    ]
}

/// An agent's worker health in words: "2 of 2 running, 1 busy", "2, not started yet", "in the server".
fn workers(health: &Value) -> String {
    let count = |key: &str| health[key].as_u64().unwrap_or_default();
    match health["state"].as_str() {
        Some("RUNNING" | "IDLE") => format!(
            "{} of {} running, {} busy",
            count("running"),
            count("workers"),
            count("busy")
        ),
        Some("NOT_STARTED") => format!("{}, not started yet", count("workers")),
        Some("IN_SERVER") => "in the server".into(),
        _ => "—".into(),
    }
}

fn table(headings: &[&str], rows: Vec<Vec<String>>) -> Markup {
    html! {
        @if rows.is_empty() { p.empty { "None." } }
        @else {
            table {
                thead { tr { @for heading in headings { th { (heading) } } } }
                tbody { @for row in &rows { tr { @for cell in row { td { (cell) } } } } }
            }
        }
    }
}

async fn change_settings(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let fields = checked_form(&state.console, &signed_in, &headers, &body)?;
    signed_in.require_admin()?;
    let change = json!({
        "obo-enabled": fields.contains_key("obo-enabled"),
        "consent-required": fields.contains_key("consent-required"),
    });
    signed_in
        .api()
        .patch("/api/2.0/deputy/settings", &change)
        .await?;
    Ok(Redirect::to("/console/admin").into_response())
}
