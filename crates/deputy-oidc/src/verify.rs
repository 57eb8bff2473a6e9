//! Verifying another issuer's JWT: a federated subject token, or an identity provider's ID token.

use crate::keys::IssuerKeys;
use deputy_store::FederationPolicy;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The algorithms a foreign JWT may be signed with: asymmetric only, so a public key can never act as a shared secret.
const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

/// What a foreign JWT must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    /// The token must name at least one of these in `aud`.
    pub audiences: &'a [String],
    /// The claim that names the token's subject; it must be a string.
    pub subject_claim: &'a str,
    /// When set, the only subject accepted.
    pub subject: Option<&'a str>,
}

impl<'a> Expected<'a> {
    pub fn of_policy(policy: &'a FederationPolicy) -> Expected<'a> {
        Expected {
            issuer: &policy.issuer,
            audiences: &policy.audiences,
            subject_claim: &policy.subject_claim,
            subject: policy.subject.as_deref(),
        }
    }
}

/// The token's claims if it satisfies `expected`: signed with an accepted algorithm by a key the issuer publishes,
/// issued by that issuer, for one of the audiences, within its lifetime, and carrying the subject claim (with the
/// fixed subject, if there is one). Otherwise why not.
pub async fn verify_foreign_jwt(
    keys: &IssuerKeys,
    token: &str,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|error| format!("malformed JWT: {error}"))?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not accepted", header.alg));
    }
    let jwk = keys
        .key(expected.issuer, header.kid.as_deref(), header.alg)
        .await
        .map_err(|error| error.to_string())?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|error| format!("unusable key: {error}"))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(expected.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|error| format!("token refused: {error}"))?
        .claims;
    let subject = claims
        .get(expected.subject_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the token has no string claim `{}`", expected.subject_claim))?;
    if let Some(fixed) = expected.subject
        && subject != fixed
    {
        return Err(format!("subject `{subject}` is not the expected subject"));
    }
    Ok(claims)
}
