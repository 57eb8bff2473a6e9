//! The smallest Rust agent: answers `ok <user>` without calling back to Deputy, so that invoking it measures the
//! serving path (authenticate, authorize, token exchange, audit, worker round trip) and nothing else.

use deputy_sdk::agent::{
    AgentError, ChatAgent, ChatAgentMessage, ChatAgentRequest, ChatAgentResponse, RequestContext,
    serve,
};

struct Trivial;

impl ChatAgent for Trivial {
    async fn predict(
        &self,
        _request: ChatAgentRequest,
        context: &RequestContext,
    ) -> Result<ChatAgentResponse, AgentError> {
        let user = context.user_id.as_deref().unwrap_or("?");
        Ok(ChatAgentResponse {
            messages: vec![ChatAgentMessage::assistant(format!("ok {user}"))],
            custom_outputs: None,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    serve(Trivial).await
}
