//! Deputy's credentials: access tokens, the keys that sign them, long-lived secrets, and the rules of token exchange.
//!
//! - [`KeyRing`]: Ed25519 signing keys with rotation; old public keys stay valid for verification until every token
//!   they could have signed has expired. Exported as [`PersistedKey`]s for the server to store.
//! - [`TokenIssuer`]: signs [`AccessClaims`] as EdDSA JWTs and verifies them with a caller-supplied clock.
//! - [`exchange`]: RFC 8693 token exchange as a pure function; the issued scope is never wider than the subject's and
//!   the `act` chain only grows.
//! - [`generate_personal_access_token`], [`generate_client_secret`], [`SecretHash`]: opaque secrets, stored hashed.
//!
//! **Architecture Invariant:** this crate knows nothing about HTTP, databases or async runtimes. It never reads the
//! clock: every time is a parameter (seconds since the Unix epoch), so every rule is testable and deterministic.
//! Persistence and revocation belong to the server.

mod claims;
mod exchange;
mod keys;
mod random;
mod secrets;
mod token;

pub use claims::{AccessClaims, Actor, MAX_ACTOR_CHAIN, MAX_DERIVATION_DEPTH};
pub use exchange::{ExchangeError, ExchangeRequest, ScopeMode, exchange};
pub use keys::{KeyError, KeyRing, PersistedKey};
pub use random::RandomnessError;
pub use secrets::{
    CLIENT_SECRET_PREFIX, PERSONAL_ACCESS_TOKEN_PREFIX, Secret, SecretHash, SecretHashError,
    generate_client_secret, generate_personal_access_token, generate_secret, looks_like_jwt,
};
pub use token::{MAX_TOKEN_BYTES, TOKEN_TYPE, TokenError, TokenIssuer};
