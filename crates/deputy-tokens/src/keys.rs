//! Ed25519 signing keys and their rotation.
//!
//! A [`KeyRing`] has exactly one current key, which signs, and any number of retired keys, which only verify. A key
//! retired at `t` may have signed a token just before `t` that lives `max_token_lifetime` seconds, so its public half
//! stays valid until `t + max_token_lifetime`; at that instant every token it signed has expired and the key can go.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::random::{RandomnessError, random_bytes};

/// Key ids are short and made only of base64url characters, so they are safe to echo in errors and log lines.
const MAX_KID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key ring needs exactly one current key, found {0}")]
    CurrentKeyCount(usize),
    #[error("key id `{0}` appears more than once")]
    DuplicateKid(String),
    #[error("key id is not well formed")]
    InvalidKid,
    #[error("the maximum token lifetime must be positive, got {0}")]
    InvalidLifetime(i64),
    #[error("the ed25519 key could not be encoded")]
    Encoding,
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
}

/// The stored form of one key: the 32-byte Ed25519 seed from which both halves are derived.
#[derive(Clone, PartialEq, Eq)]
pub struct PersistedKey {
    pub kid: String,
    pub seed: [u8; 32],
    pub created_at: i64,
    /// `None` for the current key.
    pub retired_at: Option<i64>,
}

impl fmt::Debug for PersistedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistedKey")
            .field("kid", &self.kid)
            .field("seed", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// One key in its ready-to-use forms.
pub(crate) struct RingKey {
    pub kid: String,
    /// The seed, for the stored form; `ed25519_dalek::SigningKey` wipes its memory on drop.
    seed: ed25519_dalek::SigningKey,
    /// The same key expanded once for AWS-LC, which signs: a signature is on every on-behalf-of invocation, and
    /// AWS-LC's is several times cheaper than ed25519-dalek's (`cargo bench -p deputy-tokens`). AWS-LC wipes the
    /// key when it is freed.
    signer: aws_lc_rs::signature::Ed25519KeyPair,
    /// The public half, decompressed once rather than on every verification.
    verifying: ed25519_dalek::VerifyingKey,
    /// The public key, base64url, as published in the JWKS.
    x: String,
    created_at: i64,
    retired_at: Option<i64>,
}

impl RingKey {
    fn from_seed(
        kid: String,
        seed: &[u8; 32],
        created_at: i64,
        retired_at: Option<i64>,
    ) -> Result<RingKey, KeyError> {
        if !is_well_formed_kid(&kid) {
            return Err(KeyError::InvalidKid);
        }
        let seed_key = ed25519_dalek::SigningKey::from_bytes(seed);
        let verifying = seed_key.verifying_key();
        // Both libraries derive the public key; AWS-LC refuses the pair unless they agree.
        let signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            seed,
            verifying.as_bytes(),
        )
        .map_err(|_| KeyError::Encoding)?;
        let x = URL_SAFE_NO_PAD.encode(verifying.as_bytes());
        Ok(RingKey {
            kid,
            verifying,
            seed: seed_key,
            signer,
            x,
            created_at,
            retired_at,
        })
    }

    fn generate(now: i64) -> Result<RingKey, KeyError> {
        // 12 random bytes make a 16-character id: collisions are out of reach and it reveals nothing about the key.
        let kid = URL_SAFE_NO_PAD.encode(random_bytes::<12>()?);
        RingKey::from_seed(kid, &random_bytes::<32>()?, now, None)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; ed25519_dalek::SIGNATURE_LENGTH] {
        let mut signature = [0; ed25519_dalek::SIGNATURE_LENGTH];
        signature.copy_from_slice(self.signer.sign(message).as_ref());
        signature
    }

    /// Strict verification: refuses non-canonical signatures and weak keys, so a signature has one valid encoding.
    pub(crate) fn verify(&self, message: &[u8], signature: &ed25519_dalek::Signature) -> bool {
        self.verifying.verify_strict(message, signature).is_ok()
    }

    /// Whether tokens signed by this key may still be accepted at `now`.
    fn verifies_at(&self, now: i64, max_token_lifetime: i64) -> bool {
        match self.retired_at {
            None => true,
            Some(retired_at) => now < retired_at.saturating_add(max_token_lifetime),
        }
    }
}

/// Whether a `kid` has the shape of one this crate makes: 1 to 64 base64url characters. Anything else (path tricks
/// such as `../../x`, URLs, huge strings) is refused before it is looked up or echoed.
pub(crate) fn is_well_formed_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The signing keys of one issuer. `Debug` shows key ids and dates, never key material.
pub struct KeyRing {
    /// INVARIANT: exactly one key has `retired_at == None`, and it is `keys[0]`.
    keys: Vec<RingKey>,
    max_token_lifetime: i64,
}

impl KeyRing {
    /// A ring with one fresh current key. `max_token_lifetime` (seconds) bounds every token the ring signs and so
    /// decides how long a retired key keeps verifying.
    pub fn generate(now: i64, max_token_lifetime: i64) -> Result<KeyRing, KeyError> {
        check_lifetime(max_token_lifetime)?;
        Ok(KeyRing {
            keys: vec![RingKey::generate(now)?],
            max_token_lifetime,
        })
    }

    /// Rebuilds a ring from its stored form. Refuses a set without exactly one current key, or with repeated or
    /// malformed key ids, since either would make signing or lookup ambiguous.
    pub fn from_persisted(
        persisted: &[PersistedKey],
        max_token_lifetime: i64,
    ) -> Result<KeyRing, KeyError> {
        check_lifetime(max_token_lifetime)?;
        let current = persisted.iter().filter(|k| k.retired_at.is_none()).count();
        if current != 1 {
            return Err(KeyError::CurrentKeyCount(current));
        }
        let mut keys: Vec<RingKey> = Vec::with_capacity(persisted.len());
        for key in persisted {
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
            keys.push(RingKey::from_seed(
                key.kid.clone(),
                &key.seed,
                key.created_at,
                key.retired_at,
            )?);
        }
        keys.sort_by_key(|k| (k.retired_at.is_some(), std::cmp::Reverse(k.retired_at)));
        Ok(KeyRing {
            keys,
            max_token_lifetime,
        })
    }

    /// The stored form of every key in the ring, the current one first.
    pub fn to_persisted(&self) -> Vec<PersistedKey> {
        self.keys
            .iter()
            .map(|k| PersistedKey {
                kid: k.kid.clone(),
                seed: k.seed.to_bytes(),
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect()
    }

    /// Makes a new current key and retires the old one at `now`. Returns the new key's id.
    pub fn rotate(&mut self, now: i64) -> Result<&str, KeyError> {
        let fresh = RingKey::generate(now)?;
        for key in &mut self.keys {
            key.retired_at.get_or_insert(now);
        }
        self.keys.insert(0, fresh);
        Ok(&self.keys[0].kid)
    }

    /// Drops retired keys that can no longer have unexpired tokens at `now`. Returns how many were dropped.
    pub fn prune(&mut self, now: i64) -> usize {
        let before = self.keys.len();
        let lifetime = self.max_token_lifetime;
        self.keys.retain(|k| k.verifies_at(now, lifetime));
        before - self.keys.len()
    }

    pub fn current_kid(&self) -> &str {
        &self.current().kid
    }

    pub fn max_token_lifetime(&self) -> i64 {
        self.max_token_lifetime
    }

    /// The JSON Web Key Set of the keys that still verify at `now`, the current one first.
    pub fn jwks(&self, now: i64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter(|k| k.verifies_at(now, self.max_token_lifetime))
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": k.x,
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    pub(crate) fn current(&self) -> &RingKey {
        // INVARIANT: the constructors and `rotate` keep the current key at index 0 and `prune` never drops it.
        &self.keys[0]
    }

    /// The key that verifies tokens with this `kid` at `now`, if any.
    pub(crate) fn verifying_key(&self, kid: &str, now: i64) -> Option<&RingKey> {
        self.keys
            .iter()
            .find(|k| k.kid == kid && k.verifies_at(now, self.max_token_lifetime))
    }
}

fn check_lifetime(max_token_lifetime: i64) -> Result<(), KeyError> {
    if max_token_lifetime <= 0 {
        return Err(KeyError::InvalidLifetime(max_token_lifetime));
    }
    Ok(())
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k.kid.as_str(), k.created_at, k.retired_at))
            .collect();
        f.debug_struct("KeyRing")
            .field("keys (kid, created_at, retired_at)", &keys)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn generated_keys_differ_and_have_well_formed_kids() {
        let a = KeyRing::generate(0, HOUR).unwrap();
        let b = KeyRing::generate(0, HOUR).unwrap();
        assert_ne!(a.current_kid(), b.current_kid());
        assert_ne!(a.to_persisted()[0].seed, b.to_persisted()[0].seed);
        assert!(is_well_formed_kid(a.current_kid()));
        assert_eq!(a.current_kid().len(), 16);
    }

    #[test]
    fn kid_shape() {
        for good in ["abc", "A-b_9", &"k".repeat(64)] {
            assert!(is_well_formed_kid(good), "{good}");
        }
        for bad in ["", "../../x", "a/b", "a b", "kid\0", "é", &"k".repeat(65)] {
            assert!(!is_well_formed_kid(bad), "{bad:?}");
        }
    }

    #[test]
    fn rotation_keeps_old_key_until_its_tokens_expire() {
        let mut ring = KeyRing::generate(0, HOUR).unwrap();
        let old = ring.current_kid().to_owned();
        let new = ring.rotate(100).unwrap().to_owned();
        assert_ne!(old, new);
        assert_eq!(ring.current_kid(), new);
        assert!(ring.verifying_key(&old, 100 + HOUR - 1).is_some());
        assert!(ring.verifying_key(&old, 100 + HOUR).is_none());
        assert_eq!(ring.prune(100 + HOUR - 1), 0);
        assert_eq!(
            ring.jwks(100 + HOUR - 1)["keys"].as_array().unwrap().len(),
            2
        );
        assert_eq!(ring.prune(100 + HOUR), 1);
        assert_eq!(ring.to_persisted().len(), 1);
        assert!(ring.verifying_key(&new, i64::MAX).is_some());
    }

    #[test]
    fn persisted_form_round_trips() {
        let mut ring = KeyRing::generate(10, HOUR).unwrap();
        ring.rotate(20).unwrap();
        ring.rotate(30).unwrap();
        let stored = ring.to_persisted();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[0].retired_at, None);
        let mut shuffled = stored.clone();
        shuffled.reverse();
        let back = KeyRing::from_persisted(&shuffled, HOUR).unwrap();
        assert_eq!(back.to_persisted(), stored);
        assert_eq!(back.current_kid(), ring.current_kid());
        assert_eq!(back.jwks(30), ring.jwks(30));
    }

    #[test]
    fn bad_persisted_sets_are_refused() {
        let mut ring = KeyRing::generate(0, HOUR).unwrap();
        ring.rotate(1).unwrap();
        let stored = ring.to_persisted();

        let mut two_current = stored.clone();
        two_current[1].retired_at = None;
        assert_eq!(
            KeyRing::from_persisted(&two_current, HOUR).unwrap_err(),
            KeyError::CurrentKeyCount(2)
        );
        assert_eq!(
            KeyRing::from_persisted(&stored[1..], HOUR).unwrap_err(),
            KeyError::CurrentKeyCount(0)
        );
        let mut duplicate = stored.clone();
        duplicate[1].kid = duplicate[0].kid.clone();
        assert!(matches!(
            KeyRing::from_persisted(&duplicate, HOUR),
            Err(KeyError::DuplicateKid(_))
        ));
        let mut tricky = stored.clone();
        tricky[1].kid = "../../etc/passwd".into();
        assert_eq!(
            KeyRing::from_persisted(&tricky, HOUR).unwrap_err(),
            KeyError::InvalidKid
        );
        assert_eq!(
            KeyRing::from_persisted(&stored, 0).unwrap_err(),
            KeyError::InvalidLifetime(0)
        );
    }

    #[test]
    fn jwks_publishes_the_public_key_only() {
        let ring = KeyRing::generate(0, HOUR).unwrap();
        let jwks = ring.jwks(0);
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], ring.current_kid());
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        let seed = ring.to_persisted()[0].seed;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        assert_eq!(x, public.as_bytes());
        assert!(!jwks.to_string().contains(&URL_SAFE_NO_PAD.encode(seed)));
        assert_eq!(key.as_object().unwrap().len(), 6, "no private member `d`");
    }

    #[test]
    fn debug_never_shows_seeds() {
        let ring = KeyRing::generate(0, HOUR).unwrap();
        let stored = ring.to_persisted();
        let seed = stored[0].seed;
        for text in [format!("{ring:?}"), format!("{stored:?}")] {
            assert!(text.contains(ring.current_kid()));
            assert!(!text.contains(&hex::encode(seed)));
            assert!(!text.contains(&format!("{seed:?}")));
        }
    }
}
