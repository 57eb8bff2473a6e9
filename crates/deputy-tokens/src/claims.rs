//! The claims of a Deputy access token and their JSON form inside the JWT.

use deputy_core::ScopeSet;
use serde::{Deserialize, Serialize};

use crate::random::{RandomnessError, new_jti};

/// The longest `act` chain a token may carry. Real chains are a handful of agents deep; the bound keeps a hostile or
/// runaway chain from growing tokens past [`crate::MAX_TOKEN_BYTES`] one exchange at a time.
pub const MAX_ACTOR_CHAIN: usize = 16;

/// The claims of an access token.
///
/// Times are seconds since the Unix epoch. `sub` is the stable name of the principal the token speaks for (a user
/// name, or a service principal's application id); the server maps it to a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// On the wire: the space-separated string of [`ScopeSet`]'s `Display`, read back with [`ScopeSet::parse`].
    pub scope: ScopeSet,
    /// The OAuth client that obtained the token, when one did.
    pub client_id: Option<String>,
    /// The delegation chain, `None` when the subject acts for itself.
    pub act: Option<Actor>,
    /// The ids of the tokens this one was exchanged from, nearest first (a personal access token as `pat:<id>`).
    /// Revoking any of them revokes this token too, so a stolen token cannot outlive its revocation through the
    /// tokens exchanged from it.
    pub derived_from: Vec<String>,
}

/// The most ancestors a token may name; one more than the longest `act` chain, for the first exchange of a token
/// that had no actor.
pub const MAX_DERIVATION_DEPTH: usize = 2 * MAX_ACTOR_CHAIN;

impl AccessClaims {
    /// Claims for a new token held by `sub` itself (no actor, no client), valid from `now` for `ttl` seconds, with a
    /// fresh `jti`.
    pub fn issue(
        iss: &str,
        aud: &str,
        sub: &str,
        scope: ScopeSet,
        now: i64,
        ttl: i64,
    ) -> Result<AccessClaims, RandomnessError> {
        Ok(AccessClaims {
            iss: iss.to_owned(),
            aud: aud.to_owned(),
            sub: sub.to_owned(),
            exp: now.saturating_add(ttl),
            iat: now,
            nbf: now,
            jti: new_jti()?,
            scope,
            client_id: None,
            act: None,
            derived_from: Vec::new(),
        })
    }

    /// The actors from the current one (outermost `act`) to the first one that was delegated to.
    pub fn actor_chain(&self) -> Vec<&str> {
        self.act.as_ref().map(Actor::chain).unwrap_or_default()
    }
}

/// An `act` claim (RFC 8693 §4.1): `sub` is the party acting; a nested `act` is the party that acted before it, so
/// the outermost `Actor` is the current actor and the innermost the first delegate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    pub fn new(sub: impl Into<String>) -> Actor {
        Actor {
            sub: sub.into(),
            act: None,
        }
    }

    /// The `sub`s from this actor inwards.
    pub fn chain(&self) -> Vec<&str> {
        let mut chain = Vec::new();
        let mut next = Some(self);
        while let Some(actor) = next {
            chain.push(actor.sub.as_str());
            next = actor.act.as_deref();
        }
        chain
    }

    /// Builds the nested form from a list ordered from the current actor inwards; `None` for an empty list.
    pub fn from_chain<S: AsRef<str>>(chain: &[S]) -> Option<Actor> {
        chain.iter().rev().fold(None, |inner, sub| {
            Some(Actor {
                sub: sub.as_ref().to_owned(),
                act: inner.map(Box::new),
            })
        })
    }
}

/// The claims as written into a token.
#[derive(Serialize)]
pub(crate) struct WireClaimsOut<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Actor>,
    #[serde(
        rename = "deputy_derived_from",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    derived_from: &'a [String],
}

impl<'a> From<&'a AccessClaims> for WireClaimsOut<'a> {
    fn from(claims: &'a AccessClaims) -> WireClaimsOut<'a> {
        WireClaimsOut {
            iss: &claims.iss,
            aud: &claims.aud,
            sub: &claims.sub,
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf,
            jti: &claims.jti,
            scope: claims.scope.to_string(),
            client_id: claims.client_id.as_deref(),
            act: claims.act.as_ref(),
            derived_from: &claims.derived_from,
        }
    }
}

/// The claims as read from a token whose signature has been checked. Every claim is optional here so that a missing
/// one is reported by name rather than as a generic parse failure; unknown claims are ignored, as RFC 7519 asks.
#[derive(Deserialize)]
pub(crate) struct WireClaimsIn {
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub sub: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub jti: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub act: Option<Actor>,
    #[serde(rename = "deputy_derived_from", default)]
    pub derived_from: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_round_trips_through_nesting() {
        let actor = Actor::from_chain(&["agent-b", "agent-a", "app"]).unwrap();
        assert_eq!(actor.sub, "agent-b");
        assert_eq!(actor.act.as_ref().unwrap().sub, "agent-a");
        assert_eq!(actor.chain(), vec!["agent-b", "agent-a", "app"]);
        assert_eq!(Actor::from_chain::<&str>(&[]), None);
    }

    #[test]
    fn actor_json_omits_absent_act() {
        let json = serde_json::to_string(&Actor::from_chain(&["b", "a"]).unwrap()).unwrap();
        assert_eq!(json, r#"{"sub":"b","act":{"sub":"a"}}"#);
    }
}
