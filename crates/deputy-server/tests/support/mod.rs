//! Shared by the router-level test files: a server state on a temporary data directory, driven with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // Test code; not every file uses every helper.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use deputy_core::ScopeSet;
use deputy_server::state::AppState;
use deputy_server::{app, prepare};
use deputy_tokens::AccessClaims;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use tower::ServiceExt;

pub const BASE_URL: &str = "http://deputy.test";
pub const SCIM: &str = "/api/2.0/preview/scim/v2";

pub struct Harness {
    pub dir: tempfile::TempDir,
    /// The metadata database: `None` for SQLite in `dir`, a fresh PostgreSQL database when the tests run on one.
    pub database: Option<String>,
    pub state: AppState,
    pub admin_token: String,
}

pub async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let database = deputy_store::testing::fresh_postgres_database();
    let (state, report) = prepare(dir.path(), database.as_deref(), BASE_URL)
        .await
        .unwrap();
    let admin_token = std::fs::read_to_string(report.admin_token_path)
        .unwrap()
        .trim()
        .to_owned();
    Harness {
        dir,
        database,
        state,
        admin_token,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Harness {
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => Body::from(body.to_string()),
            None => Body::empty(),
        };
        self.send(
            request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    pub async fn form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Reply {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request = request.header(
                header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
            );
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// A new user's token with these scopes (the user itself is not needed).
    pub async fn new_user_token(&self, name: &str, scopes: &[&str]) -> String {
        let user = self.create_user(name).await;
        self.token_for(user["id"].as_str().unwrap(), scopes).await
    }

    /// The audited attempts at `api`, oldest first: (user, allowed, reason).
    pub async fn audited(&self, api: &str) -> Vec<(String, bool, String)> {
        let path = format!("/api/2.0/deputy/audit?contains={api}&limit=1000");
        let reply = self
            .call(Method::GET, &path, Some(&self.admin_token), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["api"] == api)
            .map(|event| {
                (
                    event["user_name"].as_str().unwrap().to_owned(),
                    event["allowed"].as_bool().unwrap(),
                    event["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The id of the SQL warehouse every workspace starts with.
    pub async fn default_warehouse(&self) -> String {
        let reply = self
            .call(
                Method::GET,
                "/api/2.0/sql/warehouses",
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["warehouses"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs SQL as the admin on `warehouse`; the statement must succeed. Returns the statement response.
    pub async fn admin_sql(&self, warehouse: &str, statement: &str) -> Value {
        let reply = self
            .call(
                Method::POST,
                "/api/2.0/sql/statements",
                Some(&self.admin_token),
                Some(json!({ "statement": statement, "warehouse_id": warehouse, "wait_timeout": "30s" })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{statement}: {}", reply.body);
        assert_eq!(
            reply.body["status"]["state"], "SUCCEEDED",
            "{statement}: {}",
            reply.body
        );
        reply.body
    }

    pub async fn create_user(&self, name: &str) -> Value {
        let reply = self
            .call(
                Method::POST,
                &format!("{SCIM}/Users"),
                Some(&self.admin_token),
                Some(json!({ "userName": name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body
    }

    /// A personal access token for `principal_id` with `scopes`, issued by the admin.
    pub async fn token_for(&self, principal_id: &str, scopes: &[&str]) -> String {
        let reply = self
            .call(
                Method::POST,
                "/api/2.0/token-management/on-behalf-of/tokens",
                Some(&self.admin_token),
                Some(json!({ "application_id": principal_id, "scopes": scopes, "lifetime_seconds": 600 })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["token_value"].as_str().unwrap().to_owned()
    }

    /// A service principal with a client secret: `(application id, secret)`.
    pub async fn service_principal(&self, name: &str) -> (String, String) {
        let sp = self
            .call(
                Method::POST,
                &format!("{SCIM}/ServicePrincipals"),
                Some(&self.admin_token),
                Some(json!({ "displayName": name })),
            )
            .await
            .body;
        let path = format!(
            "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets",
            sp["id"].as_str().unwrap()
        );
        let secret = self
            .call(
                Method::POST,
                &path,
                Some(&self.admin_token),
                Some(json!({})),
            )
            .await
            .body;
        (
            sp["applicationId"].as_str().unwrap().to_owned(),
            secret["secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn client_credentials(&self, id: &str, secret: &str, scope: &str) -> Reply {
        self.form(
            "/oidc/v1/token",
            &[("grant_type", "client_credentials"), ("scope", scope)],
            Some((id, secret)),
        )
        .await
    }

    pub async fn exchange(&self, subject: &str, actor: Option<&str>, scope: Option<&str>) -> Reply {
        let access = "urn:ietf:params:oauth:token-type:access_token";
        let mut fields = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            ("subject_token_type", access),
        ];
        if let Some(actor) = actor {
            fields.extend([("actor_token", actor), ("actor_token_type", access)]);
        }
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        self.form("/oidc/v1/token", &fields, None).await
    }

    pub async fn me(&self, token: &str) -> Reply {
        self.call(Method::GET, &format!("{SCIM}/Me"), Some(token), None)
            .await
    }

    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.state.access().credentials().sign(claims).unwrap()
    }

    pub fn claims_for(&self, sub: &str, scope: ScopeSet) -> AccessClaims {
        let credentials = self.state.access().credentials();
        AccessClaims::issue(
            &credentials.issuer(),
            &credentials.audience(),
            sub,
            scope,
            now(),
            600,
        )
        .unwrap()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn payload(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}
