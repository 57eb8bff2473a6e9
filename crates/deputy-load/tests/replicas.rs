//! Replicas of `deputy serve` sharing one PostgreSQL database, as behind a load balancer: one public URL, a data
//! directory each. What one replica issues works on the other; what one revokes or grants holds on the other
//! within [`BOUND`] (the delays are measured and printed); a replica killed mid-write loses nothing it acknowledged.
//!
//! These tests need the database the suite's switch names (`DEPUTY_TEST_POSTGRES_URL`; `scripts/test.sh` starts
//! one, and runs them, named `replicas_*`, only in its PostgreSQL pass) and the debug `deputy` binary
//! (`cargo build -p deputy`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_load::{Api, Latencies, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How soon a revocation or a grant made on one replica must hold on the other.
const BOUND: Duration = Duration::from_secs(2);
/// The address clients reach every replica at: tokens are issued by and for it, whichever replica signs them.
const PUBLIC_URL: &str = "http://deputy.replicas.test";
const ME: &str = "/api/2.0/preview/scim/v2/Me";

/// The debug `deputy` next to this test's directory (`target/debug/deps/..`).
fn deputy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("deputy")
}

/// Two replicas on one fresh database, and an admin client for each (each replica wrote its own admin token).
async fn two_replicas() -> (Server, Server, Api, Api) {
    let database = deputy_store::testing::fresh_postgres_database().expect(
        "the replica tests need a PostgreSQL server: set DEPUTY_TEST_POSTGRES_URL (scripts/test.sh starts one)",
    );
    let env = [
        ("DEPUTY_DATABASE_URL", database),
        ("DEPUTY_PUBLIC_URL", PUBLIC_URL.to_owned()),
    ];
    // Started at once: start-ups take turns, so the workspace is bootstrapped exactly once.
    let binary = deputy_binary();
    let (a, b) = tokio::join!(Server::start(&binary, &env), Server::start(&binary, &env));
    let (a, b) = (a.unwrap(), b.unwrap());
    let http = reqwest::Client::new();
    let admin_a = Api::new(&a.host, &a.admin_token, http.clone());
    let admin_b = Api::new(&b.host, &b.admin_token, http);
    (a, b, admin_a, admin_b)
}

/// A user and an admin-made personal access token for them: `(user id, token id, token value)`.
async fn user_with_token(admin: &Api, name: &str) -> (String, String, String) {
    let id = admin.create_user(name).await.unwrap();
    let token = admin
        .post(
            "/api/2.0/token-management/on-behalf-of/tokens",
            &json!({ "application_id": id, "lifetime_seconds": 3600 }),
        )
        .await
        .unwrap();
    (
        id,
        token["token_info"]["token_id"].as_str().unwrap().to_owned(),
        token["token_value"].as_str().unwrap().to_owned(),
    )
}

/// A form post to the OAuth endpoints of `host`: status and JSON body.
async fn oauth(http: &reqwest::Client, host: &str, path: &str, form: &[(&str, &str)]) -> Value {
    let response = http
        .post(format!("{host}{path}"))
        .form(form)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {response:?}");
    response.json().await.unwrap_or(Value::Null)
}

/// An access token exchanged (RFC 8693) from `subject` at `host`.
async fn exchanged(http: &reqwest::Client, host: &str, subject: &str) -> String {
    let reply = oauth(
        http,
        host,
        "/oidc/v1/token",
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("scope", "all-apis"),
        ],
    )
    .await;
    reply["access_token"].as_str().unwrap().to_owned()
}

async fn status(api: &Api, path: &str) -> u16 {
    api.call(Method::GET, path, None).await.unwrap().status
}

/// Polls until `path` answers `wanted` as `api`'s caller; how long that took, or a failure after [`BOUND`].
async fn until_status(api: &Api, path: &str, wanted: u16) -> Duration {
    let start = Instant::now();
    loop {
        if status(api, path).await == wanted {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < BOUND,
            "{path} did not answer {wanted} within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn report(what: &str, delays: &Latencies) {
    println!(
        "{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        delays.count(),
        delays.ms(0.5),
        delays.ms(0.99),
        delays.max_ms()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_accept_tokens_issued_by_either() {
    let (a, b, admin_a, admin_b) = two_replicas().await;
    let (_, _, pat) = user_with_token(&admin_a, "alice@example.com").await;
    let alice_on_b = Api::new(&b.host, &pat, admin_a.http.clone());
    let me = alice_on_b.ok(Method::GET, ME, None).await.unwrap();
    assert_eq!(me["userName"], "alice@example.com");

    let jwt = exchanged(&admin_a.http, &a.host, &pat).await;
    // B verifies an access token against its in-memory directory, which takes in the user created on A within the
    // bound; until then B refuses the token (failing closed), so this waits for it.
    until_status(&alice_on_b.with_token(&jwt), ME, 200).await;
    let me = alice_on_b
        .with_token(&jwt)
        .ok(Method::GET, ME, None)
        .await
        .unwrap();
    assert_eq!(me["userName"], "alice@example.com");

    // A key rotated on A signs at once; B verifies the token without waiting for the rotation's announcement.
    let rotated = admin_a
        .post("/api/2.0/deputy/keys/rotate", &json!({}))
        .await
        .unwrap();
    let signed_with_new_key = exchanged(&admin_a.http, &a.host, &pat).await;
    let header = signed_with_new_key.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], rotated["kid"], "{rotated}");
    assert_eq!(
        status(&alice_on_b.with_token(&signed_with_new_key), ME).await,
        200
    );
    // Tokens signed before the rotation still verify everywhere until they expire.
    assert_eq!(status(&alice_on_b.with_token(&jwt), ME).await, 200);

    // Rotations on both at once: each replica's new key stays in the stored ring, so each replica's tokens verify on
    // the other, and both publish both keys.
    let rotate = "/api/2.0/deputy/keys/rotate";
    let nothing = json!({});
    let (on_a, on_b) = tokio::join!(
        admin_a.post(rotate, &nothing),
        admin_b.post(rotate, &nothing)
    );
    let rotated = [on_a.unwrap()["kid"].clone(), on_b.unwrap()["kid"].clone()];
    for (signer, verifier) in [(&a, &b), (&b, &a)] {
        let token = exchanged(&admin_a.http, &signer.host, &pat).await;
        let on_verifier = Api::new(&verifier.host, &token, admin_a.http.clone());
        assert_eq!(status(&on_verifier, ME).await, 200);
    }
    for replica in [&a, &b] {
        let keys: Value = admin_a
            .http
            .get(format!("{}/oidc/v1/keys", replica.host))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let published: Vec<&Value> = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| &key["kid"])
            .collect();
        for kid in &rotated {
            assert!(published.contains(&kid), "{kid} missing from {keys}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refuse_a_token_revoked_on_either_within_the_bound() {
    let (a, b, admin_a, _admin_b) = two_replicas().await;
    let mut pat_delays = Latencies::new();
    let mut jwt_delays = Latencies::new();
    for round in 0..40 {
        let (_, _, pat) = user_with_token(&admin_a, &format!("user{round}@example.com")).await;
        let on_b = Api::new(&b.host, &pat, admin_a.http.clone());
        let jwt = exchanged(&admin_a.http, &a.host, &pat).await;
        let jwt_on_b = on_b.with_token(&jwt);
        // Both known to B (its caches hold them) before they are revoked on A; the access token once B has taken in
        // the user created on A, within the bound.
        assert_eq!(status(&on_b, ME).await, 200);
        until_status(&jwt_on_b, ME, 200).await;

        oauth(
            &admin_a.http,
            &a.host,
            "/oidc/v1/revoke",
            &[("token", &jwt)],
        )
        .await;
        jwt_delays.record(until_status(&jwt_on_b, ME, 401).await);
        oauth(
            &admin_a.http,
            &a.host,
            "/oidc/v1/revoke",
            &[("token", &pat)],
        )
        .await;
        pat_delays.record(until_status(&on_b, ME, 401).await);
    }
    report(
        "a revoked access token refused on the other replica",
        &jwt_delays,
    );
    report(
        "a deleted personal access token refused on the other replica",
        &pat_delays,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_enforce_a_grant_changed_on_either_within_the_bound() {
    let (_a, _b, admin_a, admin_b) = two_replicas().await;
    let (_, _, pat) = user_with_token(&admin_a, "alice@example.com").await;
    let alice_on_a = admin_a.with_token(&pat);
    admin_b
        .post(
            "/api/2.1/unity-catalog/catalogs",
            &json!({ "name": "sales" }),
        )
        .await
        .unwrap();
    let catalog = "/api/2.1/unity-catalog/catalogs/sales";
    let grants = "/api/2.1/unity-catalog/permissions/catalog/sales";
    let refused = status(&alice_on_a, catalog).await;
    assert!(matches!(refused, 403 | 404), "{refused}");
    let mut granted = Latencies::new();
    let mut revoked = Latencies::new();
    for _ in 0..15 {
        let change = |verb: &str| json!({ "changes": [{ "principal": "alice@example.com", verb: ["USE_CATALOG"] }] });
        admin_b
            .ok(Method::PATCH, grants, Some(&change("add")))
            .await
            .unwrap();
        granted.record(until_status(&alice_on_a, catalog, 200).await);
        admin_b
            .ok(Method::PATCH, grants, Some(&change("remove")))
            .await
            .unwrap();
        let start = Instant::now();
        while status(&alice_on_a, catalog).await == 200 {
            assert!(
                start.elapsed() < BOUND,
                "the revoked grant still held after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        revoked.record(start.elapsed());
    }
    report(
        "a grant made on one replica enforced on the other",
        &granted,
    );
    report(
        "a grant revoked on one replica enforced on the other",
        &revoked,
    );
}

/// Clients write through both replicas; one is killed (SIGKILL) mid-run. The other keeps answering, every write
/// either replica acknowledged is there afterwards, and no caller ever sees another's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_lose_nothing_acknowledged_when_one_is_killed() {
    let (a, b, admin_a, admin_b) = two_replicas().await;
    let (_, _, pat) = user_with_token(&admin_a, "alice@example.com").await;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (admin_a, admin_b) = (admin_a.clone(), admin_b.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused_by_b = 0;
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let name = format!("w{writer}-{n}@example.com");
                    let via_b = n % 2 == 1;
                    let via = if via_b { &admin_b } else { &admin_a };
                    let body = json!({ "userName": name });
                    match via
                        .call(Method::POST, "/api/2.0/preview/scim/v2/Users", Some(&body))
                        .await
                    {
                        Ok(reply) if (200..300).contains(&reply.status) => acknowledged.push(name),
                        Ok(_) | Err(_) if via_b => refused_by_b += 1,
                        // A's connection dropped or was refused: not acknowledged, so not counted.
                        _ => {}
                    }
                }
                (acknowledged, refused_by_b)
            })
        })
        .collect();
    let alice_on_b = Api::new(&b.host, &pat, admin_b.http.clone());
    let reader = tokio::spawn(async move {
        let mut answered = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let me = alice_on_b.ok(Method::GET, ME, None).await.unwrap();
            assert_eq!(me["userName"], "alice@example.com");
            answered += 1;
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut acknowledged = Vec::new();
    for writer in writers {
        let (names, refused_by_b) = writer.await.unwrap();
        assert_eq!(refused_by_b, 0, "the surviving replica refused writes");
        acknowledged.extend(names);
    }
    assert!(reader.await.unwrap() > 0);
    assert!(
        acknowledged.len() > 20,
        "too few writes to tell: {}",
        acknowledged.len()
    );
    for name in &acknowledged {
        let found = admin_b
            .ok(
                Method::GET,
                &format!("/api/2.0/preview/scim/v2/Users?filter=userName%20eq%20%22{name}%22"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(found["totalResults"], 1, "acknowledged {name} is gone");
    }
    drop(a);
}
