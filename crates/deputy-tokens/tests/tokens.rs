//! Access tokens through the public API: round trips, key rotation, and a table of forged tokens.

// The helpers below are test code too; a failed unwrap there is a failed test.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_core::{ApiScope, ScopeSet};
use deputy_tokens::{
    AccessClaims, Actor, ExchangeRequest, KeyRing, MAX_TOKEN_BYTES, PersistedKey, ScopeMode,
    TokenError, TokenIssuer, exchange, looks_like_jwt,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://deputy.test/oidc";
const AUDIENCE: &str = "https://deputy.test";
const NOW: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

fn issuer() -> TokenIssuer {
    TokenIssuer::new(
        ISSUER,
        AUDIENCE,
        KeyRing::generate(NOW - HOUR, HOUR).unwrap(),
    )
}

fn claims() -> AccessClaims {
    let mut claims = AccessClaims::issue(
        ISSUER,
        AUDIENCE,
        "alice@example.com",
        ScopeSet::parse("sql vector-search").unwrap(),
        NOW,
        600,
    )
    .unwrap();
    claims.client_id = Some("cli-client".into());
    claims.act = Actor::from_chain(&["agent-b", "agent-a"]);
    claims
}

fn b64(value: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn parts(token: &str) -> (Value, Value, String) {
    let pieces: Vec<&str> = token.split('.').collect();
    assert_eq!(pieces.len(), 3);
    (
        decode_part(pieces[0]),
        decode_part(pieces[1]),
        pieces[2].to_owned(),
    )
}

/// Joins a header and payload with a signature made by `sign` over them.
fn assemble(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let signature = sign(message.as_bytes());
    format!("{message}.{}", b64(&signature))
}

/// Re-signs an edited header and payload with the ring's real current key, via a copy of the ring, so that tests of
/// claim checks are not accidentally tests of the signature check.
fn sign_with(ring_seed: [u8; 32], header: &Value, payload: &Value) -> String {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&ring_seed);
    assemble(header, payload, |message| {
        key.sign(message).to_bytes().to_vec()
    })
}

#[test]
fn crypto_backend_is_wired_sign_then_verify() {
    let issuer = issuer();
    let original = claims();
    let token = issuer.sign(&original).unwrap();
    assert!(looks_like_jwt(&token));
    assert_eq!(issuer.verify(&token, NOW).unwrap(), original);
}

#[test]
fn token_shape_on_the_wire() {
    let issuer = issuer();
    let token = issuer.sign(&claims()).unwrap();
    let (header, payload, _) = parts(&token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], issuer.keys.current_kid());
    assert_eq!(
        payload["scope"],
        "vectorsearch.vector-search-endpoints vectorsearch.vector-search-indexes sql.warehouses sql.statement-execution"
    );
    assert_eq!(payload["sub"], "alice@example.com");
    assert_eq!(
        payload["act"],
        json!({"sub": "agent-b", "act": {"sub": "agent-a"}})
    );
    assert_eq!(payload["exp"], NOW + 600);
    assert_eq!(payload["client_id"], "cli-client");

    let mut bare = claims();
    bare.client_id = None;
    bare.act = None;
    bare.scope = ScopeSet::all();
    let (_, payload, _) = parts(&issuer.sign(&bare).unwrap());
    assert_eq!(payload["scope"], "all-apis");
    assert!(payload.get("act").is_none());
    assert!(payload.get("client_id").is_none());
}

#[test]
fn validity_window_is_exact() {
    let issuer = issuer();
    let token = issuer.sign(&claims()).unwrap();
    assert!(issuer.verify(&token, NOW).is_ok());
    assert!(issuer.verify(&token, NOW + 599).is_ok());
    assert_eq!(issuer.verify(&token, NOW + 600), Err(TokenError::Expired));
    assert_eq!(issuer.verify(&token, NOW - 1), Err(TokenError::NotYetValid));
}

#[test]
fn signing_refuses_what_verification_could_not_honour() {
    let issuer = issuer();
    let mut long = claims();
    long.exp = long.iat + HOUR + 1;
    assert_eq!(issuer.sign(&long), Err(TokenError::LifetimeTooLong(HOUR)));
    let mut foreign = claims();
    foreign.iss = "https://elsewhere".into();
    assert_eq!(issuer.sign(&foreign), Err(TokenError::WrongIssuer));
    let mut no_jti = claims();
    no_jti.jti.clear();
    assert_eq!(issuer.sign(&no_jti), Err(TokenError::MissingClaim("jti")));
    let mut deep = claims();
    let chain: Vec<String> = (0..17).map(|i| format!("agent-{i}")).collect();
    deep.act = Actor::from_chain(&chain);
    assert_eq!(issuer.sign(&deep), Err(TokenError::InvalidClaim("act")));
    let mut no_sub = claims();
    no_sub.sub.clear();
    assert_eq!(issuer.sign(&no_sub), Err(TokenError::MissingClaim("sub")));
}

/// Found by the `token_exchange` fuzz target: a subject whose `act` chain held an empty `sub` went through a plain
/// exchange (no actor, so the chain is kept as is) and was signed, but verification refuses such a chain, so the
/// issued token could never be used. Signing now applies verification's rule.
#[test]
fn an_actor_chain_with_an_empty_sub_is_never_signed() {
    let issuer = issuer();
    let mut subject = claims();
    subject.act = Actor::from_chain(&["agent-b", ""]);
    let request = ExchangeRequest {
        scope: None,
        actor: None,
        audience: AUDIENCE.into(),
        client_id: None,
        mode: ScopeMode::RefuseWider,
    };
    let issued = exchange(&subject, &request, NOW, 600).unwrap();
    assert_eq!(issuer.sign(&issued), Err(TokenError::InvalidClaim("act")));
    // A well-formed chain still signs and reads back unchanged.
    let good = exchange(&claims(), &request, NOW, 600).unwrap();
    let token = issuer.sign(&good).unwrap();
    assert_eq!(issuer.verify(&token, NOW).unwrap(), good);
}

#[test]
fn rotation_keeps_old_tokens_valid_until_pruned() {
    let mut issuer = issuer();
    let old_kid = issuer.keys.current_kid().to_owned();
    let old_token = issuer.sign(&claims()).unwrap();

    let new_kid = issuer.keys.rotate(NOW + 10).unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let mut later = claims();
    later.iat = NOW + 10;
    later.nbf = NOW + 10;
    later.exp = NOW + 10 + HOUR;
    let new_token = issuer.sign(&later).unwrap();
    assert_eq!(parts(&new_token).0["kid"], new_kid.as_str());
    assert_eq!(parts(&old_token).0["kid"], old_kid.as_str());

    assert!(issuer.verify(&old_token, NOW + 20).is_ok());
    assert!(issuer.verify(&new_token, NOW + 20).is_ok());
    let kids: Vec<Value> = issuer.keys.jwks(NOW + 20)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, vec![json!(new_kid), json!(old_kid)]);

    // Nothing signed by the old key outlives NOW + 10 + HOUR, so pruning before then keeps it.
    assert_eq!(issuer.keys.prune(NOW + 10 + HOUR - 1), 0);
    assert_eq!(issuer.keys.prune(NOW + 10 + HOUR), 1);
    assert_eq!(
        issuer.keys.jwks(NOW + 20)["keys"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        issuer.verify(&old_token, NOW + 20),
        Err(TokenError::UnknownKeyId(old_kid))
    );
    assert!(issuer.verify(&new_token, NOW + 20).is_ok());
}

#[test]
fn persisted_ring_verifies_tokens_of_the_original() {
    let mut first = issuer();
    let old_token = first.sign(&claims()).unwrap();
    first.keys.rotate(NOW).unwrap();
    let new_token = first.sign(&claims()).unwrap();

    let stored: Vec<PersistedKey> = first.keys.to_persisted();
    let restored = TokenIssuer::new(
        ISSUER,
        AUDIENCE,
        KeyRing::from_persisted(&stored, HOUR).unwrap(),
    );
    assert_eq!(restored.keys.current_kid(), first.keys.current_kid());
    assert!(restored.verify(&old_token, NOW + 1).is_ok());
    assert!(restored.verify(&new_token, NOW + 1).is_ok());
    // Tokens from the restored ring verify on the original: same current key.
    let again = restored.sign(&claims()).unwrap();
    assert!(first.verify(&again, NOW + 1).is_ok());
}

#[test]
fn exchanged_token_signs_and_verifies_with_its_chain() {
    let issuer = issuer();
    let user_token = issuer.sign(&claims()).unwrap();
    let subject = issuer.verify(&user_token, NOW + 5).unwrap();
    let request = ExchangeRequest {
        scope: Some(ScopeSet::from(ApiScope::VectorSearchIndexes)),
        actor: Some(Actor::new("endpoint-sp")),
        audience: AUDIENCE.into(),
        client_id: None,
        mode: ScopeMode::Intersect,
    };
    let issued = exchange(&subject, &request, NOW + 5, 300).unwrap();
    let token = issuer.sign(&issued).unwrap();
    let back = issuer.verify(&token, NOW + 6).unwrap();
    assert_eq!(
        back.actor_chain(),
        vec!["endpoint-sp", "agent-b", "agent-a"]
    );
    assert_eq!(back.scope.to_string(), "vectorsearch.vector-search-indexes");
    assert_eq!(back.exp, NOW + 305);
}

#[test]
fn error_messages_are_lowercase_and_never_echo_the_token() {
    let issuer = issuer();
    let token = issuer.sign(&claims()).unwrap();
    let (_, _, signature) = parts(&token);
    for probe in [
        token.clone() + "x",
        token[..token.len() - 3].to_owned(),
        format!("{token}.{token}"),
    ] {
        let message = issuer.verify(&probe, NOW).unwrap_err().to_string();
        assert!(!message.contains(&signature[..20]), "{message}");
        assert!(!message.contains("eyJ"), "{message}");
        assert_eq!(message, message.to_lowercase().replace("eddsa", "EdDSA"));
    }
}

/// One forged token per row, each refused with the error the row names.
#[test]
fn forged_tokens_are_refused() {
    let issuer = issuer();
    let seed = issuer.keys.to_persisted()[0].seed;
    let kid = issuer.keys.current_kid().to_owned();
    let genuine = issuer.sign(&claims()).unwrap();
    let (header, payload, signature) = parts(&genuine);
    let public_key = URL_SAFE_NO_PAD
        .decode(issuer.keys.jwks(NOW)["keys"][0]["x"].as_str().unwrap())
        .unwrap();

    let with_header = |edit: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        edit(&mut h);
        sign_with(seed, &h, &payload)
    };
    let with_payload = |edit: &dyn Fn(&mut Value)| {
        let mut p = payload.clone();
        edit(&mut p);
        sign_with(seed, &header, &p)
    };

    let hs256_with_public_key = {
        let mut h = header.clone();
        h["alg"] = json!("HS256");
        let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jwt_header.kid = Some(kid.clone());
        jwt_header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(
            &jwt_header,
            &payload,
            &jsonwebtoken::EncodingKey::from_secret(&public_key).unwrap(),
        )
        .unwrap();
        assert_eq!(parts(&token).0["alg"], "HS256");
        token
    };

    let payload_edited_keeping_signature = {
        let mut p = payload.clone();
        p["scope"] = json!("all-apis");
        format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(p.to_string().as_bytes())
        )
    };

    let other_key_same_kid = {
        let other = KeyRing::generate(NOW, HOUR).unwrap().to_persisted()[0].seed;
        assert_ne!(other, seed);
        sign_with(other, &header, &payload)
    };

    let huge = {
        let mut p = payload.clone();
        p["padding"] = json!("x".repeat(100 * 1024));
        sign_with(seed, &header, &p)
    };

    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "alg none, empty signature",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"at+jwt"}"#),
                b64(payload.to_string().as_bytes())
            ),
            TokenError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "alg none with the genuine signature",
            with_header(&|h| h["alg"] = json!("none")),
            TokenError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "HS256 keyed with the public key",
            hs256_with_public_key,
            TokenError::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "RS256 header",
            with_header(&|h| h["alg"] = json!("RS256")),
            TokenError::UnsupportedAlgorithm("RS256".into()),
        ),
        (
            "ES256 header",
            with_header(&|h| h["alg"] = json!("ES256")),
            TokenError::UnsupportedAlgorithm("ES256".into()),
        ),
        (
            "alg in another case",
            with_header(&|h| h["alg"] = json!("eddsa")),
            TokenError::UnsupportedAlgorithm("eddsa".into()),
        ),
        (
            "alg full of markup is not echoed",
            with_header(&|h| h["alg"] = json!("<script>alert(1)</script>")),
            TokenError::UnsupportedAlgorithm("(unprintable)".into()),
        ),
        (
            "unknown kid",
            with_header(&|h| h["kid"] = json!("not-a-key-of-ours")),
            TokenError::UnknownKeyId("not-a-key-of-ours".into()),
        ),
        (
            "kid path trick",
            with_header(&|h| h["kid"] = json!("../../etc/passwd")),
            TokenError::InvalidKeyId,
        ),
        (
            "very long kid",
            with_header(&|h| h["kid"] = json!("k".repeat(65))),
            TokenError::InvalidKeyId,
        ),
        (
            "kid not a string",
            with_header(&|h| h["kid"] = json!(7)),
            TokenError::Malformed("header is not a json object of the expected shape"),
        ),
        (
            "missing kid",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("kid");
            }),
            TokenError::MissingKeyId,
        ),
        (
            "embedded jwk without kid",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("kid");
                h["jwk"] = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public_key)});
            }),
            TokenError::MissingKeyId,
        ),
        (
            "wrong typ",
            with_header(&|h| h["typ"] = json!("JWT")),
            TokenError::WrongType,
        ),
        (
            "crit header",
            with_header(&|h| h["crit"] = json!(["exp"])),
            TokenError::CriticalHeader,
        ),
        (
            "expired",
            with_payload(&|p| p["exp"] = json!(NOW)),
            TokenError::Expired,
        ),
        (
            "nbf in the future",
            with_payload(&|p| p["nbf"] = json!(NOW + 1)),
            TokenError::NotYetValid,
        ),
        (
            "wrong iss",
            with_payload(&|p| p["iss"] = json!("https://evil.test/oidc")),
            TokenError::WrongIssuer,
        ),
        (
            "iss with a trailing slash",
            with_payload(&|p| p["iss"] = json!(format!("{ISSUER}/"))),
            TokenError::WrongIssuer,
        ),
        (
            "wrong aud",
            with_payload(&|p| p["aud"] = json!("https://other.test")),
            TokenError::WrongAudience,
        ),
        (
            "aud as an array",
            with_payload(&|p| p["aud"] = json!([AUDIENCE])),
            TokenError::Malformed("claims are not a json object of the expected shape"),
        ),
        (
            "missing jti",
            with_payload(&|p| {
                p.as_object_mut().unwrap().remove("jti");
            }),
            TokenError::MissingClaim("jti"),
        ),
        (
            "empty jti",
            with_payload(&|p| p["jti"] = json!("")),
            TokenError::MissingClaim("jti"),
        ),
        (
            "missing exp",
            with_payload(&|p| {
                p.as_object_mut().unwrap().remove("exp");
            }),
            TokenError::MissingClaim("exp"),
        ),
        (
            "missing sub",
            with_payload(&|p| {
                p.as_object_mut().unwrap().remove("sub");
            }),
            TokenError::MissingClaim("sub"),
        ),
        (
            "unknown scope",
            with_payload(&|p| p["scope"] = json!("sql root")),
            TokenError::InvalidClaim("scope"),
        ),
        (
            "actor with empty sub",
            with_payload(&|p| p["act"] = json!({"sub": "a", "act": {"sub": ""}})),
            TokenError::InvalidClaim("act"),
        ),
        (
            "payload edited after signing",
            payload_edited_keeping_signature,
            TokenError::BadSignature,
        ),
        (
            "signature from another key with the same kid",
            other_key_same_kid,
            TokenError::BadSignature,
        ),
        (
            "signature bits flipped",
            {
                let mut sig = URL_SAFE_NO_PAD.decode(&signature).unwrap();
                sig[10] ^= 1;
                format!("{}.{}", genuine.rsplit_once('.').unwrap().0, b64(&sig))
            },
            TokenError::BadSignature,
        ),
        (
            "truncated token",
            // Cut on a base64 quantum boundary (86 characters less 6 is 80, 60 bytes), so the
            // result is valid base64url of the wrong length whatever the signature bytes are.
            genuine[..genuine.len() - 6].to_owned(),
            TokenError::Malformed("signature has the wrong length"),
        ),
        (
            "token cut before the signature",
            genuine.rsplit_once('.').unwrap().0.to_owned(),
            TokenError::Malformed("expected three dot-separated parts"),
        ),
        (
            "four parts",
            format!("{genuine}.{signature}"),
            TokenError::Malformed("expected three dot-separated parts"),
        ),
        (
            "padded signature",
            format!("{genuine}="),
            TokenError::Malformed("signature is not base64url"),
        ),
        (
            "garbage",
            "this is not a token".into(),
            TokenError::Malformed("expected three dot-separated parts"),
        ),
        (
            "garbage in three parts",
            "%%%.***.!!!".into(),
            TokenError::Malformed("header is not base64url"),
        ),
        (
            "header not json",
            format!("{}.{}.{signature}", b64(b"hello"), b64(b"world")),
            TokenError::Malformed("header is not a json object of the expected shape"),
        ),
        (
            "empty",
            String::new(),
            TokenError::Malformed("expected three dot-separated parts"),
        ),
        ("a 100 KiB token", huge, TokenError::TooLarge),
        (
            "one byte over the limit",
            "a".repeat(MAX_TOKEN_BYTES + 1),
            TokenError::TooLarge,
        ),
    ];

    // The genuine token passes, so each refusal below is due to its one change.
    assert!(issuer.verify(&genuine, NOW).is_ok());
    assert!(issuer.verify(&with_header(&|_| {}), NOW).is_ok());
    assert!(issuer.verify(&with_payload(&|_| {}), NOW).is_ok());

    let mut failures = Vec::new();
    for (name, token, expected) in &cases {
        match issuer.verify(token, NOW) {
            Err(actual) if actual == *expected => {}
            other => failures.push(format!("{name}: expected {expected:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
