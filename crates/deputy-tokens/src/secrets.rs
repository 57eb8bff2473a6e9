//! Opaque secrets: personal access tokens and OAuth client secrets.
//!
//! A secret is a fixed prefix (so leaked secrets are recognisable by scanners, as Databricks' own are) and 32 random
//! bytes in hex. Only its SHA-256 is stored. A slow password hash (argon2, bcrypt) buys nothing here: its purpose is
//! to make guessing low-entropy passwords from a stolen hash expensive, and 256 random bits cannot be guessed at any
//! speed. A plain hash also lets the server find a token by its hash with one indexed lookup.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::random::{RandomnessError, random_bytes};

/// The prefix of personal access tokens, as on Databricks.
pub const PERSONAL_ACCESS_TOKEN_PREFIX: &str = "dapi";
/// The prefix of OAuth client secrets, as on Databricks.
pub const CLIENT_SECRET_PREFIX: &str = "dose";

/// A freshly generated secret in plain text. It is shown to its owner once and never stored; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The prefix says what kind of secret it is, which helps debugging and reveals nothing.
        let kind = self.0.get(..4).unwrap_or_default();
        write!(f, "Secret({kind}…<redacted>)")
    }
}

/// The SHA-256 of a secret, as stored. Equality is constant-time, so comparing a presented secret's hash with the
/// stored one leaks nothing through timing.
#[derive(Clone, Copy, Eq)]
pub struct SecretHash([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret hash must be 64 hex digits")]
pub struct SecretHashError;

impl SecretHash {
    pub fn of(secret: &str) -> SecretHash {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `presented` is the secret this hash was made from.
    pub fn matches(&self, presented: &str) -> bool {
        *self == SecretHash::of(presented)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<SecretHash, SecretHashError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| SecretHashError)?;
        Ok(SecretHash(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for SecretHash {
    fn eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix of the hash is enough to tell entries apart in logs and is useless for a lookup.
        let short = hex::encode(self.0.get(..4).unwrap_or_default());
        write!(f, "SecretHash({short}…)")
    }
}

/// A new personal access token (`dapi` + 64 hex digits) and the hash to store.
pub fn generate_personal_access_token() -> Result<(Secret, SecretHash), RandomnessError> {
    generate_secret(PERSONAL_ACCESS_TOKEN_PREFIX)
}

/// A new OAuth client secret (`dose` + 64 hex digits) and the hash to store.
pub fn generate_client_secret() -> Result<(Secret, SecretHash), RandomnessError> {
    generate_secret(CLIENT_SECRET_PREFIX)
}

/// A new secret of another kind (authorization codes, refresh tokens, sign-in handles): `prefix` + 64 hex digits,
/// and the hash to store.
pub fn generate_secret(prefix: &str) -> Result<(Secret, SecretHash), RandomnessError> {
    let plaintext = format!("{prefix}{}", hex::encode(random_bytes::<32>()?));
    let hash = SecretHash::of(&plaintext);
    Ok((Secret(plaintext), hash))
}

/// Whether a bearer token has the shape of a JWS (three base64url parts, the first a JSON object), so that it goes
/// to JWT verification rather than to a personal-access-token lookup. Only a routing hint: both paths still check.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let is_base64url = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // `eyJ` is the base64url of `{"`, how every JOSE header begins. Verification does the real parsing.
    header.starts_with("eyJ")
        && is_base64url(header)
        && is_base64url(payload)
        && is_base64url(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_access_tokens_have_the_databricks_shape() {
        let (token, hash) = generate_personal_access_token().unwrap();
        let text = token.expose();
        assert!(text.starts_with("dapi"));
        assert_eq!(text.len(), 4 + 64);
        assert!(
            text[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(hash.matches(text));
        assert!(!looks_like_jwt(text));
        let (other, other_hash) = generate_personal_access_token().unwrap();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        assert!(!hash.matches(other.expose()));
    }

    #[test]
    fn client_secrets_have_their_own_prefix() {
        let (secret, hash) = generate_client_secret().unwrap();
        assert!(secret.expose().starts_with("dose"));
        assert_eq!(secret.expose().len(), 68);
        assert!(hash.matches(secret.expose()));
    }

    #[test]
    fn hash_is_sha256_and_round_trips_through_hex() {
        let hash = SecretHash::of("abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(SecretHash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert_eq!(
            SecretHash::from_hex(&hash.to_hex().to_uppercase()).unwrap(),
            hash
        );
        for bad in ["", "abc", &"0".repeat(63), &"g".repeat(64), &"0".repeat(66)] {
            assert_eq!(SecretHash::from_hex(bad), Err(SecretHashError), "{bad}");
        }
    }

    #[test]
    fn equality_looks_at_every_byte() {
        let hash = SecretHash::of("abc");
        for position in [0, 31, 63] {
            let mut text = hash.to_hex().into_bytes();
            text[position] = if text[position] == b'0' { b'1' } else { b'0' };
            let near = SecretHash::from_hex(std::str::from_utf8(&text).unwrap()).unwrap();
            assert_ne!(near, hash, "differs at hex digit {position}");
        }
    }

    #[test]
    fn one_flipped_character_does_not_match() {
        let (token, hash) = generate_personal_access_token().unwrap();
        let mut altered = token.into_string();
        let last = if altered.ends_with('0') { "1" } else { "0" };
        altered.replace_range(altered.len() - 1.., last);
        assert!(!hash.matches(&altered));
    }

    #[test]
    fn debug_redacts_plaintext() {
        let (token, hash) = generate_personal_access_token().unwrap();
        let shown = format!("{token:?} {hash:?}");
        assert!(!shown.contains(&token.expose()[4..]));
        assert!(!shown.contains(&hash.to_hex()));
        assert!(shown.contains("dapi"));
    }

    #[test]
    fn jwt_routing_hint() {
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln";
        assert!(looks_like_jwt(jwt));
        for not_jwt in [
            "",
            "dapi0123456789abcdef",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln.extra",
            "eyJhbGciOiJFZERTQSJ9..c2ln",
            "abc.def.ghi",
            "eyJ+.eyJ.sig",
        ] {
            assert!(!looks_like_jwt(not_jwt), "{not_jwt}");
        }
    }
}
