//! A small Rust agent: tells the user who they are and which catalogs they can see, asking Deputy with the user's
//! own (downscoped) token, and which principal the agent itself runs as, asking with its system token.
//!
//! Build with `cargo build -p deputy-sdk --example whoami_agent`, then deploy the binary:
//! `deputy agents deploy target/debug/examples/whoami_agent --name whoami --user-scope iam.scim
//!  --user-scope catalog.catalogs`.

use deputy_sdk::agent::{
    AgentError, ChatAgent, ChatAgentMessage, ChatAgentRequest, ChatAgentResponse, RequestContext,
    serve,
};

struct WhoAmI;

impl ChatAgent for WhoAmI {
    async fn predict(
        &self,
        _request: ChatAgentRequest,
        context: &RequestContext,
    ) -> Result<ChatAgentResponse, AgentError> {
        let system = context.system_client();
        let me = system.get("/api/2.0/preview/scim/v2/Me").await?;
        let agent_name = me["displayName"].as_str().unwrap_or("?").to_owned();
        let answer = match context.user_client() {
            Ok(user) => {
                let me = user.get("/api/2.0/preview/scim/v2/Me").await?;
                let catalogs = user.get("/api/2.1/unity-catalog/catalogs").await?;
                let names: Vec<&str> = catalogs["catalogs"]
                    .as_array()
                    .map(|list| list.iter().filter_map(|c| c["name"].as_str()).collect())
                    .unwrap_or_default();
                format!(
                    "You are {}; you can see catalogs [{}]. I am {agent_name}.",
                    me["userName"].as_str().unwrap_or("?"),
                    names.join(", ")
                )
            }
            Err(error) => format!("I cannot act for you ({error}). I am {agent_name}."),
        };
        Ok(ChatAgentResponse {
            messages: vec![ChatAgentMessage::assistant(answer)],
            custom_outputs: None,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    serve(WhoAmI).await
}
