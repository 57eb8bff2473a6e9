//! The one place outbound HTTP clients are made: calls to identity providers (discovery, key sets), to external
//! model providers and through HTTP connections all speak TLS through rustls, verified against the operating
//! system's trust store plus, when `DEPUTY_CA_BUNDLE` names a PEM file, the certificates in it (a private CA, as
//! organisations run for internal identity providers).
//!
//! **Invariants**
//! - Certificates and host names are always verified; there is no switch to turn verification off.
//! - A CA bundle that is named but unreadable or empty is an error, not a silent fallback to the system roots alone:
//!   an operator who named one expects it to be used.

use std::path::Path;

/// The environment variable naming a PEM file of extra trusted CA certificates.
pub const CA_BUNDLE_ENV: &str = "DEPUTY_CA_BUNDLE";

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot read the CA bundle `{path}`: {cause}")]
    Bundle { path: String, cause: String },
    #[error("the CA bundle `{0}` holds no certificate")]
    EmptyBundle(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A client builder that trusts the system's roots and the bundle named by `DEPUTY_CA_BUNDLE`, if any. Callers add
/// their own timeouts, redirect and proxy policies.
pub fn client_builder() -> Result<reqwest::ClientBuilder, OutboundError> {
    match std::env::var_os(CA_BUNDLE_ENV).filter(|value| !value.is_empty()) {
        Some(path) => client_builder_trusting(Path::new(&path)),
        None => Ok(reqwest::Client::builder().tls_backend_rustls()),
    }
}

/// A client builder that trusts the system's roots and every certificate in the PEM file at `bundle`.
pub fn client_builder_trusting(bundle: &Path) -> Result<reqwest::ClientBuilder, OutboundError> {
    let unreadable = |cause: String| OutboundError::Bundle {
        path: bundle.display().to_string(),
        cause,
    };
    let pem = std::fs::read(bundle).map_err(|error| unreadable(error.to_string()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|error| unreadable(error.to_string()))?;
    if certificates.is_empty() {
        return Err(OutboundError::EmptyBundle(bundle.display().to_string()));
    }
    Ok(certificates.into_iter().fold(
        reqwest::Client::builder().tls_backend_rustls(),
        |builder, certificate| builder.add_root_certificate(certificate),
    ))
}
