//! The pure rules of RFC 8693 exchange on arbitrary subjects and requests. For every input:
//! - issued scope is a non-empty subset of the subject's; `RefuseWider` refuses exactly when the request is wider;
//! - `sub` and `iss` are the subject's; `exp <= min(subject.exp, now + max_ttl)`; the token is not backdated;
//! - the `act` chain only grows: it ends with the subject's chain, and with an actor it gains the actor's chain and
//!   the actor; it never exceeds MAX_ACTOR_CHAIN;
//! - the issued claims sign and verify back to themselves.

#![no_main]

#[path = "common.rs"]
mod common;

use deputy_core::{ApiScope, ScopeSet};
use deputy_tokens::{AccessClaims, Actor, ExchangeRequest, MAX_ACTOR_CHAIN, ScopeMode, exchange};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    subject_scope: u32,
    subject_chain: Vec<String>,
    subject_exp_offset: i16,
    requested_scope: Option<u32>,
    actor: Option<(String, Vec<String>)>,
    intersect: bool,
    max_ttl: i16,
}

fn set(bits: u32) -> ScopeSet {
    ApiScope::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, scope)| scope)
        .collect()
}

static ISSUER: OnceLock<deputy_tokens::TokenIssuer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let now = common::NOW;
    let mut subject = common::genuine_claims();
    subject.scope = set(input.subject_scope);
    subject.exp = now + i64::from(input.subject_exp_offset);
    subject.act = Actor::from_chain(&input.subject_chain);
    let requested = input.requested_scope.map(set);
    let actor = input
        .actor
        .as_ref()
        .map(|(sub, chain)| Actor { sub: sub.clone(), act: Actor::from_chain(chain).map(Box::new) });
    let mode = if input.intersect { ScopeMode::Intersect } else { ScopeMode::RefuseWider };
    let request = ExchangeRequest {
        scope: requested,
        actor: actor.clone(),
        audience: common::AUDIENCE.into(),
        client_id: None,
        mode,
    };
    let max_ttl = i64::from(input.max_ttl);
    let result = exchange(&subject, &request, now, max_ttl);
    let wider = requested.is_some_and(|r| !r.is_subset_of(subject.scope));
    let Ok(issued) = result else {
        return;
    };
    assert!(max_ttl > 0 && now < subject.exp);
    assert!(!issued.scope.is_empty() && issued.scope.is_subset_of(subject.scope));
    if let Some(requested) = requested {
        assert!(issued.scope.is_subset_of(requested));
    }
    assert!(!(mode == ScopeMode::RefuseWider && wider), "a wider request was granted");
    assert_eq!(issued.sub, subject.sub);
    assert_eq!(issued.iss, subject.iss);
    assert!(issued.exp <= subject.exp && issued.exp <= now + max_ttl);
    assert!(issued.iat == now && issued.nbf == now);

    let before = subject.actor_chain();
    let after = issued.actor_chain();
    // A verified subject never holds more than MAX_ACTOR_CHAIN actors; a plain exchange passes its chain through
    // unchanged, and signing (below) refuses an overlong one.
    assert!(after.len() <= MAX_ACTOR_CHAIN || (actor.is_none() && before.len() > MAX_ACTOR_CHAIN));
    assert!(after.ends_with(&before), "the subject's chain was not kept: {before:?} -> {after:?}");
    match &actor {
        None => assert_eq!(after, before),
        Some(actor) => {
            let mut expected: Vec<&str> = actor.act.as_deref().map(Actor::chain).unwrap_or_default();
            expected.push(&actor.sub);
            expected.extend(before.iter().copied());
            assert_eq!(after, expected);
            assert!(after.iter().all(|sub| !sub.is_empty()));
        }
    }

    // Whatever exchange issues, the signer accepts (or refuses as too large) and the verifier reads back unchanged.
    let issuer = ISSUER.get_or_init(common::issuer);
    let claims = AccessClaims { exp: issued.exp.max(now + 1), ..issued.clone() };
    match issuer.sign(&claims) {
        Ok(token) => assert_eq!(issuer.verify(&token, now).unwrap(), claims),
        // Over MAX_TOKEN_BYTES (long actor names): refusing to sign is the documented answer.
        Err(deputy_tokens::TokenError::TooLarge) => {}
        Err(error) => assert!(
            after.len() > MAX_ACTOR_CHAIN
                || after.iter().any(|sub| sub.is_empty())
                || claims.exp - claims.iat > common::MAX_LIFETIME,
            "signing refused well-formed claims: {error:?}"
        ),
    }
});

