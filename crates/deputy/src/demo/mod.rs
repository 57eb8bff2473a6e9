//! `deputy demo`: the main job on a fresh machine. It starts a real server on the demo data directory, builds the
//! seed's scenario through the public REST API (a RAG agent answering from documents that each user may or may not
//! read), asks it the same question as different users, then shows the token path underneath.

mod console;
mod rag;
mod tokens;

use anyhow::Context;
use deputy_sdk::WorkspaceClient;
use serde_json::{Value, json};
use std::path::Path;

const SCIM: &str = "/api/2.0/preview/scim/v2";

pub async fn run(config: deputy_server::ServerConfig, exit_after: bool) -> anyhow::Result<()> {
    let server = deputy_server::bind(&config).await?;
    crate::log_startup(&server)?;
    let host = format!("http://{}", server.local_addr()?);
    // The server's own (absolute) data directory: the demo hands paths under it back to the server.
    let report = server.report.clone();
    let admin_token = std::fs::read_to_string(&report.admin_token_path)
        .with_context(|| format!("reading {}", report.admin_token_path.display()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        tokio::select! {
            _ = stopped => {},
            () = crate::shutdown_signal() => {},
        }
    }));

    let shown = show(&host, admin_token.trim(), &report.data_dir).await;
    if let Err(error) = &shown {
        eprintln!("demo failed: {error:#}");
    }
    if exit_after || shown.is_err() {
        let _ = stop.send(());
    } else {
        println!("\nThe server keeps running at {host} (Ctrl-C to stop). Try:");
        println!(
            "  DATABRICKS_HOST={host} DATABRICKS_TOKEN=$(cat {}) deputy audit tail",
            report.admin_token_path.display()
        );
    }
    serving.await.context("server task")??;
    shown
}

async fn show(host: &str, admin_token: &str, data_dir: &Path) -> anyhow::Result<()> {
    println!("== Deputy demo on {host}");
    rag::scenario(host, admin_token, data_dir).await?;
    tokens::walkthrough(host, admin_token).await?;
    console::sign_in_details(host, admin_token, data_dir).await
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

async fn ensure_user(admin: &WorkspaceClient, user_name: &str) -> anyhow::Result<Value> {
    let filter = format!("{SCIM}/Users?filter=userName%20eq%20%22{user_name}%22");
    if let Some(existing) = admin.get(&filter).await?["Resources"]
        .as_array()
        .and_then(|list| list.first())
    {
        return Ok(existing.clone());
    }
    Ok(admin
        .post(&format!("{SCIM}/Users"), &json!({ "userName": user_name }))
        .await?)
}

/// A personal access token for `principal_id`, issued by the admin (what the user would create for themselves).
async fn obo_personal_token(admin: &WorkspaceClient, principal_id: &str) -> anyhow::Result<String> {
    let body = json!({ "application_id": principal_id, "lifetime_seconds": 3600, "comment": "deputy demo" });
    let created = admin
        .post("/api/2.0/token-management/on-behalf-of/tokens", &body)
        .await?;
    Ok(text(&created["token_value"]))
}
