//! What MCP adds to a tool's work, on this machine: the same query by alice (a grant, a row filter, 1000 rows)
//! through the statement API and through the managed SQL MCP server's `execute_sql_read_only`, interleaved over real
//! HTTP against a real server; and a `tools/list`. The MCP call authenticates, checks the server's scopes, decides
//! the warehouse, audits the tool call and then makes the very same statement call in process.
//! Run with `cargo bench -p deputy-server --bench mcp`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Bench code: a panic is a failed run.

mod support;

use serde_json::{Value, json};
use std::time::Instant;
use support::{Client, orders_workspace, report, sql};

const CALLS: usize = 500;
const SQL: &str =
    "SELECT region, SUM(amount) AS total FROM main.sales.orders GROUP BY region ORDER BY region";

async fn mcp(client: &Client, token: &str, method: &str, params: Value) -> Value {
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let answer = client
        .send(
            reqwest::Method::POST,
            "/api/2.0/mcp/sql",
            token,
            Some(message),
        )
        .await;
    assert!(answer["error"].is_null(), "{answer}");
    answer
}

fn main() {
    support::block_on(run());
}

async fn run() {
    let (client, _admin, alice, warehouse, _data_dir) = orders_workspace().await;
    let call = json!({ "name": "execute_sql_read_only", "arguments": { "query": SQL } });
    for _ in 0..20 {
        sql(&client, &warehouse, &alice, SQL).await;
        mcp(&client, &alice, "tools/call", call.clone()).await;
    }
    let (mut rest, mut tool, mut listed) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so all three see the same machine load.
    for _ in 0..CALLS {
        let start = Instant::now();
        let done = sql(&client, &warehouse, &alice, SQL).await;
        rest.push(start.elapsed());
        assert_eq!(done["result"]["row_count"], 2);
        let start = Instant::now();
        let answer = mcp(&client, &alice, "tools/call", call.clone()).await;
        tool.push(start.elapsed());
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        let start = Instant::now();
        mcp(&client, &alice, "tools/list", json!({})).await;
        listed.push(start.elapsed());
    }
    let rest_p50 = report("the query through the statement API (REST)", rest);
    let tool_p50 = report("the query through MCP tools/call", tool);
    report("MCP tools/list (the SQL server)", listed);
    println!(
        "{:<52} p50 {:>8.2} ms",
        "MCP's own cost at p50 (tools/call - REST)",
        tool_p50.saturating_sub(rest_p50).as_secs_f64() * 1e3
    );
}
