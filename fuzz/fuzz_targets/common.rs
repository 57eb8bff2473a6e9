//! A fixed issuer and a genuine token, shared by the token targets. Deterministic (fixed seed, fixed claims), so a
//! crash reproduces from its input alone.

#![allow(dead_code)]

use deputy_core::ScopeSet;
use deputy_tokens::{AccessClaims, Actor, KeyRing, PersistedKey, TokenIssuer};

pub const NOW: i64 = 1_800_000_000;
pub const ISSUER: &str = "http://127.0.0.1:8080/oidc";
pub const AUDIENCE: &str = "http://127.0.0.1:8080";
pub const MAX_LIFETIME: i64 = 3600;

pub fn issuer() -> TokenIssuer {
    let keys = KeyRing::from_persisted(
        &[
            PersistedKey {
                kid: "currentkey0000001".into(),
                seed: [7; 32],
                created_at: NOW - 100,
                retired_at: None,
            },
            PersistedKey {
                kid: "retiredkey0000001".into(),
                seed: [9; 32],
                created_at: NOW - 5000,
                retired_at: Some(NOW - 200),
            },
        ],
        MAX_LIFETIME,
    )
    .unwrap();
    TokenIssuer::new(ISSUER, AUDIENCE, keys)
}

pub fn genuine_claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "alice@example.com".into(),
        exp: NOW + 600,
        iat: NOW - 10,
        nbf: NOW - 10,
        jti: "0123456789abcdef".into(),
        scope: ScopeSet::parse("sql vector-search").unwrap(),
        client_id: Some("cli".into()),
        act: Actor::from_chain(&["agent-b", "agent-a"]),
        derived_from: vec!["parent-jti".into()],
    }
}
