//! Router-level tests of statement execution: the warehouse ACL, Unity Catalog grants, a row filter evaluated for the
//! end user, asynchronous statements, parameters, SQL errors, and statements private to their submitter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Harness, harness};

struct Sql {
    h: Harness,
    warehouse: String,
}

impl Sql {
    async fn new() -> Sql {
        let h = harness().await;
        let warehouse = h.default_warehouse().await;
        Sql { h, warehouse }
    }

    async fn submit(&self, token: &str, statement: &str, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({ "statement": statement, "warehouse_id": self.warehouse, "wait_timeout": "30s" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let reply = self
            .h
            .call(
                Method::POST,
                "/api/2.0/sql/statements",
                Some(token),
                Some(body),
            )
            .await;
        (reply.status, reply.body)
    }

    /// Runs a statement that must succeed and returns its rows.
    async fn rows(&self, token: &str, statement: &str) -> Vec<Value> {
        let (status, body) = self.submit(token, statement, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{statement}: {body}");
        assert_eq!(body["status"]["state"], "SUCCEEDED", "{statement}: {body}");
        body["result"]["data_array"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn admin(&self, statement: &str) -> Vec<Value> {
        self.rows(&self.h.admin_token.clone(), statement).await
    }
}

async fn orders(sql: &Sql) {
    sql.admin("CREATE CATALOG main").await;
    sql.admin("CREATE SCHEMA main.sales").await;
    sql.admin("CREATE TABLE main.sales.orders (id INT, region STRING, amount DOUBLE)")
        .await;
    sql.admin(
        "INSERT INTO main.sales.orders VALUES (1, 'EU', 10.0), (2, 'US', 20.0), (3, 'EU', 30.0)",
    )
    .await;
}

#[tokio::test]
async fn statements_run_as_the_caller_under_warehouse_acls_and_grants() {
    let sql = Sql::new().await;
    orders(&sql).await;
    let rows = sql
        .admin("SELECT id, region FROM main.sales.orders ORDER BY id")
        .await;
    assert_eq!(
        rows,
        vec![json!(["1", "EU"]), json!(["2", "US"]), json!(["3", "EU"])]
    );

    let alice_token = sql
        .h
        .new_user_token("alice@example.com", &["all-apis"])
        .await;
    let (status, body) = sql.submit(&alice_token, "SELECT 1", json!({})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a warehouse alice may not see: {body}"
    );

    let acl = json!({ "access_control_list": [{ "user_name": "alice@example.com", "permission_level": "CAN_USE" }] });
    let path = format!("/api/2.0/permissions/warehouses/{}", sql.warehouse);
    assert_eq!(
        sql.h
            .call(Method::PATCH, &path, Some(&sql.h.admin_token), Some(acl))
            .await
            .status,
        StatusCode::OK
    );
    let (_, body) = sql
        .submit(&alice_token, "SELECT * FROM main.sales.orders", json!({}))
        .await;
    assert_eq!(body["status"]["state"], "FAILED", "{body}");
    assert!(
        body["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be found"),
        "{body}"
    );

    for grant in [
        "GRANT USE CATALOG ON CATALOG main TO `alice@example.com`",
        "GRANT USE SCHEMA ON SCHEMA main.sales TO `alice@example.com`",
        "GRANT SELECT ON TABLE main.sales.orders TO `alice@example.com`",
    ] {
        sql.admin(grant).await;
    }
    assert_eq!(
        sql.rows(&alice_token, "SELECT COUNT(*) FROM main.sales.orders")
            .await,
        vec![json!(["3"])]
    );

    // A row filter written against the end user: alice sees EU rows only, the admin everything.
    sql.admin("CREATE FUNCTION main.sales.eu_only(region STRING) RETURNS BOOLEAN RETURN region = 'EU' OR is_account_group_member('admins')").await;
    sql.admin("ALTER TABLE main.sales.orders SET ROW FILTER main.sales.eu_only ON (region)")
        .await;
    assert_eq!(
        sql.rows(&alice_token, "SELECT COUNT(*) FROM main.sales.orders")
            .await,
        vec![json!(["2"])]
    );
    assert_eq!(
        sql.admin("SELECT COUNT(*) FROM main.sales.orders").await,
        vec![json!(["3"])]
    );
    let table = sql
        .h
        .call(
            Method::GET,
            "/api/2.1/unity-catalog/tables/main.sales.orders",
            Some(&sql.h.admin_token),
            None,
        )
        .await;
    assert_eq!(
        table.body["row_filter"]["function_name"],
        "main.sales.eu_only"
    );
}

#[tokio::test]
async fn asynchronous_statements_parameters_errors_and_privacy() {
    let sql = Sql::new().await;
    orders(&sql).await;
    let (status, body) = sql
        .submit(
            &sql.h.admin_token,
            "SELECT id FROM main.sales.orders WHERE region = :region ORDER BY id",
            json!({ "wait_timeout": "0s", "parameters": [{ "name": "region", "value": "EU" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = body["statement_id"].as_str().unwrap().to_owned();
    let mut state = body["status"]["state"].as_str().unwrap().to_owned();
    let mut polled = body;
    for _ in 0..200 {
        if state == "SUCCEEDED" || state == "FAILED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        polled = sql
            .h
            .call(
                Method::GET,
                &format!("/api/2.0/sql/statements/{id}"),
                Some(&sql.h.admin_token),
                None,
            )
            .await
            .body;
        state = polled["status"]["state"].as_str().unwrap().to_owned();
    }
    assert_eq!(state, "SUCCEEDED", "{polled}");
    assert_eq!(polled["result"]["data_array"], json!([["1"], ["3"]]));
    assert_eq!(
        polled["manifest"]["schema"]["columns"][0]["type_name"],
        "INT"
    );

    // Someone else's statement does not exist for them.
    let bob_token = sql.h.new_user_token("bob@example.com", &["all-apis"]).await;
    let peek = sql
        .h
        .call(
            Method::GET,
            &format!("/api/2.0/sql/statements/{id}"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);

    let (status, failed) = sql
        .submit(&sql.h.admin_token, "SELEC nonsense", json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "SQL errors are statement failures, not HTTP errors"
    );
    assert_eq!(failed["status"]["state"], "FAILED");
    assert!(failed["status"]["error"]["error_code"].is_string());

    let (status, _) = sql
        .submit(
            &sql.h.admin_token,
            "SELECT 1",
            json!({ "wait_timeout": "3s" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "wait_timeout is 0s or 5s to 50s"
    );
    let (_, limited) = sql
        .submit(
            &sql.h.admin_token,
            "SELECT id FROM main.sales.orders",
            json!({ "row_limit": 2 }),
        )
        .await;
    assert_eq!(limited["manifest"]["truncated"], true);
    assert_eq!(limited["result"]["data_array"].as_array().unwrap().len(), 2);
}
