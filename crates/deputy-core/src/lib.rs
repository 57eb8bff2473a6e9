//! The vocabulary every Deputy crate shares and nothing more: API scopes and the kinds of principal.
//!
//! This crate knows nothing about HTTP, storage, or token formats. It is pure data and set algebra.

pub mod principal;
pub mod scopes;

pub use principal::PrincipalKind;
pub use scopes::{ApiScope, ScopeError, ScopeSet};
