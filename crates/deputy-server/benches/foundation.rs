//! Foundation figures on this machine: token validations/s in process, and over real HTTP on loopback the latency
//! and throughput of token exchange, of a federated exchange (another issuer's JWT, its keys cached) and of an
//! authenticated no-op request. Run with `cargo bench -p deputy-server`.
//!
//! Client and server share the machine (and, here, the process), so the HTTP figures include the client's cost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Bench code: a panic is a failed run.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEQUENTIAL_REQUESTS: usize = 3000;
const CONCURRENT_CLIENTS: usize = 16;
const CONCURRENT_SECONDS: u64 = 5;

struct Fixture {
    host: String,
    http: reqwest::Client,
    user_jwt: String,
    agent_jwt: String,
    /// A JWT of the loopback issuer that a federation policy trusts.
    federated_jwt: String,
}

const FEDERATION_AUDIENCE: &str = "https://deputy.bench";

/// A trusted issuer on loopback whose Ed25519 key the bench holds: its discovery document and key set.
async fn loopback_issuer(key: &SigningKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "bench",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    }]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

fn issuer_jwt(key: &SigningKey, issuer: &str, subject: &str) -> String {
    let encode = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let input = format!(
        "{}.{}",
        encode(json!({ "alg": "EdDSA", "typ": "JWT", "kid": "bench" })),
        encode(
            json!({ "iss": issuer, "aud": FEDERATION_AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600 })
        ),
    );
    let signature = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
    format!("{input}.{signature}")
}

async fn federated_exchange(fixture: &Fixture) {
    let body = form(
        fixture,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &fixture.federated_jwt),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ],
    )
    .await;
    assert!(body["access_token"].is_string());
}

async fn form(fixture: &Fixture, fields: &[(&str, &str)]) -> Value {
    let response = fixture
        .http
        .post(format!("{}/oidc/v1/token", fixture.host))
        .form(fields)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.json().await.unwrap()
}

async fn exchange(fixture: &Fixture) {
    let access = "urn:ietf:params:oauth:token-type:access_token";
    let body = form(
        fixture,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &fixture.user_jwt),
            ("subject_token_type", access),
            ("actor_token", &fixture.agent_jwt),
            ("actor_token_type", access),
            ("scope", "sql serving.serving-endpoints"),
        ],
    )
    .await;
    assert!(body["access_token"].is_string());
}

async fn authenticated_noop(fixture: &Fixture) {
    let response = fixture
        .http
        .get(format!("{}/api/2.0/deputy/token-info", fixture.host))
        .bearer_auth(&fixture.user_jwt)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let _ = response.bytes().await.unwrap();
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

async fn measure<F, Fut>(name: &str, fixture: Arc<Fixture>, operation: F)
where
    F: Fn(Arc<Fixture>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    for _ in 0..200 {
        operation(fixture.clone()).await;
    }
    let mut latencies = Vec::with_capacity(SEQUENTIAL_REQUESTS);
    for _ in 0..SEQUENTIAL_REQUESTS {
        let start = Instant::now();
        operation(fixture.clone()).await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let deadline = Instant::now() + Duration::from_secs(CONCURRENT_SECONDS);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENT_CLIENTS)
        .map(|_| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    operation(fixture.clone()).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name:<40} p50 {:>7.1} µs  p99 {:>7.1} µs  (1 client)   {rate:>8.0} req/s ({CONCURRENT_CLIENTS} clients)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
    );
}

fn report_validations(name: &str, count: usize, elapsed: Duration) {
    println!(
        "{name:<44} {:>9.0} /s   {:>6.2} µs each (1 thread)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = deputy_server::ServerConfig {
        data_dir: data_dir.path().to_owned(),
        database_url: None,
        storage_dir: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
    };
    let server = deputy_server::bind(&config).await.unwrap();
    let host = format!("http://{}", server.local_addr().unwrap());
    let state = server.state.clone();
    let admin_token = std::fs::read_to_string(&server.report.admin_token_path)
        .unwrap()
        .trim()
        .to_owned();
    tokio::spawn(server.run(std::future::pending()));

    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{host}{path}"))
            .bearer_auth(&admin_token)
    };
    let user: Value = admin(reqwest::Method::POST, "/api/2.0/preview/scim/v2/Users")
        .json(&json!({ "userName": "alice@example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pat: Value = admin(
        reqwest::Method::POST,
        "/api/2.0/token-management/on-behalf-of/tokens",
    )
    .json(&json!({ "application_id": user["id"] }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sp: Value = admin(
        reqwest::Method::POST,
        "/api/2.0/preview/scim/v2/ServicePrincipals",
    )
    .json(&json!({ "displayName": "agent" }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let secret: Value = admin(
        reqwest::Method::POST,
        &format!(
            "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets",
            sp["id"].as_str().unwrap()
        ),
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut fixture = Fixture {
        host: host.clone(),
        http: http.clone(),
        user_jwt: String::new(),
        agent_jwt: String::new(),
        federated_jwt: String::new(),
    };
    let agent = form(
        &fixture,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "all-apis"),
            ("client_id", sp["applicationId"].as_str().unwrap()),
            ("client_secret", secret["secret"].as_str().unwrap()),
        ],
    )
    .await;
    let user_jwt = form(
        &fixture,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", pat["token_value"].as_str().unwrap()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ],
    )
    .await;
    fixture.user_jwt = user_jwt["access_token"].as_str().unwrap().to_owned();
    fixture.agent_jwt = agent["access_token"].as_str().unwrap().to_owned();

    let issuer_key = SigningKey::from_bytes(&[7; 32]);
    let issuer = loopback_issuer(&issuer_key).await;
    let account = state.access().workspace_id();
    let policy = admin(
        reqwest::Method::POST,
        &format!("/api/2.0/accounts/{account}/federationPolicies"),
    )
    .json(&json!({ "oidc_policy": { "issuer": issuer, "audiences": [FEDERATION_AUDIENCE] } }))
    .send()
    .await
    .unwrap();
    assert!(policy.status().is_success());
    fixture.federated_jwt = issuer_jwt(&issuer_key, &issuer, "alice@example.com");

    // First sight of a token: Ed25519 signature, header and claims checks. Distinct tokens defeat the cache.
    let validations = 5_000;
    let credentials = state.access().credentials();
    let fresh: Vec<String> = (0..validations)
        .map(|_| {
            let claims = deputy_tokens::AccessClaims::issue(
                &credentials.issuer(),
                &credentials.audience(),
                "alice@example.com",
                deputy_core::ScopeSet::all(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64,
                600,
            )
            .unwrap();
            credentials.sign(&claims).unwrap()
        })
        .collect();
    let start = Instant::now();
    for token in &fresh {
        credentials.verify(token).unwrap();
    }
    report_validations(
        "token validation, first use (in process)",
        validations,
        start.elapsed(),
    );
    // The same tokens again: the verified-claims cache answers, time and revocation still checked.
    let start = Instant::now();
    for token in &fresh {
        credentials.verify(token).unwrap();
    }
    report_validations(
        "token validation, repeat use (in process)",
        validations,
        start.elapsed(),
    );

    let fixture = Arc::new(fixture);
    measure(
        "token exchange over HTTP (subject+actor)",
        fixture.clone(),
        |f| async move { exchange(&f).await },
    )
    .await;
    measure(
        "federated token exchange over HTTP",
        fixture.clone(),
        |f| async move { federated_exchange(&f).await },
    )
    .await;
    measure(
        "authenticated no-op over HTTP (JWT)",
        fixture.clone(),
        |f| async move { authenticated_noop(&f).await },
    )
    .await;
}
