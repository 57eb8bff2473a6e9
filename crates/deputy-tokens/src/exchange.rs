//! RFC 8693 token exchange as a pure rule: subject claims + request in, the claims of the new token out.
//!
//! Two guarantees hold for every exchange, whatever the request says:
//! - the issued scope is a subset of the subject token's scope, so scopes only shrink along a chain of agents;
//! - the issued token expires no later than the subject token, so delegation never extends a credential's life.
//!
//! The caller has already verified the subject (and actor) tokens and decided that the actor may act for the subject;
//! this module only computes what the new token may hold.

use deputy_core::ScopeSet;

use crate::claims::{AccessClaims, Actor, MAX_ACTOR_CHAIN, MAX_DERIVATION_DEPTH};
use crate::random::{RandomnessError, new_jti};

/// How requested scopes wider than the subject's are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeMode {
    /// The OAuth token endpoint: asking for a scope the subject lacks is an `invalid_scope` error naming it, as RFC
    /// 8693 §2.2.2 expects.
    RefuseWider,
    /// The on-behalf-of serving path: the agent's declared scopes are intersected with the caller's, so a caller
    /// with fewer scopes simply hands down fewer.
    Intersect,
}

/// What the exchange asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The requested scopes; `None` asks for all of the subject's.
    pub scope: Option<ScopeSet>,
    /// The party that will act for the subject: the actor token's `sub` and, when that token was itself delegated,
    /// its own `act` chain. `None` for a plain downscoping exchange, which keeps the subject's chain as it is.
    pub actor: Option<Actor>,
    /// The `aud` of the issued token.
    pub audience: String,
    /// The `client_id` of the issued token: the client that performed the exchange, if any.
    pub client_id: Option<String>,
    pub mode: ScopeMode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("requested scopes are not held by the subject token: {0}")]
    ScopeNotHeld(ScopeSet),
    #[error("no scope would remain in the issued token")]
    EmptyScope,
    #[error("subject token has expired")]
    SubjectExpired,
    #[error("audience must not be empty")]
    EmptyAudience,
    #[error("actor must have a non-empty `sub`")]
    EmptyActor,
    #[error("delegation chain would be longer than {MAX_ACTOR_CHAIN} actors")]
    ChainTooLong,
    #[error("maximum token lifetime must be positive")]
    InvalidLifetime,
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
}

impl ExchangeError {
    /// The OAuth 2.0 `error` code for this failure (RFC 6749 §5.2, RFC 8693 §2.2.2).
    pub fn oauth_error_code(&self) -> &'static str {
        match self {
            ExchangeError::ScopeNotHeld(_) | ExchangeError::EmptyScope => "invalid_scope",
            ExchangeError::SubjectExpired => "invalid_grant",
            ExchangeError::EmptyAudience => "invalid_target",
            ExchangeError::EmptyActor | ExchangeError::ChainTooLong => "invalid_request",
            // Not the client's fault: RFC 6749's code for a server that cannot complete the request.
            ExchangeError::InvalidLifetime | ExchangeError::Randomness(_) => "server_error",
        }
    }
}

/// Computes the claims of the token issued in exchange for `subject` at `now`, living at most `max_ttl` seconds.
///
/// - `scope`: see [`ScopeMode`]; always a non-empty subset of `subject.scope`.
/// - `act`: the actor's chain (current actor outermost), then the actor itself, then the subject's existing chain, so
///   chains nest and grow: `{sub: actor, act: <subject's act>}` in the common case of an undelegated actor.
/// - `exp = min(subject.exp, now + max_ttl)`, `iat = nbf = now`, a fresh `jti`; `iss` and `sub` are the subject's.
pub fn exchange(
    subject: &AccessClaims,
    request: &ExchangeRequest,
    now: i64,
    max_ttl: i64,
) -> Result<AccessClaims, ExchangeError> {
    if max_ttl <= 0 {
        return Err(ExchangeError::InvalidLifetime);
    }
    if now >= subject.exp {
        return Err(ExchangeError::SubjectExpired);
    }
    if request.audience.is_empty() {
        return Err(ExchangeError::EmptyAudience);
    }
    let scope = narrow_scope(subject.scope, request.scope, request.mode)?;
    let act = match &request.actor {
        None => subject.act.clone(),
        Some(actor) => Some(delegate(actor, subject.act.as_ref())?),
    };
    if subject.derived_from.len() >= MAX_DERIVATION_DEPTH {
        return Err(ExchangeError::ChainTooLong);
    }
    let derived_from = std::iter::once(subject.jti.clone())
        .chain(subject.derived_from.iter().cloned())
        .collect();
    Ok(AccessClaims {
        iss: subject.iss.clone(),
        aud: request.audience.clone(),
        sub: subject.sub.clone(),
        exp: subject.exp.min(now.saturating_add(max_ttl)),
        iat: now,
        nbf: now,
        jti: new_jti()?,
        scope,
        client_id: request.client_id.clone(),
        act,
        derived_from,
    })
}

fn narrow_scope(
    held: ScopeSet,
    requested: Option<ScopeSet>,
    mode: ScopeMode,
) -> Result<ScopeSet, ExchangeError> {
    let requested = requested.unwrap_or(held);
    let issued = match mode {
        ScopeMode::RefuseWider if !requested.is_subset_of(held) => {
            let missing = requested.iter().filter(|scope| !held.contains(*scope));
            return Err(ExchangeError::ScopeNotHeld(missing.collect()));
        }
        ScopeMode::RefuseWider => requested,
        ScopeMode::Intersect => held.intersection(requested),
    };
    if issued.is_empty() {
        return Err(ExchangeError::EmptyScope);
    }
    Ok(issued)
}

/// The new `act`: the actor token's own chain outermost (whoever acts for the actor is the party acting now), then
/// the actor, then the subject's prior actors.
fn delegate(actor: &Actor, prior: Option<&Actor>) -> Result<Actor, ExchangeError> {
    let mut chain: Vec<&str> = actor.act.as_deref().map(Actor::chain).unwrap_or_default();
    chain.push(&actor.sub);
    chain.extend(prior.map(Actor::chain).unwrap_or_default());
    if chain.iter().any(|sub| sub.is_empty()) {
        return Err(ExchangeError::EmptyActor);
    }
    if chain.len() > MAX_ACTOR_CHAIN {
        return Err(ExchangeError::ChainTooLong);
    }
    Actor::from_chain(&chain).ok_or(ExchangeError::EmptyActor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_core::ApiScope;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    fn subject(scope: &str) -> AccessClaims {
        let mut claims = AccessClaims::issue(
            "https://deputy.test",
            "workspace",
            "alice@example.com",
            ScopeSet::parse(scope).unwrap(),
            NOW - 100,
            3600,
        )
        .unwrap();
        claims.client_id = Some("cli".into());
        claims
    }

    fn request(scope: Option<&str>, actor: Option<&str>, mode: ScopeMode) -> ExchangeRequest {
        ExchangeRequest {
            scope: scope.map(|s| ScopeSet::parse(s).unwrap()),
            actor: actor.map(Actor::new),
            audience: "workspace".into(),
            client_id: None,
            mode,
        }
    }

    #[test]
    fn refuse_wider_narrows_and_names_what_is_missing() {
        let alice = subject("sql vector-search");
        let issued = exchange(
            &alice,
            &request(
                Some("sql.statement-execution"),
                None,
                ScopeMode::RefuseWider,
            ),
            NOW,
            600,
        )
        .unwrap();
        assert_eq!(issued.scope.to_string(), "sql.statement-execution");

        let err = exchange(
            &alice,
            &request(
                Some("sql genie catalog.tables"),
                None,
                ScopeMode::RefuseWider,
            ),
            NOW,
            600,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ExchangeError::ScopeNotHeld(
                ScopeSet::parse("catalog.tables dashboards.genie").unwrap()
            )
        );
        assert_eq!(err.oauth_error_code(), "invalid_scope");
        assert_eq!(
            err.to_string(),
            "requested scopes are not held by the subject token: catalog.tables dashboards.genie"
        );
    }

    #[test]
    fn intersect_keeps_only_the_common_scopes() {
        let alice = subject("sql vector-search");
        let issued = exchange(
            &alice,
            &request(
                Some("sql.warehouses genie serving"),
                Some("sp-agent"),
                ScopeMode::Intersect,
            ),
            NOW,
            600,
        )
        .unwrap();
        assert_eq!(issued.scope, ScopeSet::from(ApiScope::SqlWarehouses));
    }

    #[test]
    fn no_requested_scope_means_all_of_the_subjects() {
        let alice = subject("sql vector-search");
        for mode in [ScopeMode::RefuseWider, ScopeMode::Intersect] {
            let issued = exchange(&alice, &request(None, None, mode), NOW, 600).unwrap();
            assert_eq!(issued.scope, alice.scope);
        }
    }

    #[test]
    fn empty_result_is_invalid_scope() {
        let alice = subject("sql");
        let err = exchange(
            &alice,
            &request(Some("genie"), None, ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap_err();
        assert_eq!(err, ExchangeError::EmptyScope);
        assert_eq!(err.oauth_error_code(), "invalid_scope");
        let err = exchange(
            &alice,
            &request(Some("openid"), None, ScopeMode::RefuseWider),
            NOW,
            600,
        )
        .unwrap_err();
        assert_eq!(err, ExchangeError::EmptyScope);
    }

    #[test]
    fn act_chain_nests_three_deep() {
        let alice = subject("all-apis");
        let first = exchange(
            &alice,
            &request(None, Some("agent-a"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap();
        let second = exchange(
            &first,
            &request(None, Some("agent-b"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap();
        let third = exchange(
            &second,
            &request(None, Some("agent-c"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap();
        assert_eq!(third.sub, "alice@example.com");
        assert_eq!(third.actor_chain(), vec!["agent-c", "agent-b", "agent-a"]);
        let act = third.act.as_ref().unwrap();
        assert_eq!(act.sub, "agent-c");
        assert_eq!(act.act.as_ref().unwrap().sub, "agent-b");
        assert_eq!(
            act.act.as_ref().unwrap().act.as_ref().unwrap().sub,
            "agent-a"
        );
        assert!(
            act.act
                .as_ref()
                .unwrap()
                .act
                .as_ref()
                .unwrap()
                .act
                .is_none()
        );
    }

    #[test]
    fn delegated_actor_brings_its_own_chain_outermost() {
        let alice = subject("all-apis");
        let first = exchange(
            &alice,
            &request(None, Some("agent-a"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap();
        let mut req = request(None, None, ScopeMode::Intersect);
        // The actor token: `runner` acting for service principal `agent-b`.
        req.actor = Actor::from_chain(&["agent-b", "runner"]);
        let issued = exchange(&first, &req, NOW, 600).unwrap();
        assert_eq!(issued.actor_chain(), vec!["runner", "agent-b", "agent-a"]);
    }

    #[test]
    fn no_actor_keeps_the_subjects_chain() {
        let alice = subject("all-apis");
        let first = exchange(
            &alice,
            &request(None, Some("agent-a"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap();
        let narrowed = exchange(
            &first,
            &request(Some("sql"), None, ScopeMode::RefuseWider),
            NOW,
            600,
        )
        .unwrap();
        assert_eq!(narrowed.actor_chain(), vec!["agent-a"]);
        assert_eq!(narrowed.client_id, None);
    }

    #[test]
    fn chains_are_bounded_and_actors_named() {
        let mut token = subject("sql");
        for depth in 0..MAX_ACTOR_CHAIN {
            token = exchange(
                &token,
                &request(None, Some(&format!("a{depth}")), ScopeMode::Intersect),
                NOW,
                600,
            )
            .unwrap();
        }
        let err = exchange(
            &token,
            &request(None, Some("one-too-many"), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap_err();
        assert_eq!(err, ExchangeError::ChainTooLong);
        assert_eq!(err.oauth_error_code(), "invalid_request");
        let err = exchange(
            &subject("sql"),
            &request(None, Some(""), ScopeMode::Intersect),
            NOW,
            600,
        )
        .unwrap_err();
        assert_eq!(err, ExchangeError::EmptyActor);
    }

    #[test]
    fn expiry_is_clamped_to_the_subject_and_to_max_ttl() {
        let alice = subject("sql");
        assert_eq!(alice.exp, NOW + 3500);
        let short = exchange(
            &alice,
            &request(None, Some("a"), ScopeMode::Intersect),
            NOW,
            300,
        )
        .unwrap();
        assert_eq!(short.exp, NOW + 300);
        let long = exchange(
            &alice,
            &request(None, Some("a"), ScopeMode::Intersect),
            NOW,
            86_400,
        )
        .unwrap();
        assert_eq!(long.exp, alice.exp);
        assert_eq!((long.iat, long.nbf), (NOW, NOW));
        let later = exchange(
            &long,
            &request(None, Some("b"), ScopeMode::Intersect),
            NOW + 3000,
            86_400,
        )
        .unwrap();
        assert_eq!(later.exp, alice.exp);
    }

    #[test]
    fn expired_subject_is_invalid_grant() {
        let alice = subject("sql");
        let err = exchange(
            &alice,
            &request(None, None, ScopeMode::Intersect),
            alice.exp,
            600,
        )
        .unwrap_err();
        assert_eq!(err, ExchangeError::SubjectExpired);
        assert_eq!(err.oauth_error_code(), "invalid_grant");
    }

    #[test]
    fn other_fields_of_the_issued_token() {
        let alice = subject("sql");
        let mut req = request(None, Some("a"), ScopeMode::Intersect);
        req.audience = "other-workspace".into();
        req.client_id = Some("endpoint-client".into());
        let issued = exchange(&alice, &req, NOW, 600).unwrap();
        assert_eq!(issued.aud, "other-workspace");
        assert_eq!(issued.iss, alice.iss);
        assert_eq!(issued.client_id.as_deref(), Some("endpoint-client"));
        assert_ne!(issued.jti, alice.jti);
        assert_eq!(issued.jti.len(), 32);

        req.audience.clear();
        let err = exchange(&alice, &req, NOW, 600).unwrap_err();
        assert_eq!(err.oauth_error_code(), "invalid_target");
        req.audience = "w".into();
        assert_eq!(
            exchange(&alice, &req, NOW, 0).unwrap_err(),
            ExchangeError::InvalidLifetime
        );
    }

    fn any_set() -> impl Strategy<Value = ScopeSet> {
        proptest::collection::vec(proptest::sample::select(ApiScope::ALL.to_vec()), 0..12)
            .prop_map(|scopes| scopes.into_iter().collect())
    }

    fn any_mode() -> impl Strategy<Value = ScopeMode> {
        prop_oneof![Just(ScopeMode::RefuseWider), Just(ScopeMode::Intersect)]
    }

    proptest! {
        #[test]
        fn issued_scope_is_within_subject_and_request(
            held in any_set(),
            requested in proptest::option::of(any_set()),
            mode in any_mode(),
        ) {
            let mut alice = subject("sql");
            alice.scope = held;
            let mut req = request(None, Some("agent"), mode);
            req.scope = requested;
            let wanted = requested.unwrap_or(held);
            match exchange(&alice, &req, NOW, 600) {
                Ok(issued) => {
                    prop_assert!(issued.scope.is_subset_of(held));
                    prop_assert!(!issued.scope.is_empty());
                    prop_assert!(issued.scope.is_subset_of(wanted));
                    if mode == ScopeMode::Intersect {
                        prop_assert_eq!(issued.scope, held.intersection(wanted));
                    } else {
                        prop_assert_eq!(issued.scope, wanted);
                    }
                }
                Err(ExchangeError::EmptyScope) => {
                    prop_assert!(held.intersection(wanted).is_empty());
                }
                Err(ExchangeError::ScopeNotHeld(missing)) => {
                    prop_assert_eq!(mode, ScopeMode::RefuseWider);
                    prop_assert!(!missing.is_empty());
                    prop_assert!(missing.is_subset_of(wanted));
                    prop_assert!(missing.intersection(held).is_empty());
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }

        #[test]
        fn a_two_step_chain_never_gains_a_scope(
            held in any_set(),
            first_request in proptest::option::of(any_set()),
            second_request in proptest::option::of(any_set()),
            first_mode in any_mode(),
            second_mode in any_mode(),
        ) {
            let mut alice = subject("sql");
            alice.scope = held;
            let mut first_req = request(None, Some("agent-a"), first_mode);
            first_req.scope = first_request;
            let Ok(first) = exchange(&alice, &first_req, NOW, 600) else {
                return Ok(());
            };
            let mut second_req = request(None, Some("agent-b"), second_mode);
            second_req.scope = second_request;
            if let Ok(second) = exchange(&first, &second_req, NOW + 1, 600) {
                prop_assert!(second.scope.is_subset_of(first.scope));
                prop_assert!(second.scope.is_subset_of(held));
                prop_assert!(second.exp <= first.exp);
                prop_assert_eq!(second.actor_chain(), vec!["agent-b", "agent-a"]);
                // Each token names its ancestors, nearest first, so revoking any of them reaches it.
                prop_assert_eq!(&second.derived_from[0], &first.jti);
                prop_assert_eq!(&second.derived_from[1..], &first.derived_from[..]);
                prop_assert_eq!(&first.derived_from, &vec![alice.jti.clone()]);
            }
        }
    }
}
