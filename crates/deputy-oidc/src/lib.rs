//! Other OpenID Connect issuers. Today: **token federation** — `/oidc/v1/token` exchanges a JWT from a trusted
//! issuer (a CI system, a Kubernetes cluster, the organisation's identity provider) for a Deputy token, under the
//! federation policies an admin declared, in the Databricks account and service-principal policy shapes.
//!
//! **Invariants**
//! - A foreign JWT is accepted only when a policy names its issuer exactly, its signature verifies with a key from
//!   that issuer's published key set (asymmetric algorithms only; `none` and shared-secret algorithms never), it is
//!   within its lifetime, its audience is one the policy lists, and its subject claim (and the policy's fixed
//!   subject, if any) matches. Anything missing, unreadable or unreachable refuses the exchange.
//! - Key sets are fetched over verified TLS (plain HTTP only on loopback) from the URL the issuer's own discovery
//!   document names, without following redirects, and are never older than [`keys::MAX_KEY_SET_AGE`] when used.
//! - A token maps to an existing, active principal only: the policy's service principal, or the user whose user name
//!   is the subject claim. Federation never creates principals.
//! - Every exchange, accepted or refused, is audited with the issuer, the subject and the policy.

pub mod federation;
pub mod keys;
pub mod verify;

pub use federation::{Federation, FederationError, NewFederationPolicy};
