//! The seed's scenario: a documents table whose row filter shows each user the public documents and those of their
//! department, a delta-sync vector index over it embedded by the built-in model, and the seed's RAG agent
//! (`python/examples/rag_agent`, a `ChatAgent` whose `VectorSearchRetrieverTool` gets the user's client) deployed
//! behind a serving endpoint with on-behalf-of access. The same question from three users gets three answers, each
//! from the documents that user may read. Every step is idempotent (the agent is redeployed each time), so the demo
//! can run again on the same data directory.

use super::{SCIM, ensure_user, obo_personal_token, text};
use anyhow::Context;
use deputy_sdk::WorkspaceClient;
use serde_json::{Value, json};
use std::path::Path;

const QUESTION: &str = "What are we launching next quarter?";
const INDEX: &str = "demo.docs.documents_index";
const AGENT_ENDPOINT: &str = "rag-agent";

/// `(title, department, body)`: `everyone` is readable by all, the rest by the department's group.
const DOCUMENTS: [(&str, &str, &str); 6] = [
    (
        "Holiday calendar",
        "everyone",
        "The office is closed on the first Monday of May.",
    ),
    (
        "Falcon launch plan",
        "engineering",
        "Project Falcon, our new search engine, launches next quarter.",
    ),
    (
        "Falcon architecture",
        "engineering",
        "Falcon shards the index across twelve storage nodes.",
    ),
    (
        "Acme renewal",
        "sales",
        "Acme renews its contract next quarter for two million dollars.",
    ),
    (
        "Pricing change",
        "sales",
        "List prices rise by five percent next quarter.",
    ),
    (
        "Board minutes",
        "executives",
        "The board approved the acquisition of Orbit Labs next quarter.",
    ),
];

/// `(user, department group or none)`: carol may ask the agent but may not read the index.
pub(super) const USERS: [(&str, Option<&str>); 3] = [
    ("alice@example.com", Some("engineering")),
    ("bob@example.com", Some("sales")),
    ("carol@example.com", None),
];

pub async fn scenario(host: &str, admin_token: &str, data_dir: &Path) -> anyhow::Result<()> {
    let python = agent_python()?;
    let admin = WorkspaceClient::new(host, deputy_sdk::Credentials::Token(admin_token.into()));
    ensure_models().await?;

    println!("\n1. Users and groups: alice (engineering), bob (sales), carol (no department)");
    let mut tokens = Vec::new();
    for (user_name, group) in USERS {
        let user = ensure_user(&admin, user_name).await?;
        if let Some(group) = group {
            ensure_group_member(&admin, group, &text(&user["id"])).await?;
        }
        tokens.push((
            user_name,
            obo_personal_token(&admin, &text(&user["id"])).await?,
        ));
    }

    let warehouse = first_warehouse(&admin).await?;
    println!("2. A documents table with a row filter (everyone's documents + your department's)");
    ensure_documents(&admin, &warehouse).await?;
    println!("3. A delta-sync vector index over it, embedded by the built-in MiniLM model");
    ensure_index(&admin, &warehouse).await?;
    println!(
        "4. The seed's RAG agent (MLflow ChatAgent + VectorSearchRetrieverTool), deployed on behalf of users"
    );
    ensure_agent(&admin, host, admin_token, data_dir, &python).await?;
    admin
        .patch("/api/2.0/deputy/settings", &json!({ "obo-enabled": true }))
        .await?;

    println!("\n5. The same question from each user: \"{QUESTION}\"");
    for (user_name, token) in &tokens {
        let user = WorkspaceClient::new(host, deputy_sdk::Credentials::Token(token.clone()));
        let reply = user
            .post(
                &format!("/serving-endpoints/{AGENT_ENDPOINT}/invocations"),
                &json!({ "messages": [{ "role": "user", "content": QUESTION }] }),
            )
            .await
            .with_context(|| format!("asking the agent as {user_name}"))?;
        print_reply(user_name, &reply);
    }
    println!(
        "\n   Each answer used only the documents its user may SELECT: the index applies the table's row filter for \
         the asking user, and carol, without SELECT on the index, got the agent's best effort without the tool."
    );
    Ok(())
}

fn print_reply(user_name: &str, reply: &Value) {
    let answer = reply["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .map(|message| text(&message["content"]))
        .unwrap_or_default();
    let outputs = &reply["custom_outputs"];
    let sources: Vec<String> = outputs["sources"]
        .as_array()
        .map(|list| list.iter().map(text).collect())
        .unwrap_or_default();
    println!("\n   {user_name}");
    println!("     answer:  {}", answer.trim());
    if sources.is_empty() {
        println!("     sources: none");
    } else {
        println!("     sources: {}", sources.join("; "));
    }
    if let Some(skipped) = outputs["skipped_search"].as_str() {
        let first_line = skipped.lines().next().unwrap_or_default();
        println!("     (document search skipped: {first_line})");
    }
}

/// The interpreter that runs Python agents: it must have the agent runtime's packages, which are all the example agent
/// needs.
fn agent_python() -> anyhow::Result<String> {
    let python = std::env::var("DEPUTY_AGENT_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import databricks.sdk, mlflow"])
        .output();
    match probe {
        Ok(output) if output.status.success() => Ok(python),
        _ => anyhow::bail!(
            "`{python}` cannot import databricks.sdk and mlflow; run ./scripts/demo.sh, which prepares the agent \
             environment, or set DEPUTY_AGENT_PYTHON to a Python with python/deputy-agent-runtime/requirements.txt"
        ),
    }
}

async fn ensure_models() -> anyhow::Result<()> {
    if deputy_models::installed_models(&deputy_models::default_models_dir()).is_none() {
        println!("\n(installing the built-in models once: MiniLM embeddings and SmolLM2 chat)");
        crate::agent_commands::install_models(None).await?;
    }
    Ok(())
}

async fn ensure_group_member(
    admin: &WorkspaceClient,
    group: &str,
    user_id: &str,
) -> anyhow::Result<()> {
    let filter = format!("{SCIM}/Groups?filter=displayName%20eq%20%22{group}%22");
    let existing = admin.get(&filter).await?["Resources"]
        .as_array()
        .and_then(|list| list.first())
        .cloned();
    let member = json!({ "value": user_id });
    match existing {
        None => {
            admin
                .post(
                    &format!("{SCIM}/Groups"),
                    &json!({ "displayName": group, "members": [member] }),
                )
                .await?;
        }
        Some(existing) => {
            let patch = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "add", "path": "members", "value": [member] }],
            });
            admin
                .patch(&format!("{SCIM}/Groups/{}", text(&existing["id"])), &patch)
                .await?;
        }
    }
    Ok(())
}

async fn first_warehouse(admin: &WorkspaceClient) -> anyhow::Result<String> {
    let listed = admin.get("/api/2.0/sql/warehouses").await?;
    if let Some(id) = listed["warehouses"]
        .as_array()
        .and_then(|list| list.first())
        .map(|warehouse| text(&warehouse["id"]))
    {
        return Ok(id);
    }
    let created = admin
        .post(
            "/api/2.0/sql/warehouses",
            &json!({ "name": "demo-warehouse" }),
        )
        .await?;
    Ok(text(&created["id"]))
}

async fn run_sql(admin: &WorkspaceClient, warehouse: &str, statement: &str) -> anyhow::Result<()> {
    let body = json!({ "statement": statement, "warehouse_id": warehouse, "wait_timeout": "30s" });
    let result = admin.post("/api/2.0/sql/statements", &body).await?;
    let state = text(&result["status"]["state"]);
    anyhow::ensure!(
        state == "SUCCEEDED",
        "`{statement}` ended {state}: {}",
        text(&result["status"]["error"]["message"])
    );
    Ok(())
}

async fn ensure_documents(admin: &WorkspaceClient, warehouse: &str) -> anyhow::Result<()> {
    if admin
        .get("/api/2.1/unity-catalog/tables/demo.docs.documents")
        .await
        .is_ok()
    {
        return Ok(());
    }
    let rows: Vec<String> = DOCUMENTS
        .iter()
        .enumerate()
        .map(|(id, (title, department, body))| {
            format!("({id}, '{title}', '{department}', '{body}')")
        })
        .collect();
    let statements = [
        "CREATE CATALOG IF NOT EXISTS demo".to_owned(),
        "CREATE SCHEMA IF NOT EXISTS demo.docs".to_owned(),
        "CREATE TABLE demo.docs.documents (id INT, title STRING, department STRING, body STRING)".to_owned(),
        format!("INSERT INTO demo.docs.documents VALUES {}", rows.join(", ")),
        "CREATE FUNCTION demo.docs.readable(department STRING) RETURNS BOOLEAN RETURN department = 'everyone' \
         OR is_account_group_member(department) OR is_account_group_member('admins')"
            .to_owned(),
        "ALTER TABLE demo.docs.documents SET ROW FILTER demo.docs.readable ON (department)".to_owned(),
        "GRANT USE CATALOG ON CATALOG demo TO `users`".to_owned(),
        "GRANT USE SCHEMA ON SCHEMA demo.docs TO `users`".to_owned(),
    ];
    for statement in &statements {
        run_sql(admin, warehouse, statement).await?;
    }
    Ok(())
}

async fn ensure_index(admin: &WorkspaceClient, warehouse: &str) -> anyhow::Result<()> {
    const ENDPOINTS: &str = "/api/2.0/vector-search/endpoints";
    if admin.get(&format!("{ENDPOINTS}/demo-docs")).await.is_err() {
        admin
            .post(
                ENDPOINTS,
                &json!({ "name": "demo-docs", "endpoint_type": "STANDARD" }),
            )
            .await?;
    }
    let index_path = format!("/api/2.0/vector-search/indexes/{INDEX}");
    if admin.get(&index_path).await.is_err() {
        let spec = json!({
            "name": INDEX, "endpoint_name": "demo-docs", "primary_key": "id", "index_type": "DELTA_SYNC",
            "delta_sync_index_spec": {
                "source_table": "demo.docs.documents", "pipeline_type": "TRIGGERED",
                "embedding_source_columns": [{ "name": "body", "embedding_model_endpoint_name": "deputy-embed-minilm" }],
            },
        });
        admin
            .post("/api/2.0/vector-search/indexes", &spec)
            .await
            .context("creating the vector index")?;
        // alice and bob may query the index (each through the row filter); carol may not.
        for user_name in ["alice@example.com", "bob@example.com"] {
            run_sql(
                admin,
                warehouse,
                &format!("GRANT SELECT ON TABLE {INDEX} TO `{user_name}`"),
            )
            .await?;
        }
    }
    let index = admin.get(&index_path).await?;
    println!(
        "   {INDEX}: {} rows indexed, ready = {}",
        text(&index["status"]["indexed_row_count"]),
        text(&index["status"]["ready"])
    );
    Ok(())
}

async fn ensure_agent(
    admin: &WorkspaceClient,
    host: &str,
    admin_token: &str,
    data_dir: &Path,
    python: &str,
) -> anyhow::Result<()> {
    let model_dir = data_dir.join("demo-rag-agent-model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)?;
    }
    // The example's files ship inside the binary, so the demo works wherever the binary is.
    let example_dir = deputy_python_files::RAG_EXAMPLE
        .write_under(&data_dir.join("python"))
        .context("writing the example agent's files")?;
    // MLflow validates a ChatAgent by running it once while logging it, so it is logged with the admin's
    // credentials, as an author would in a notebook.
    let logged = tokio::process::Command::new(python)
        .arg(example_dir.join("log_agent.py"))
        .arg(&model_dir)
        .env("DATABRICKS_HOST", host)
        .env("DATABRICKS_TOKEN", admin_token)
        .output()
        .await
        .context("running log_agent.py")?;
    anyhow::ensure!(
        logged.status.success(),
        "logging the agent failed:\n{}",
        String::from_utf8_lossy(&logged.stderr)
    );
    let deployed = admin
        .post(
            "/api/2.0/deputy/agents",
            &json!({ "name": AGENT_ENDPOINT, "source_path": model_dir, "workers": 2 }),
        )
        .await
        .context("deploying the agent")?;
    println!(
        "   endpoint {AGENT_ENDPOINT}: user scopes {}",
        deployed["config"]["served_entities"][0]["deputy_agent"]["user_api_scopes"]
    );
    admin
        .put(
            &format!(
                "/api/2.0/permissions/serving-endpoints/{}",
                text(&deployed["id"])
            ),
            &json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_QUERY" }] }),
        )
        .await?;
    Ok(())
}
