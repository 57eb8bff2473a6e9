//! This server's public API called from inside it, for declarative agents' tools and the managed MCP servers'
//! tools: requests go through the whole application (router, authentication, audit of delegated calls, scope check,
//! handler) on the route table built once, exactly as a client's over HTTP would.

use crate::state::AppState;
use axum::body::Body;
use axum::http::{Method, Request, header};
use deputy_access::audit::AuditEntry;
use deputy_access::credentials::Caller;
use deputy_agents::public_api::{CallError, PublicApi};
use deputy_store::specs::FunctionSpec;
use serde_json::Value;
use tower::ServiceExt;

/// Marks an in-process request made for a tool of the MCP server at this resource (its absolute URL): the
/// authentication layer then accepts a token bound to that resource, as it did for the MCP request itself. Only
/// code in this crate can put it on a request; nothing from the network becomes a request extension.
#[derive(Debug, Clone)]
pub(crate) struct ToolOfResource(pub String);

/// The public API in process, for one caller's tools.
pub struct InProcessApi {
    state: AppState,
    resource: Option<String>,
}

impl InProcessApi {
    pub fn new(state: AppState) -> InProcessApi {
        InProcessApi {
            state,
            resource: None,
        }
    }

    /// For the tools of the MCP server at `resource`, whose tokens may be bound to it.
    pub fn for_resource(state: AppState, resource: String) -> InProcessApi {
        InProcessApi {
            state,
            resource: Some(resource),
        }
    }

    async fn send(
        &self,
        method: Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let internal = |message: String| CallError {
            error_code: "INTERNAL_ERROR".into(),
            message,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .map_err(|error| internal(error.to_string()))?;
        if let Some(resource) = &self.resource {
            request
                .extensions_mut()
                .insert(ToolOfResource(resource.clone()));
        }
        let response = self.call(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), crate::MAX_BODY_BYTES)
            .await
            .map_err(|error| internal(error.to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        Err(CallError {
            error_code: answer["error_code"]
                .as_str()
                .unwrap_or("INTERNAL_ERROR")
                .to_owned(),
            message: answer["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned),
        })
    }
}

impl InProcessApi {
    /// One request through the whole application.
    async fn call(&self, request: Request<Body>) -> axum::response::Response {
        match crate::api_app(self.state.clone()).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The web console's pages call the API as the signed-in person through here.
#[async_trait::async_trait]
impl deputy_console::api::Api for InProcessApi {
    async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.call(request).await
    }
}

#[async_trait::async_trait]
impl PublicApi for InProcessApi {
    async fn post(&self, token: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        self.send(Method::POST, token, path, Some(body)).await
    }

    async fn get(&self, token: &str, path: &str) -> Result<Value, CallError> {
        self.send(Method::GET, token, path, None).await
    }

    async fn function_spec(&self, name: &str) -> Result<FunctionSpec, CallError> {
        let missing = || CallError {
            error_code: "RESOURCE_DOES_NOT_EXIST".into(),
            message: format!("function `{name}` does not exist"),
        };
        let namespace = deputy_catalog::namespace_of(deputy_authz::SecurableKind::Function);
        let record = self
            .state
            .access()
            .store()
            .find_securable(namespace, name)
            .await
            .map_err(|error| CallError {
                error_code: "INTERNAL_ERROR".into(),
                message: error.to_string(),
            })?
            .ok_or_else(missing)?;
        serde_json::from_str(&record.spec).map_err(|_| missing())
    }

    async fn refuse_tool(
        &self,
        acting: &Caller,
        endpoint: &str,
        tool: &str,
        reason: &str,
    ) -> Result<(), String> {
        let event = AuditEntry::new(
            acting,
            deputy_access::audit::actors_of(acting),
            Some(endpoint.to_owned()),
            "agent.tool-call",
        )
        .securable(format!("tool:{tool}"))
        .denied(reason);
        self.state
            .access()
            .record(&[event])
            .await
            .map_err(|error| error.message)
    }
}
