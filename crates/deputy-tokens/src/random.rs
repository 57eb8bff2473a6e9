//! Randomness straight from the operating system.
//!
//! Keys, secrets and token ids come from `getrandom` rather than a user-space generator, so no seeding or forking
//! subtleties apply. The call can only fail when the OS refuses (no entropy source at all), which is reported rather
//! than panicking.

/// The operating system's random number generator was unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomnessError;

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomnessError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| RandomnessError)?;
    Ok(bytes)
}

/// A fresh token id: 128 random bits in hex, unique without coordination between replicas.
pub(crate) fn new_jti() -> Result<String, RandomnessError> {
    Ok(hex::encode(random_bytes::<16>()?))
}
