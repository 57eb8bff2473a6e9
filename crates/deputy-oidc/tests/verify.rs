//! Foreign JWTs against federation policies, with an issuer served on loopback whose Ed25519 key the test holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_oidc::keys::{IssuerKeys, check_fetchable};
use deputy_oidc::verify::{Expected, verify_foreign_jwt};
use deputy_store::{FederationPolicy, PrincipalId};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const KID: &str = "key-1";
const AUDIENCE: &str = "https://deputy.test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with `header` and `claims`, signed with `key` (EdDSA), whatever the header says.
fn sign(key: &SigningKey, header: Value, claims: Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// Serves a discovery document naming `named_issuer` (its own URL when `None`) and a key set with `key`.
async fn issuer(key: &SigningKey, named_issuer: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = format!("http://{}", listener.local_addr().unwrap());
    let issuer = named_issuer.unwrap_or(&own).to_owned();
    let jwks_uri = format!("{own}/jwks");
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": KID,
        "x": b64(key.verifying_key().as_bytes()),
    }]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(json!({ "issuer": issuer, "jwks_uri": jwks_uri })) }),
        )
        .route("/jwks", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    own
}

fn policy(issuer: &str) -> FederationPolicy {
    FederationPolicy {
        policy_id: "p".into(),
        description: String::new(),
        issuer: issuer.into(),
        audiences: vec![AUDIENCE.into()],
        subject_claim: "sub".into(),
        subject: None,
        service_principal_id: None::<PrincipalId>,
        created_ms: 0,
        created_by: PrincipalId(1),
    }
}

fn claims(issuer: &str) -> Value {
    json!({ "iss": issuer, "aud": AUDIENCE, "sub": "ci-job", "exp": now() + 300, "iat": now() })
}

fn eddsa() -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": KID })
}

#[tokio::test]
async fn a_token_of_the_trusted_issuer_is_accepted_and_every_deviation_refused() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let url = issuer(&key, None).await;
    let keys = IssuerKeys::new().unwrap();
    let policy = policy(&url);
    let refused = |token: String, phrase: &'static str| {
        let keys = &keys;
        let policy = &policy;
        async move {
            let error = verify_foreign_jwt(keys, &token, &Expected::of_policy(policy))
                .await
                .unwrap_err();
            assert!(error.contains(phrase), "expected `{phrase}` in `{error}`");
        }
    };

    let accepted = verify_foreign_jwt(
        &keys,
        &sign(&key, eddsa(), claims(&url)),
        &Expected::of_policy(&policy),
    )
    .await
    .unwrap();
    assert_eq!(accepted["sub"], "ci-job");

    let mut expired = claims(&url);
    expired["exp"] = json!(now() - 3600);
    refused(sign(&key, eddsa(), expired), "ExpiredSignature").await;

    let mut other_audience = claims(&url);
    other_audience["aud"] = json!("https://elsewhere.test");
    refused(sign(&key, eddsa(), other_audience), "InvalidAudience").await;

    let mut other_issuer = claims(&url);
    other_issuer["iss"] = json!(format!("{url}/"));
    refused(sign(&key, eddsa(), other_issuer), "InvalidIssuer").await;

    let unsigned = format!(
        "{}.{}.",
        b64(json!({ "alg": "none" }).to_string().as_bytes()),
        b64(claims(&url).to_string().as_bytes())
    );
    refused(unsigned, "malformed JWT").await;

    // HS256 "signed" with the issuer's public key as the shared secret: the algorithm itself is refused.
    refused(
        sign(&key, json!({ "alg": "HS256", "kid": KID }), claims(&url)),
        "not accepted",
    )
    .await;

    refused(
        sign(
            &key,
            json!({ "alg": "EdDSA", "kid": "key-2" }),
            claims(&url),
        ),
        "no key of the issuer",
    )
    .await;

    let impostor = SigningKey::from_bytes(&[9; 32]);
    refused(sign(&impostor, eddsa(), claims(&url)), "InvalidSignature").await;

    let mut fixed_subject = policy.clone();
    fixed_subject.subject = Some("deploy-job".into());
    let error = verify_foreign_jwt(
        &keys,
        &sign(&key, eddsa(), claims(&url)),
        &Expected::of_policy(&fixed_subject),
    )
    .await
    .unwrap_err();
    assert!(error.contains("not the expected subject"), "{error}");
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let url = issuer(&key, Some("https://real-issuer.test")).await;
    let keys = IssuerKeys::new().unwrap();
    let error = verify_foreign_jwt(
        &keys,
        &sign(&key, eddsa(), claims(&url)),
        &Expected::of_policy(&policy(&url)),
    )
    .await
    .unwrap_err();
    assert!(error.contains("discovery document names issuer"), "{error}");
}

#[tokio::test]
async fn an_unreachable_issuer_refuses_the_token() {
    let key = SigningKey::from_bytes(&[7; 32]);
    // Nothing listens on port 9 of loopback.
    let url = "http://127.0.0.1:9";
    let error = verify_foreign_jwt(
        &IssuerKeys::new().unwrap(),
        &sign(&key, eddsa(), claims(url)),
        &Expected::of_policy(&policy(url)),
    )
    .await
    .unwrap_err();
    assert!(error.contains("could not be fetched"), "{error}");
}

#[test]
fn issuers_must_be_https_except_on_loopback() {
    assert!(check_fetchable("https://idp.example.com").is_ok());
    assert!(check_fetchable("http://127.0.0.1:8080").is_ok());
    assert!(check_fetchable("http://localhost:8080").is_ok());
    assert!(check_fetchable("http://[::1]:8080").is_ok());
    assert!(check_fetchable("http://idp.example.com").is_err());
    assert!(check_fetchable("http://127.0.0.1.example.com").is_err());
    assert!(check_fetchable("ftp://127.0.0.1").is_err());
    assert!(check_fetchable("not a url").is_err());
}
