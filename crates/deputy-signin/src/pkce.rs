//! PKCE (RFC 7636), S256 only: the plain method would let whoever sees the authorization request redeem the code.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `BASE64URL(SHA256(verifier))`, unpadded.
pub fn challenge_of(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is a well-formed verifier (43 to 128 unreserved characters) whose S256 challenge is
/// `challenge`.
pub fn verifies(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
    well_formed
        && bool::from(
            challenge_of(verifier)
                .as_bytes()
                .ct_eq(challenge.as_bytes()),
        )
}

/// Whether `challenge` has the shape of an S256 challenge (43 base64url characters).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// A fresh verifier for Deputy's own login at an upstream provider.
pub fn new_verifier() -> Result<String, deputy_tokens::RandomnessError> {
    let (secret, _) = deputy_tokens::generate_secret("pkce")?;
    Ok(secret.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(challenge_of(verifier), challenge);
        assert!(verifies(verifier, challenge));
        assert!(is_s256_challenge(challenge));
    }

    #[test]
    fn a_wrong_short_or_plain_verifier_is_refused() {
        let verifier = "dBjftJeZ4CVP-mB92K-uLMy4Ufa2E-fnCnaN8_1ydg";
        let challenge = challenge_of(verifier);
        assert!(!verifies(
            "dBjftJeZ4CVP-mB92K-uLMy4Ufa2E-fnCnaN8_1ydh",
            &challenge
        ));
        assert!(!verifies("short", &challenge_of("short")));
        // The plain method: the challenge is the verifier itself.
        assert!(!verifies(verifier, verifier));
        assert!(!is_s256_challenge("plain-challenge"));
    }

    #[test]
    fn new_verifiers_are_well_formed() {
        let verifier = new_verifier().unwrap();
        assert!(verifies(&verifier, &challenge_of(&verifier)));
    }
}
