//! What the HTTP benchmarks share: a real server on loopback, a client, alice with SELECT on a row-filtered orders
//! table and CAN_USE on the warehouse, and the percentile report.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // Bench code; not every bench uses every helper.

use serde_json::{Value, json};
use std::time::Duration;

pub const ROWS: usize = 1000;

pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

pub fn report(name: &str, mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let p50 = percentile(&latencies, 0.50);
    println!(
        "{name:<52} p50 {:>8.2} ms  p99 {:>8.2} ms  ({} runs)",
        p50.as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
    p50
}

pub struct Client {
    pub http: reqwest::Client,
    pub host: String,
}

impl Client {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.host))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {body}");
        body
    }
}

pub async fn sql(client: &Client, warehouse: &str, token: &str, statement: &str) -> Value {
    client
        .send(
            reqwest::Method::POST,
            "/api/2.0/sql/statements",
            token,
            Some(
                json!({ "statement": statement, "warehouse_id": warehouse, "wait_timeout": "30s" }),
            ),
        )
        .await
}

/// A server on a fresh data directory, with `main.sales.orders` (`ROWS` rows, a row filter hiding APAC) that alice
/// may read on the warehouse she may use: `(client, admin token, alice's token, warehouse id)`.
pub async fn orders_workspace() -> (Client, String, String, String, tempfile::TempDir) {
    use reqwest::Method;
    let data_dir = tempfile::tempdir().unwrap();
    let config = deputy_server::ServerConfig {
        data_dir: data_dir.path().to_owned(),
        database_url: None,
        storage_dir: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
    };
    let server = deputy_server::bind(&config).await.unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        host: format!("http://{}", server.local_addr().unwrap()),
    };
    let admin = std::fs::read_to_string(&server.report.admin_token_path)
        .unwrap()
        .trim()
        .to_owned();
    tokio::spawn(server.run(std::future::pending()));
    let warehouse = client
        .send(Method::GET, "/api/2.0/sql/warehouses", &admin, None)
        .await["warehouses"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = client
        .send(
            Method::POST,
            "/api/2.0/preview/scim/v2/Users",
            &admin,
            Some(json!({ "userName": "alice@example.com" })),
        )
        .await;
    let alice = client
        .send(
            Method::POST,
            "/api/2.0/token-management/on-behalf-of/tokens",
            &admin,
            Some(json!({ "application_id": user["id"] })),
        )
        .await["token_value"]
        .as_str()
        .unwrap()
        .to_owned();
    let values: Vec<String> = (0..ROWS)
        .map(|i| format!("({i}, '{}', {}.5)", ["EU", "US", "APAC"][i % 3], i % 97))
        .collect();
    for statement in [
        "CREATE CATALOG main".to_owned(),
        "CREATE SCHEMA main.sales".to_owned(),
        "CREATE TABLE main.sales.orders (id INT, region STRING, amount DOUBLE)".to_owned(),
        format!("INSERT INTO main.sales.orders VALUES {}", values.join(", ")),
        "CREATE FUNCTION main.sales.not_apac(region STRING) RETURNS BOOLEAN RETURN region <> 'APAC'".to_owned(),
        "ALTER TABLE main.sales.orders SET ROW FILTER main.sales.not_apac ON (region)".to_owned(),
        "GRANT USE CATALOG ON CATALOG main TO `alice@example.com`".to_owned(),
        "GRANT USE SCHEMA ON SCHEMA main.sales TO `alice@example.com`".to_owned(),
        "GRANT SELECT ON TABLE main.sales.orders TO `alice@example.com`".to_owned(),
    ] {
        let done = sql(&client, &warehouse, &admin, &statement).await;
        assert_eq!(done["status"]["state"], "SUCCEEDED", "{statement}: {done}");
    }
    client
        .send(
            Method::PATCH,
            &format!("/api/2.0/permissions/warehouses/{warehouse}"),
            &admin,
            Some(json!({ "access_control_list": [{ "user_name": "alice@example.com", "permission_level": "CAN_USE" }] })),
        )
        .await;
    (client, admin, alice, warehouse, data_dir)
}

/// Runs a bench's `run` on a multi-threaded runtime, as the server runs.
pub fn block_on(run: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run);
}
