//! Signing and verifying access tokens.
//!
//! Tokens are compact JWS with header `{"alg":"EdDSA","typ":"at+jwt","kid":...}` (RFC 9068's access-token type, so
//! no other kind of JWT signed by the same keys can pass as an access token).
//!
//! Verification reads the header itself instead of trusting a library's defaults: the algorithm must be `EdDSA`
//! exactly and the key comes from the ring by `kid`, never from the token, so `alg: none`, HMAC with the public key
//! as secret and embedded `jwk`/`jku` keys have nothing to work with. The payload is parsed only after the signature
//! has been checked. There is **no clock-skew leeway**: tokens are issued and checked by replicas of the same server
//! (tokens from outside identity providers are checked elsewhere), so `exp` and `nbf` are compared exactly with the
//! `now` the caller passes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_core::ScopeSet;
use serde::{Deserialize, Serialize};

use crate::claims::{
    AccessClaims, MAX_ACTOR_CHAIN, MAX_DERIVATION_DEPTH, WireClaimsIn, WireClaimsOut,
};
use crate::keys::{KeyRing, is_well_formed_kid};

/// Tokens longer than this are refused before any decoding. Deputy's own tokens are well under 2 KiB even with a
/// full actor chain; the limit only bounds the work a hostile header can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The `typ` header of every access token (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

const THREE_PARTS: TokenError = TokenError::Malformed("expected three dot-separated parts");

/// Why a token was refused. Messages are lowercase, name what was wrong, and never contain the token; they are meant
/// to reach the client in a 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm `{0}` is not accepted, only EdDSA is")]
    UnsupportedAlgorithm(String),
    #[error("token type must be `at+jwt`")]
    WrongType,
    #[error("token header marks extensions as critical, none are supported")]
    CriticalHeader,
    #[error("token header has no key id")]
    MissingKeyId,
    #[error("token key id is not well formed")]
    InvalidKeyId,
    #[error("token key id `{0}` is unknown or retired")]
    UnknownKeyId(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lifetime exceeds the maximum of {0} seconds")]
    LifetimeTooLong(i64),
    #[error("token could not be signed")]
    Signing,
}

/// Signs and verifies the access tokens of one issuer for one audience.
#[derive(Debug)]
pub struct TokenIssuer {
    pub issuer: String,
    pub audience: String,
    pub keys: KeyRing,
}

/// The header of the tokens this issuer signs.
#[derive(Serialize)]
struct WireHeaderOut<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// The header fields that verification looks at. Duplicate members are a parse error (serde refuses them), so a
/// header cannot say one thing to this parser and another to a different one.
#[derive(Deserialize)]
struct WireHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl TokenIssuer {
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        keys: KeyRing,
    ) -> TokenIssuer {
        TokenIssuer {
            issuer: issuer.into(),
            audience: audience.into(),
            keys,
        }
    }

    /// Signs `claims` with the current key. Refuses claims from another issuer, with an empty `jti`, or living longer
    /// than the ring's maximum token lifetime (a retired key is kept only that long, so a longer-lived token would
    /// stop verifying early).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.jti.is_empty() {
            return Err(TokenError::MissingClaim("jti"));
        }
        let max = self.keys.max_token_lifetime();
        if claims.exp.saturating_sub(claims.iat) > max {
            return Err(TokenError::LifetimeTooLong(max));
        }
        if claims.sub.is_empty() {
            return Err(TokenError::MissingClaim("sub"));
        }
        // The same rule `check_claims` applies, so that no signed token is one verification refuses.
        if let Some(act) = &claims.act {
            let chain = act.chain();
            if chain.len() > MAX_ACTOR_CHAIN || chain.iter().any(|sub| sub.is_empty()) {
                return Err(TokenError::InvalidClaim("act"));
            }
        }
        let key = self.keys.current();
        // JWS compact serialization (RFC 7515 §7.1): base64url(header) . base64url(payload) . base64url(signature).
        let header = WireHeaderOut {
            alg: "EdDSA",
            typ: TOKEN_TYPE,
            kid: &key.kid,
        };
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let payload =
            serde_json::to_vec(&WireClaimsOut::from(claims)).map_err(|_| TokenError::Signing)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        Ok(token)
    }

    /// Checks a token completely at time `now` (seconds since the epoch) and returns its claims. The audience is
    /// this issuer's own, or a resource under it (RFC 8707: `{audience}/some/path`); where such a token may be used
    /// is the caller's business, as is revocation (look the `jti` up after this succeeds).
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        // The signed message is the token up to the last dot, exactly as received.
        let (message, signature_b64) = token.rsplit_once('.').ok_or(THREE_PARTS)?;
        let (header_b64, payload_b64) = message.split_once('.').ok_or(THREE_PARTS)?;
        if payload_b64.contains('.') {
            return Err(THREE_PARTS);
        }

        let header: WireHeader = decode_json(
            header_b64,
            "header is not base64url",
            "header is not a json object of the expected shape",
        )?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm(echo_safe(&header.alg)));
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|typ| typ.eq_ignore_ascii_case(TOKEN_TYPE))
        {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        if !is_well_formed_kid(&kid) {
            return Err(TokenError::InvalidKeyId);
        }
        let key = self
            .keys
            .verifying_key(&kid, now)
            .ok_or(TokenError::UnknownKeyId(kid))?;

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        if signature.len() != ed25519_dalek::SIGNATURE_LENGTH {
            return Err(TokenError::Malformed("signature has the wrong length"));
        }
        let signature = ed25519_dalek::Signature::from_slice(&signature)
            .map_err(|_| TokenError::Malformed("signature has the wrong length"))?;
        if !key.verify(message.as_bytes(), &signature) {
            return Err(TokenError::BadSignature);
        }

        let claims: WireClaimsIn = decode_json(
            payload_b64,
            "claims are not base64url",
            "claims are not a json object of the expected shape",
        )?;
        self.check_claims(claims, now)
    }

    fn check_claims(&self, wire: WireClaimsIn, now: i64) -> Result<AccessClaims, TokenError> {
        let exp = wire.exp.ok_or(TokenError::MissingClaim("exp"))?;
        let nbf = wire.nbf.ok_or(TokenError::MissingClaim("nbf"))?;
        let iat = wire.iat.ok_or(TokenError::MissingClaim("iat"))?;
        // RFC 7519 §4.1.4: the token must not be accepted on or after `exp`.
        if now >= exp {
            return Err(TokenError::Expired);
        }
        if now < nbf {
            return Err(TokenError::NotYetValid);
        }
        let iss = wire.iss.ok_or(TokenError::MissingClaim("iss"))?;
        if iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let aud = wire.aud.ok_or(TokenError::MissingClaim("aud"))?;
        if aud != self.audience && !is_resource_under(&aud, &self.audience) {
            return Err(TokenError::WrongAudience);
        }
        let sub = non_empty(wire.sub, "sub")?;
        let jti = non_empty(wire.jti, "jti")?;
        let scope = wire.scope.ok_or(TokenError::MissingClaim("scope"))?;
        let scope = ScopeSet::parse(&scope).map_err(|_| TokenError::InvalidClaim("scope"))?;
        if let Some(act) = &wire.act {
            let chain = act.chain();
            if chain.len() > MAX_ACTOR_CHAIN || chain.iter().any(|sub| sub.is_empty()) {
                return Err(TokenError::InvalidClaim("act"));
            }
        }
        if wire.derived_from.len() > MAX_DERIVATION_DEPTH
            || wire.derived_from.iter().any(String::is_empty)
        {
            return Err(TokenError::InvalidClaim("deputy_derived_from"));
        }
        Ok(AccessClaims {
            iss,
            aud,
            sub,
            exp,
            iat,
            nbf,
            jti,
            scope,
            client_id: wire.client_id,
            act: wire.act,
            derived_from: wire.derived_from,
        })
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    not_base64: &'static str,
    not_json: &'static str,
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(not_base64))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed(not_json))
}

fn non_empty(value: Option<String>, claim: &'static str) -> Result<String, TokenError> {
    match value {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(TokenError::MissingClaim(claim)),
    }
}

/// A header value fit to repeat in an error: short, and only characters that cannot forge log lines or markup.
fn echo_safe(value: &str) -> String {
    let safe = value.len() <= 16
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.".contains(&b));
    if safe {
        value.to_owned()
    } else {
        "(unprintable)".to_owned()
    }
}

/// Whether `resource` names a path under `audience` (`{audience}/…`, no query or fragment).
fn is_resource_under(resource: &str, audience: &str) -> bool {
    resource
        .strip_prefix(audience)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|path| !path.is_empty() && !path.contains(['?', '#']))
}
