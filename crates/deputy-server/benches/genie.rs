//! Genie latency on this machine, with the model taken out: a test-double OpenAI-compatible model on 127.0.0.1
//! answers every question at once with the same SQL. Measured over real HTTP against a real server:
//!   1. the SQL alone through the statement API (`POST /api/2.0/sql/statements`, synchronous);
//!   2. a whole Genie question: `start-conversation`, polling the message until COMPLETED, then the attachment's
//!      `query-result` (what `start_conversation_and_wait` plus `get_message_attachment_query_result` do).
//!
//! The user asking has SELECT through a grant and a row filter applies, as in production questions.
//! Run with `cargo bench -p deputy-server --bench genie`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Bench code: a panic is a failed run.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{Client, orders_workspace, report, sql};

const QUESTIONS: usize = 300;
const SQL: &str =
    "SELECT region, SUM(amount) AS total FROM main.sales.orders GROUP BY region ORDER BY region";
/// How often the client polls a message, as a tight client would.
const POLL_EVERY: Duration = Duration::from_micros(500);

/// The test double of an LLM provider: always the same SQL, no thinking time.
async fn instant_model() -> String {
    let reply = json!({
        "id": "test-double", "object": "chat.completion", "created": 1, "model": "sql-writer",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": SQL }, "finish_reason": "stop" }],
    });
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let reply = reply.clone();
            async move { axum::Json(reply) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1")
}

/// One question as a tight client asks it: start, poll until COMPLETED, read the result.
async fn ask(client: &Client, space: &str, token: &str) {
    use reqwest::Method;
    let started = client
        .send(
            Method::POST,
            &format!("/api/2.0/genie/spaces/{space}/start-conversation"),
            token,
            Some(json!({ "content": "What are the totals by region?" })),
        )
        .await;
    let path = format!(
        "/api/2.0/genie/spaces/{space}/conversations/{}/messages/{}",
        started["conversation_id"].as_str().unwrap(),
        started["message_id"].as_str().unwrap()
    );
    let message = loop {
        let message = client.send(Method::GET, &path, token, None).await;
        match message["status"].as_str().unwrap() {
            "COMPLETED" => break message,
            "FAILED" => panic!("{message}"),
            _ => tokio::time::sleep(POLL_EVERY).await,
        }
    };
    let attachment = message["attachments"][0]["attachment_id"].as_str().unwrap();
    let result = client
        .send(
            Method::GET,
            &format!("{path}/attachments/{attachment}/query-result"),
            token,
            None,
        )
        .await;
    assert_eq!(result["statement_response"]["result"]["row_count"], 2);
}

fn main() {
    support::block_on(run());
}

async fn run() {
    let (client, admin, alice, warehouse, _data_dir) = orders_workspace().await;
    let model = instant_model().await;
    use reqwest::Method;
    client
        .send(
            Method::POST,
            "/api/2.0/serving-endpoints",
            &admin,
            Some(json!({ "name": "sql-writer", "config": { "served_entities": [{ "external_model": {
                "provider": "openai", "name": "sql-writer", "task": "llm/v1/chat",
                "openai_config": { "openai_api_base": model, "openai_api_key_plaintext": "sk-test-double" } } }] } })),
        )
        .await;
    let space = client
        .send(
            Method::POST,
            "/api/2.0/genie/spaces",
            &admin,
            Some(json!({
                "title": "Sales", "warehouse_id": warehouse, "table_identifiers": ["main.sales.orders"],
                "serving_endpoint_name": "sql-writer",
                "examples": [{ "question": "Totals by region?", "sql": SQL }],
            })),
        )
        .await["space_id"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .send(
            Method::PATCH,
            &format!("/api/2.0/permissions/genie/{space}"),
            &admin,
            Some(json!({ "access_control_list": [{ "user_name": "alice@example.com", "permission_level": "CAN_RUN" }] })),
        )
        .await;

    for _ in 0..20 {
        sql(&client, &warehouse, &alice, SQL).await;
        ask(&client, &space, &alice).await;
    }
    let mut alone = Vec::with_capacity(QUESTIONS);
    let mut questions = Vec::with_capacity(QUESTIONS);
    // Interleaved, so both see the same machine load.
    for _ in 0..QUESTIONS {
        let start = Instant::now();
        let done = sql(&client, &warehouse, &alice, SQL).await;
        alone.push(start.elapsed());
        assert_eq!(done["result"]["row_count"], 2);
        let start = Instant::now();
        ask(&client, &space, &alice).await;
        questions.push(start.elapsed());
    }
    let sql_p50 = report("SQL alone (statement API, as alice, row filter)", alone);
    let genie_p50 = report("Genie question, model answering instantly", questions);
    println!(
        "{:<52} p50 {:>8.2} ms",
        "Genie's own cost at p50 (question - SQL)",
        (genie_p50.saturating_sub(sql_p50)).as_secs_f64() * 1e3
    );
}
