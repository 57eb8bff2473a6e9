//! Starting a declarative agent's request: the tokens it acts with, which tools that credential may use (audited as
//! `agent.tool-access`, skipped or refused per `on_missing_access`), and this server's API as the loop's
//! [`PublicApi`]: in process, on the route table built once, so every model and tool call goes through the same
//! authentication, scope check, authorization and audit as any client's request. The loop itself is
//! `deputy_agents::declarative_loop`.

use crate::in_process::InProcessApi;
use crate::state::AppState;
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::audit::AuditEntry;
use deputy_access::credentials::Caller;
use deputy_agents::DeployedAgent;
use deputy_agents::declarative::{DeclarativeAgent, OnMissingAccess, ToolSpec, parse};
use deputy_agents::declarative_loop::{Run, conversation};
use deputy_agents::worker::WorkerEvent;
use deputy_core::{ApiScope, ScopeSet};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One request's whole loop may run this long; the tokens it runs with live as long (the on-behalf-of token's
/// lifetime is the same, see `routes::serving`).
const REQUEST_TIMEOUT_SECONDS: i64 = 600;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(REQUEST_TIMEOUT_SECONDS as u64);

/// Runs one request of the declarative agent deployed as `endpoint`. `user_token` is the request's on-behalf-of
/// token (`None` when on-behalf-of access is off). A tool the credential cannot use fails the request here, before
/// any answer starts, when the agent says `fail`; the loop then runs in the background and reports as a worker does.
pub async fn invoke(
    state: &AppState,
    endpoint: &str,
    agent: &DeployedAgent,
    user_token: Option<String>,
    body: &Value,
    stream: bool,
) -> Result<mpsc::Receiver<WorkerEvent>, Error> {
    let artifact = state.serving().agents().artifact_path(agent);
    let text = std::fs::read_to_string(artifact).map_err(Error::internal)?;
    let (definition, declared) = parse(&text).map_err(|error| Error::internal(error.0))?;
    let conversation = conversation(&definition, body)?;
    let tool_token = match user_token {
        Some(token) => token,
        None => state.access().credentials().service_principal_token(
            &agent.service_principal,
            declared,
            REQUEST_TIMEOUT_SECONDS,
        )?,
    };
    let acting = state
        .access()
        .credentials()
        .authenticate(&tool_token)
        .await
        .map_err(|error| Error::internal(error.to_string()))?;
    let (tools, skipped) = usable_tools(state.access(), endpoint, &acting, &definition).await?;
    if definition.on_missing_access == OnMissingAccess::Fail && !skipped.is_empty() {
        let missing: Vec<String> = skipped
            .iter()
            .map(|skip| format!("tool `{}`: {}", skip.tool, skip.reason))
            .collect();
        return Err(Error::permission_denied(format!(
            "the agent `{endpoint}` cannot run for {}: {}",
            acting.identity.name,
            missing.join("; ")
        )));
    }
    let model_token = state.access().credentials().service_principal_token(
        &agent.service_principal,
        ScopeSet::from(ApiScope::ServingEndpoints),
        REQUEST_TIMEOUT_SECONDS,
    )?;
    let run = Run {
        api: Arc::new(InProcessApi::new(state.clone())),
        endpoint: endpoint.to_owned(),
        acting,
        model: definition.model.clone(),
        max_steps: definition.max_steps,
        tools,
        skipped: skipped.iter().map(Skipped::to_json).collect(),
        tool_token,
        model_token,
    };
    let (events, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let finished =
            tokio::time::timeout(REQUEST_TIMEOUT, run.run(conversation, stream, &events)).await;
        if finished.is_err() {
            let _ = events
                .send(WorkerEvent::Error {
                    error_code: "INTERNAL_ERROR".into(),
                    message: format!(
                        "the agent gave no answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                })
                .await;
        }
    });
    Ok(receiver)
}

/// A tool left out of a request, and why.
struct Skipped {
    tool: String,
    reason: String,
}

impl Skipped {
    fn to_json(&self) -> Value {
        json!({ "tool": self.tool, "reason": self.reason })
    }
}

/// Splits the agent's tools into those `acting` may use and those it may not, and audits every decision.
async fn usable_tools(
    access: &Arc<Access>,
    endpoint: &str,
    acting: &Caller,
    agent: &DeclarativeAgent,
) -> Result<(Vec<ToolSpec>, Vec<Skipped>), Error> {
    let (mut usable, mut skipped, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for tool in &agent.tools {
        let mut missing = Vec::new();
        for resource in tool.resources() {
            let reason = match deputy_serving::resource_decision(
                access,
                acting,
                &resource,
                Some(tool.scope()),
            )
            .await
            {
                Ok((decision, _)) if decision.is_allowed() => None,
                Ok((decision, _)) => Some(
                    decision
                        .reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                // A resource that cannot be found (a deleted warehouse or endpoint) is as unusable as a forbidden one.
                Err(error) => Some(error.message),
            };
            if let Some(reason) = reason {
                missing.push(format!(
                    "{} `{}`: {reason}",
                    resource.kind.key(),
                    resource.name
                ));
            }
        }
        let name = tool.tool_name();
        let entry = audit_event(endpoint, acting, "agent.tool-access", tool);
        if missing.is_empty() {
            events.push(entry.allowed(format!("{} may use tool `{name}`", acting.identity.name)));
            usable.push(tool.clone());
        } else {
            let reason = missing.join("; ");
            events.push(entry.denied(reason.clone()));
            skipped.push(Skipped { tool: name, reason });
        }
    }
    access.record(&events).await?;
    Ok((usable, skipped))
}

fn audit_event(endpoint: &str, acting: &Caller, api: &str, tool: &ToolSpec) -> AuditEntry {
    let actors = deputy_access::audit::actors_of(acting);
    AuditEntry::new(acting, actors, Some(endpoint.to_owned()), api)
        .scope(tool.scope())
        .securable(
            tool.resources()
                .iter()
                .map(|resource| format!("{}:{}", resource.kind.key(), resource.name))
                .collect::<Vec<_>>()
                .join(" "),
        )
}
