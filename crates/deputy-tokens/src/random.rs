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

/// A fresh token id in hex: the time of issue in milliseconds (48 bits), then 80 random bits, unique without
/// coordination between replicas. Ids issued one after another sort together, so the audit's index on them grows at
/// its end: each commit touches one leaf page of that index instead of one per event.
pub(crate) fn new_jti() -> Result<String, RandomnessError> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    id[6..].copy_from_slice(&random_bytes::<10>()?);
    Ok(hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::new_jti;

    #[test]
    fn token_ids_are_unique_and_sort_in_the_order_they_were_issued() {
        let earlier = new_jti().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later: Vec<String> = (0..1000).map(|_| new_jti().unwrap()).collect();
        assert!(
            later
                .iter()
                .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        );
        assert!(
            later.iter().all(|id| *id > earlier),
            "an id issued later sorts before one issued earlier"
        );
        let distinct: std::collections::HashSet<&String> = later.iter().collect();
        assert_eq!(distinct.len(), later.len());
    }
}
