//! Router-level tests of the managed MCP servers: per-caller tool lists and rows, the refusal of a tool the caller
//! may not use, audience-bound tokens, the step-up challenge, protected-resource metadata, both protocol eras, and
//! dynamic client registration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use deputy_core::ScopeSet;
use serde_json::{Value, json};
use support::{BASE_URL, Harness, Reply, harness};

const SQL: &str = "/api/2.0/mcp/sql";
const FUNCTIONS: &str = "/api/2.0/mcp/functions/main/sales";

/// Posts one JSON-RPC message to an MCP server, as a handshake-era client does.
async fn rpc(h: &Harness, path: &str, token: Option<&str>, method: &str, params: Value) -> Reply {
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    h.call(Method::POST, path, token, Some(message)).await
}

async fn tool_names(h: &Harness, path: &str, token: &str) -> Vec<String> {
    let reply = rpc(h, path, Some(token), "tools/list", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {}", reply.body))
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The rows a SQL-running tool answered with.
async fn call_rows(h: &Harness, path: &str, token: &str, tool: &str, arguments: Value) -> Value {
    let params = json!({ "name": tool, "arguments": arguments });
    let reply = rpc(h, path, Some(token), "tools/call", params).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let result = &reply.body["result"];
    assert_eq!(result["isError"], false, "{}", reply.body);
    let text = result["content"][0]["text"].as_str().unwrap();
    serde_json::from_str::<Value>(text).unwrap()["rows"].clone()
}

/// Orders with a row filter (alice sees EU, bob US), a masked amount for bob, and two functions: alice may
/// execute `eu_total`, bob `order_count`; carol is granted nothing. Everyone may use the warehouse.
async fn workspace() -> (Harness, [String; 3]) {
    let h = harness().await;
    let warehouse = h.default_warehouse().await;
    let mut tokens = Vec::new();
    for name in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        tokens.push(h.new_user_token(name, &["all-apis"]).await);
        let acl = json!({ "access_control_list": [{ "user_name": name, "permission_level": "CAN_USE" }] });
        let path = format!("/api/2.0/permissions/warehouses/{warehouse}");
        let reply = h
            .call(Method::PATCH, &path, Some(&h.admin_token), Some(acl))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    for statement in [
        "CREATE CATALOG main",
        "CREATE SCHEMA main.sales",
        "CREATE TABLE main.sales.orders (id INT, region STRING, amount DOUBLE)",
        "INSERT INTO main.sales.orders VALUES (1, 'EU', 10.0), (2, 'US', 20.0), (3, 'EU', 30.0)",
        "CREATE FUNCTION main.sales.by_region(region STRING) RETURNS BOOLEAN RETURN (region = 'EU' AND current_user() = 'alice@example.com') OR (region = 'US' AND current_user() = 'bob@example.com') OR is_account_group_member('admins')",
        "ALTER TABLE main.sales.orders SET ROW FILTER main.sales.by_region ON (region)",
        "CREATE FUNCTION main.sales.hide_from_bob(amount DOUBLE) RETURNS DOUBLE RETURN CASE WHEN current_user() = 'bob@example.com' THEN NULL ELSE amount END",
        "ALTER TABLE main.sales.orders ALTER COLUMN amount SET MASK main.sales.hide_from_bob",
        "CREATE FUNCTION main.sales.eu_total(factor INT) RETURNS INT RETURN 10 * factor",
        "CREATE FUNCTION main.sales.order_count(n INT) RETURNS INT RETURN n + 1",
        "GRANT USE CATALOG ON CATALOG main TO `users`",
        "GRANT USE SCHEMA ON SCHEMA main.sales TO `alice@example.com`",
        "GRANT USE SCHEMA ON SCHEMA main.sales TO `bob@example.com`",
        "GRANT SELECT ON TABLE main.sales.orders TO `alice@example.com`",
        "GRANT SELECT ON TABLE main.sales.orders TO `bob@example.com`",
        "GRANT EXECUTE ON FUNCTION main.sales.eu_total TO `alice@example.com`",
        "GRANT EXECUTE ON FUNCTION main.sales.order_count TO `bob@example.com`",
    ] {
        h.admin_sql(&warehouse, statement).await;
    }
    let [alice, bob, carol] = <[String; 3]>::try_from(tokens).unwrap();
    (h, [alice, bob, carol])
}

#[tokio::test]
async fn each_caller_gets_their_own_tools_and_rows_and_a_hidden_tool_cannot_be_called() {
    let (h, [alice, bob, carol]) = workspace().await;

    assert_eq!(
        tool_names(&h, FUNCTIONS, &alice).await,
        ["main__sales__eu_total"]
    );
    assert_eq!(
        tool_names(&h, FUNCTIONS, &bob).await,
        ["main__sales__order_count"]
    );
    assert!(tool_names(&h, FUNCTIONS, &carol).await.is_empty());

    let rows = call_rows(
        &h,
        FUNCTIONS,
        &alice,
        "main__sales__eu_total",
        json!({ "factor": 4 }),
    )
    .await;
    assert_eq!(rows, json!([["40"]]));
    // bob calling alice's function by name: refused as if it did not exist, and audited.
    let params = json!({ "name": "main__sales__eu_total", "arguments": { "factor": 4 } });
    let refused = rpc(&h, FUNCTIONS, Some(&bob), "tools/call", params.clone()).await;
    assert_eq!(refused.status, StatusCode::OK);
    assert_eq!(refused.body["error"]["code"], -32602, "{}", refused.body);
    assert!(refused.body["result"].is_null(), "{}", refused.body);
    let refused = rpc(&h, FUNCTIONS, Some(&carol), "tools/call", params).await;
    assert_eq!(refused.body["error"]["code"], -32602, "{}", refused.body);

    let query = json!({ "query": "SELECT id, region, amount FROM main.sales.orders ORDER BY id" });
    let alice_rows = call_rows(&h, SQL, &alice, "execute_sql_read_only", query.clone()).await;
    assert_eq!(
        alice_rows,
        json!([["1", "EU", "10.0"], ["3", "EU", "30.0"]])
    );
    let bob_rows = call_rows(&h, SQL, &bob, "execute_sql_read_only", query.clone()).await;
    assert_eq!(
        bob_rows,
        json!([["2", "US", null]]),
        "bob's amount is masked"
    );

    // A statement that writes never runs through the read-only tool.
    let write = json!({ "name": "execute_sql_read_only", "arguments": { "query": "DELETE FROM main.sales.orders" } });
    let reply = rpc(&h, SQL, Some(&alice), "tools/call", write).await;
    assert_eq!(reply.body["result"]["isError"], true, "{}", reply.body);
    let rows = h
        .admin_sql(
            &h.default_warehouse().await,
            "SELECT count(*) FROM main.sales.orders",
        )
        .await;
    assert_eq!(rows["result"]["data_array"], json!([["3"]]));

    let audit = h
        .call(
            Method::GET,
            "/api/2.0/deputy/audit?limit=1000",
            Some(&h.admin_token),
            None,
        )
        .await;
    let events = audit.body.to_string();
    assert!(
        events.contains("bob@example.com") && events.contains("main__sales__eu_total"),
        "{events}"
    );
}

#[tokio::test]
async fn a_token_bound_to_one_mcp_server_is_refused_at_another_and_at_the_rest_api() {
    let (h, [alice, ..]) = workspace().await;
    let mut claims = h.claims_for("alice@example.com", ScopeSet::all());
    claims.aud = format!("{BASE_URL}{SQL}");
    let bound = h.sign(&claims);

    assert_eq!(tool_names(&h, SQL, &bound).await, ["execute_sql_read_only"]);
    let elsewhere = rpc(&h, FUNCTIONS, Some(&bound), "tools/list", json!({})).await;
    assert_eq!(
        elsewhere.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        elsewhere.body
    );
    let challenge = elsewhere.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(h.me(&bound).await.status, StatusCode::UNAUTHORIZED);
    // Nor can it be exchanged for a token of the whole API.
    assert_ne!(h.exchange(&bound, None, None).await.status, StatusCode::OK);
    // A token for the whole API works at every server.
    assert_eq!(
        tool_names(&h, FUNCTIONS, &alice).await,
        ["main__sales__eu_total"]
    );
}

#[tokio::test]
async fn callers_are_challenged_with_the_resource_metadata_and_the_scopes_to_step_up_to() {
    let (h, _) = workspace().await;
    let anonymous = rpc(&h, SQL, None, "tools/list", json!({})).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    let metadata_path = "/.well-known/oauth-protected-resource/api/2.0/mcp/sql";
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{BASE_URL}{metadata_path}\"")
    );
    let metadata = h.call(Method::GET, metadata_path, None, None).await;
    assert_eq!(metadata.body["resource"], format!("{BASE_URL}{SQL}"));
    assert_eq!(
        metadata.body["authorization_servers"],
        json!([format!("{BASE_URL}/oidc")])
    );
    let as_metadata = h
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server/oidc",
            None,
            None,
        )
        .await;
    assert_eq!(as_metadata.body["issuer"], format!("{BASE_URL}/oidc"));
    assert_eq!(
        as_metadata.body["registration_endpoint"],
        format!("{BASE_URL}/oidc/v1/register")
    );

    let sql_only = h.new_user_token("dave@example.com", &["sql"]).await;
    let short = rpc(&h, SQL, Some(&sql_only), "tools/list", json!({})).await;
    assert_eq!(short.status, StatusCode::FORBIDDEN, "{}", short.body);
    let challenge = short.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("mcp.sql") && challenge.contains("sql.statement-execution"),
        "{challenge}"
    );

    let unknown = rpc(
        &h,
        "/api/2.0/mcp/nothing-here",
        Some(&h.admin_token.clone()),
        "ping",
        json!({}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let stream = h.call(Method::GET, SQL, Some(&h.admin_token), None).await;
    assert_eq!(stream.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A 2026-07-28 request: the envelope in `_meta`, mirrored in the headers.
async fn stateless(h: &Harness, method: &str, params: Value, headers: &[(&str, &str)]) -> Reply {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let message = json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params });
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(SQL)
        .header(header::AUTHORIZATION, format!("Bearer {}", h.admin_token))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    h.send(request.body(Body::from(message.to_string())).unwrap())
        .await
}

#[tokio::test]
async fn both_protocol_eras_are_answered_and_the_stateless_envelope_is_checked() {
    let h = harness().await;
    let init = json!({ "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } });
    let reply = rpc(&h, SQL, Some(&h.admin_token.clone()), "initialize", init).await;
    assert_eq!(
        reply.body["result"]["protocolVersion"], "2025-03-26",
        "{}",
        reply.body
    );
    assert_eq!(
        reply.body["result"]["capabilities"]["tools"]["listChanged"],
        false
    );
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let accepted = h
        .call(Method::POST, SQL, Some(&h.admin_token), Some(notification))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);

    let agreed = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "server/discover"),
    ];
    let discover = stateless(&h, "server/discover", json!({}), &agreed).await;
    assert_eq!(discover.status, StatusCode::OK, "{}", discover.body);
    assert_eq!(discover.body["result"]["resultType"], "complete");
    assert!(
        discover.body["result"]["supportedVersions"]
            .to_string()
            .contains("2026-07-28")
    );
    assert_eq!(discover.body["result"]["cacheScope"], "private");

    let listed = stateless(
        &h,
        "tools/list",
        json!({}),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(
        listed.body["result"]["tools"][0]["name"], "execute_sql_read_only",
        "{}",
        listed.body
    );
    assert_eq!(
        listed.body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "deputy-sql"
    );

    let disagreeing = stateless(
        &h,
        "tools/list",
        json!({}),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "ping"),
        ],
    )
    .await;
    assert_eq!(disagreeing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        disagreeing.body["error"]["code"], -32020,
        "{}",
        disagreeing.body
    );
    let call = json!({ "name": "execute_sql_read_only", "arguments": { "query": "SELECT 1" } });
    let misnamed = stateless(
        &h,
        "tools/call",
        call,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "other"),
        ],
    )
    .await;
    assert_eq!(misnamed.body["error"]["code"], -32020, "{}", misnamed.body);

    let mut future = json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": "2099-01-01", "io.modelcontextprotocol/clientCapabilities": {} } });
    future["_meta"]["x"] = json!(1);
    let message = json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": future });
    let request = Request::builder()
        .method(Method::POST)
        .uri(SQL)
        .header(header::AUTHORIZATION, format!("Bearer {}", h.admin_token))
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .body(Body::from(message.to_string()))
        .unwrap();
    let unsupported = h.send(request).await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unsupported.body["error"]["code"], -32022,
        "{}",
        unsupported.body
    );
    assert_eq!(unsupported.body["error"]["data"]["requested"], "2099-01-01");

    let garbage = h
        .send(
            Request::builder()
                .method(Method::POST)
                .uri(SQL)
                .header(header::AUTHORIZATION, format!("Bearer {}", h.admin_token))
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbage.body["error"]["code"], -32700);
}

#[tokio::test]
async fn clients_register_themselves_as_untrusted_apps_with_safe_redirects_only() {
    let h = harness().await;
    let metadata = json!({
        "client_name": "Inspector",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    });
    let registered = h
        .call(Method::POST, "/oidc/v1/register", None, Some(metadata))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    assert!(
        registered.body["client_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(registered.body["client_secret"].is_null());
    assert_eq!(
        registered.body["client_name"],
        "Inspector (self-registered)"
    );

    let confidential = json!({ "redirect_uris": ["https://app.example/cb"] });
    let registered = h
        .call(Method::POST, "/oidc/v1/register", None, Some(confidential))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    assert!(
        registered.body["client_secret"]
            .as_str()
            .is_some_and(|secret| secret.starts_with("dose"))
    );

    for (metadata, error) in [
        (
            json!({ "redirect_uris": ["http://evil.example/cb"] }),
            "invalid_redirect_uri",
        ),
        (
            json!({ "redirect_uris": ["com.example.app:/cb"] }),
            "invalid_redirect_uri",
        ),
        (json!({ "redirect_uris": [] }), "invalid_redirect_uri"),
        (
            json!({ "redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
        ),
        (json!("not an object"), "invalid_client_metadata"),
    ] {
        let refused = h
            .call(
                Method::POST,
                "/oidc/v1/register",
                None,
                Some(metadata.clone()),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{metadata}: {}",
            refused.body
        );
        assert_eq!(refused.body["error"], error, "{metadata}: {}", refused.body);
    }
}
