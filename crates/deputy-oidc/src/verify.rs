//! Verifying another issuer's JWT against a federation policy.

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

/// The token's claims if it satisfies `policy`: signed with an accepted algorithm by a key the policy's issuer
/// publishes, issued by that issuer, for one of the policy's audiences, within its lifetime, and carrying the
/// policy's subject claim (with the policy's fixed subject, if it has one). Otherwise why not.
pub async fn verify_foreign_jwt(
    keys: &IssuerKeys,
    token: &str,
    policy: &FederationPolicy,
) -> Result<Map<String, Value>, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|error| format!("malformed JWT: {error}"))?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not accepted", header.alg));
    }
    let jwk = keys
        .key(&policy.issuer, header.kid.as_deref(), header.alg)
        .await
        .map_err(|error| error.to_string())?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|error| format!("unusable key: {error}"))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&policy.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|error| format!("token refused: {error}"))?
        .claims;
    let subject = claims
        .get(&policy.subject_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the token has no string claim `{}`", policy.subject_claim))?;
    if let Some(expected) = &policy.subject
        && subject != expected
    {
        return Err(format!("subject `{subject}` is not the policy's subject"));
    }
    Ok(claims)
}
