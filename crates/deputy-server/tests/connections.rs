//! Router-level tests of HTTP connections and `POST /api/2.0/external-function`: the call reaches the connection's
//! upstream with the connection's credential (static bearer token, or an OAuth token fetched with client credentials
//! and cached), `USE_CONNECTION` is required, no `path` leaves the connection's origin or base path, upstream
//! failures are 502, and every call is audited.
//!
//! The upstream is a test double: a small HTTP server on 127.0.0.1 that records what it receives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use deputy_core::ScopeSet;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::{Harness, harness};

const UC: &str = "/api/2.1/unity-catalog";
const CALL: &str = "/api/2.0/external-function";
const SECRET: &str = "upstream-secret-7f3a";

/// One request as the test upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: String,
}

/// Test double for an upstream HTTP service and its OAuth token endpoint.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    tokens_issued: Arc<AtomicUsize>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    upstream.seen.lock().unwrap().push(seen.clone());
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match seen.path.as_str() {
        "/token" => {
            let n = upstream.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            axum::Json(json!({ "access_token": format!("oauth-tok-{n}"), "token_type": "Bearer", "expires_in": 3600 }))
                .into_response()
        }
        "/v1/teapot" => (
            StatusCode::IM_A_TEAPOT,
            [("content-type", "text/plain")],
            "short and stout",
        )
            .into_response(),
        "/v1/big" => vec![b'x'; 10 * 1024 * 1024 + 1].into_response(),
        "/v1/redirect" => (
            StatusCode::FOUND,
            [("location", "http://169.254.169.254/latest/meta-data")],
            "",
        )
            .into_response(),
        "/v1/reject-first" if authorization == "Bearer oauth-tok-1" => {
            StatusCode::UNAUTHORIZED.into_response()
        }
        _ => (
            [
                ("content-type", "application/json"),
                ("mcp-session-id", "session-42"),
                ("x-internal", "hidden"),
            ],
            axum::Json(json!({ "path": seen.path, "query": seen.query })),
        )
            .into_response(),
    }
}

async fn start_upstream() -> (Upstream, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let upstream = Upstream::default();
    let app = Router::new().fallback(answer).with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (upstream, address)
}

struct World {
    h: Harness,
    upstream: Upstream,
    address: SocketAddr,
    alice: String,
    bob: String,
}

impl World {
    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let reply = self
            .h
            .call(method.clone(), path, Some(&self.h.admin_token), Some(body))
            .await;
        assert!(
            reply.status.is_success(),
            "{method} {path}: {:?}",
            reply.body
        );
        reply.body
    }

    async fn connection(&self, name: &str, options: Value) {
        self.admin(
            Method::POST,
            &format!("{UC}/connections"),
            json!({ "name": name, "connection_type": "HTTP", "options": options }),
        )
        .await;
    }

    async fn grant_use(&self, connection: &str, principal: &str) {
        self.admin(
            Method::PATCH,
            &format!("{UC}/permissions/connection/{connection}"),
            json!({ "changes": [{ "principal": principal, "add": ["USE_CONNECTION"] }] }),
        )
        .await;
    }

    async fn call(&self, token: &str, body: Value) -> support::Reply {
        self.h
            .call(Method::POST, CALL, Some(token), Some(body))
            .await
    }

    async fn audit(&self) -> Vec<Value> {
        let events = self
            .admin(Method::GET, "/api/2.0/deputy/audit?limit=1000", json!({}))
            .await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["api"] == "connection.http-request")
            .cloned()
            .collect()
    }
}

/// An upstream, a bearer-token connection `crm` to it (base path `/v1`) that alice may use and bob may not.
async fn world() -> World {
    let h = harness().await;
    let (upstream, address) = start_upstream().await;
    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    let bob = h.new_user_token("bob@example.com", &["all-apis"]).await;
    let w = World {
        h,
        upstream,
        address,
        alice,
        bob,
    };
    w.connection(
        "crm",
        json!({ "host": format!("http://{address}"), "base_path": "/v1/", "bearer_token": SECRET }),
    )
    .await;
    w.grant_use("crm", "alice@example.com").await;
    w
}

fn error_of(reply: &support::Reply) -> (StatusCode, &str, &str) {
    (
        reply.status,
        reply.body["error_code"].as_str().unwrap_or_default(),
        reply.body["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_call_reaches_the_upstream_with_the_connections_credential_and_returns_its_answer() {
    let w = world().await;
    let reply = w
        .call(
            &w.alice,
            json!({
                "connection_name": "crm", "method": "POST", "path": "/items/7",
                "headers": "{\"X-Trace\": \"abc\"}", "json": "{\"a\": 1}", "params": "{\"q\": \"x y\", \"n\": 2}",
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["path"], "/v1/items/7");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["mcp-session-id"], "session-42");
    assert!(
        reply.headers.get("x-internal").is_none(),
        "only the documented headers come back"
    );
    let seen = w.upstream.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/items/7")
    );
    let mut query: Vec<&str> = request.query.as_deref().unwrap().split('&').collect();
    query.sort_unstable();
    assert_eq!(query, ["n=2", "q=x+y"]);
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );
    assert_eq!(request.headers["x-trace"], "abc");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["host"], w.address.to_string().as_str());
    assert_eq!(request.body, "{\"a\": 1}");

    // An upstream status and body are passed back as they are; a redirect is never followed.
    let teapot = w
        .call(
            &w.alice,
            json!({ "connection_name": "crm", "method": "GET", "path": "teapot" }),
        )
        .await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.body, "short and stout");
    let redirect = w
        .call(
            &w.alice,
            json!({ "connection_name": "crm", "method": "GET", "path": "redirect" }),
        )
        .await;
    assert_eq!(redirect.status, StatusCode::FOUND);
    assert!(redirect.headers.get("location").is_none());
    assert_eq!(
        w.upstream.seen().len(),
        3,
        "the redirect target was not requested"
    );
}

#[tokio::test]
async fn use_connection_is_required_and_a_refused_call_sends_nothing() {
    let w = world().await;
    let body = json!({ "connection_name": "crm", "method": "GET", "path": "/x" });
    let refused = w.call(&w.bob, body.clone()).await;
    let (status, code, message) = error_of(&refused);
    assert_eq!(
        (status, code),
        (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        "{message}"
    );
    assert!(message.contains("USE_CONNECTION on crm"), "{message}");
    let missing = w
        .call(
            &w.alice,
            json!({ "connection_name": "nope", "method": "GET", "path": "/x" }),
        )
        .await;
    assert_eq!(error_of(&missing).0, StatusCode::NOT_FOUND);
    // The API scope is needed too, whatever the grants.
    let narrow =
        w.h.sign(&w.h.claims_for("alice@example.com", ScopeSet::parse("sql").unwrap()));
    let reply = w.call(&narrow, body.clone()).await;
    let (status, _, message) = error_of(&reply);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("catalog.connections"), "{message}");
    assert!(w.upstream.seen().is_empty());
    // Granted to a group bob joins, the same call goes through.
    let bob_id = w.h.me(&w.bob).await.body["id"].as_str().unwrap().to_owned();
    w.admin(
        Method::POST,
        "/api/2.0/preview/scim/v2/Groups",
        json!({ "displayName": "integrators", "members": [{ "value": bob_id }] }),
    )
    .await;
    w.grant_use("crm", "integrators").await;
    assert_eq!(w.call(&w.bob, body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn no_path_sub_domain_or_header_leaves_the_connections_origin() {
    let w = world().await;
    for path in [
        "//evil.example/x",
        "http://evil.example/x",
        "/../admin",
        "a/../../admin",
        "%2e%2e/admin",
        "a%2f..%2f..%2fadmin",
        "\\\\evil.example/x",
        "@evil.example/x",
        "a%40evil.example",
        "a\r\nHost: evil.example",
        "a?x=1",
    ] {
        let reply = w
            .call(
                &w.alice,
                json!({ "connection_name": "crm", "method": "GET", "path": path }),
            )
            .await;
        let (status, code, message) = error_of(&reply);
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            "{path:?}: {message}"
        );
        assert!(message.starts_with("`path`"), "{path:?}: {message}");
    }
    for label in ["evil.example", "a/b", "a@b"] {
        let reply = w
            .call(&w.alice, json!({ "connection_name": "crm", "method": "GET", "path": "x", "sub_domain": label }))
            .await;
        assert_eq!(error_of(&reply).0, StatusCode::BAD_REQUEST, "{label}");
    }
    for headers in [
        "{\"Authorization\": \"Bearer mine\"}",
        "{\"host\": \"evil.example\"}",
        "{\"X-A\": \"1\\r\\nB: 2\"}",
    ] {
        let reply = w
            .call(&w.alice, json!({ "connection_name": "crm", "method": "GET", "path": "x", "headers": headers }))
            .await;
        assert_eq!(error_of(&reply).0, StatusCode::BAD_REQUEST, "{headers}");
    }
    for (field, value) in [
        ("method", json!("TRACE")),
        ("json", json!("{not json")),
        ("params", json!("[1]")),
    ] {
        let mut body = json!({ "connection_name": "crm", "method": "GET", "path": "x" });
        body[field] = value;
        let reply = w.call(&w.alice, body).await;
        let (status, code, message) = error_of(&reply);
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            "{field}: {message}"
        );
    }
    assert!(
        w.upstream.seen().is_empty(),
        "a refused call reached the upstream"
    );
}

#[tokio::test]
async fn oauth_client_credentials_are_exchanged_once_and_the_token_cached() {
    let w = world().await;
    let address = w.address;
    w.connection(
        "crm-oauth",
        json!({
            "host": format!("http://{address}"), "base_path": "v1", "client_id": "deputy-client",
            "client_secret": "client-secret-9", "token_endpoint": format!("http://{address}/token"),
            "oauth_scope": "crm.read",
        }),
    )
    .await;
    w.grant_use("crm-oauth", "alice@example.com").await;
    for _ in 0..2 {
        let reply = w
            .call(
                &w.alice,
                json!({ "connection_name": "crm-oauth", "method": "GET", "path": "a" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let seen = w.upstream.seen();
    let token_requests: Vec<&Seen> = seen.iter().filter(|s| s.path == "/token").collect();
    assert_eq!(token_requests.len(), 1, "the token is cached");
    let token_request = token_requests[0];
    assert_eq!(token_request.method, "POST");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "deputy-client:client-secret-9",
    );
    assert_eq!(
        token_request.headers["authorization"],
        format!("Basic {basic}").as_str()
    );
    assert_eq!(
        token_request.body,
        "grant_type=client_credentials&scope=crm.read"
    );
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/a").collect();
    assert!(
        calls
            .iter()
            .all(|s| s.headers["authorization"] == "Bearer oauth-tok-1"),
        "{calls:?}"
    );

    // An upstream 401 drops the cached token; the call is retried once with a new one.
    let reply = w
        .call(
            &w.alice,
            json!({ "connection_name": "crm-oauth", "method": "GET", "path": "reject-first" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(w.upstream.tokens_issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn upstream_failures_are_502_and_bad_connections_are_refused() {
    let w = world().await;
    let big = w
        .call(
            &w.alice,
            json!({ "connection_name": "crm", "method": "GET", "path": "big" }),
        )
        .await;
    let (status, code, message) = error_of(&big);
    assert_eq!(
        (status, code),
        (StatusCode::BAD_GATEWAY, "BAD_GATEWAY"),
        "{message}"
    );
    assert!(message.contains("more than 10485760 bytes"), "{message}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    w.connection(
        "down",
        json!({ "host": format!("http://{closed}"), "bearer_token": SECRET }),
    )
    .await;
    // An `https://` upstream is called over TLS (here: nothing listens, so it cannot be reached).
    w.connection("secure", json!({ "host": format!("https://{closed}") }))
        .await;
    w.connection(
        "bad-idp",
        json!({ "host": format!("http://{}", w.address), "client_id": "i", "client_secret": "s",
                "token_endpoint": format!("http://{closed}/token") }),
    )
    .await;
    w.admin(
        Method::POST,
        &format!("{UC}/connections"),
        json!({ "name": "pg", "connection_type": "POSTGRESQL", "options": { "host": "db" } }),
    )
    .await;
    for name in ["down", "secure", "bad-idp", "pg"] {
        w.grant_use(name, "alice@example.com").await;
    }
    let call = |name: &str| json!({ "connection_name": name, "method": "GET", "path": "x" });
    let down = w.call(&w.alice, call("down")).await;
    assert_eq!(
        error_of(&down),
        (
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            "the upstream could not be reached"
        )
    );
    let idp = w.call(&w.alice, call("bad-idp")).await;
    assert_eq!(
        error_of(&idp),
        (
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            "the token endpoint could not be reached"
        )
    );
    let secure = w.call(&w.alice, call("secure")).await;
    assert_eq!(
        error_of(&secure),
        (
            StatusCode::BAD_GATEWAY,
            "BAD_GATEWAY",
            "the upstream could not be reached"
        )
    );
    let pg = w.call(&w.alice, call("pg")).await;
    let (status, _, message) = error_of(&pg);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("need an HTTP connection"), "{message}");

    // Unusable options are refused when written.
    for options in [
        json!({ "host": "http://a.example.com/path" }),
        json!({ "host": "a.example.com", "base_path": "/v1/../admin" }),
        json!({ "host": "a.example.com", "client_id": "only-the-id" }),
        json!({}),
    ] {
        let reply =
            w.h.call(
                Method::POST,
                &format!("{UC}/connections"),
                Some(&w.h.admin_token),
                Some(json!({ "name": "bad", "connection_type": "HTTP", "options": options })),
            )
            .await;
        assert_eq!(error_of(&reply).0, StatusCode::BAD_REQUEST, "{options}");
    }
    let reply =
        w.h.call(
            Method::PATCH,
            &format!("{UC}/connections/crm"),
            Some(&w.h.admin_token),
            Some(json!({ "options": { "bearer_token": "x", "client_id": "y" } })),
        )
        .await;
    assert_eq!(error_of(&reply).0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_call_is_audited_with_the_user_and_the_actor_chain_and_no_secret() {
    let w = world().await;
    w.call(
        &w.alice,
        json!({ "connection_name": "crm", "method": "GET", "path": "audited", "params": { "api_key": "caller-key" } }),
    )
    .await;
    w.call(
        &w.bob,
        json!({ "connection_name": "crm", "method": "GET", "path": "audited" }),
    )
    .await;
    // An agent acting for alice: a delegated token whose actor is a service principal.
    let (app_id, secret) = w.h.service_principal("crm-agent").await;
    let agent =
        w.h.client_credentials(&app_id, &secret, "all-apis")
            .await
            .body["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    let delegated = w.h.exchange(&w.alice, Some(&agent), None).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = w
        .call(
            &delegated,
            json!({ "connection_name": "crm", "method": "DELETE", "path": "items/1" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    let events = w.audit().await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(SECRET) && !text.contains("caller-key"),
        "{text}"
    );
    let origin = format!("http://{}", w.address);
    assert_eq!(events[0]["user_name"], "alice@example.com");
    assert_eq!(events[0]["allowed"], true);
    assert_eq!(events[0]["reason"], format!("GET {origin}/v1/audited"));
    assert_eq!(events[0]["securable"], "connections/crm");
    assert_eq!(events[0]["actors"], json!([]));
    assert_eq!(events[1]["user_name"], "bob@example.com");
    assert_eq!(events[1]["allowed"], false);
    assert!(
        events[1]["reason"]
            .as_str()
            .unwrap()
            .contains("USE_CONNECTION on crm")
    );
    assert_eq!(events[2]["user_name"], "alice@example.com");
    assert_eq!(events[2]["actors"], json!([app_id]));
    assert_eq!(events[2]["reason"], format!("DELETE {origin}/v1/items/1"));
}
