//! Local passwords (argon2id), for a workspace that has no identity provider yet: the bootstrap admin's, and those an
//! admin gives other users (the demo's people, a small team without a provider). Once a provider is configured,
//! the sign-in page offers only the provider; local passwords stay stored but unused.

use crate::{SignIn, SignInError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use deputy_access::Error;
use deputy_access::clock::now_millis;
use deputy_access::credentials::Caller;
use deputy_store::{Identity, IdentityKind};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MIN_PASSWORD_LENGTH: usize = 12;
/// At most this many wrong local passwords for one user name per [`FAILURE_WINDOW`]; then every attempt for that
/// name is refused until the oldest failure leaves the window, so a password cannot be guessed at argon2's speed, and
/// one person's lock does not lock everyone else out.
pub const MAX_FAILURES: usize = 10;
/// At most this many wrong local passwords for all names together per window: guessing one password each across
/// many names is bounded too.
pub const MAX_FAILURES_IN_ALL: usize = 1000;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Recent failed local sign-ins by user name (lowercased), in this process (each replica counts its own). Only
/// names with a failure in the window are kept, at most [`MAX_FAILURES_IN_ALL`] failures in all.
#[derive(Default)]
pub(crate) struct FailedLogins(Mutex<HashMap<String, VecDeque<Instant>>>);

impl FailedLogins {
    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // A panic while holding the lock leaves plain lists behind; they are still consistent.
        let mut failures = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.retain(|_, times| {
            times.retain(|failed| failed.elapsed() < FAILURE_WINDOW);
            !times.is_empty()
        });
        failures
    }

    fn check(&self, user_name: &str) -> Result<(), SignInError> {
        let failures = self.recent();
        let in_all: usize = failures.values().map(VecDeque::len).sum();
        let for_name = failures
            .get(&user_name.to_lowercase())
            .map_or(0, VecDeque::len);
        match for_name >= MAX_FAILURES || in_all >= MAX_FAILURES_IN_ALL {
            true => Err(SignInError::AccessDenied(
                "too many wrong passwords; try again in a few minutes".into(),
            )),
            false => Ok(()),
        }
    }

    fn record(&self, user_name: &str) {
        self.recent()
            .entry(user_name.to_lowercase())
            .or_default()
            .push_back(Instant::now());
    }
}

impl SignIn {
    /// Sets the local password of `user_name` (default: the caller). Only an admin acting as themselves (not an
    /// agent or app acting for them) sets passwords; the user must exist and be active.
    pub async fn set_local_password(
        &self,
        caller: &Caller,
        user_name: Option<&str>,
        password: &str,
    ) -> Result<(), Error> {
        if caller.identity.kind != IdentityKind::User || caller.is_delegated() {
            return Err(Error::permission_denied(
                "local passwords are set by an admin signed in as themselves",
            ));
        }
        caller.require_admin()?;
        let user = match user_name {
            None => caller.identity.clone(),
            Some(name) => self
                .access
                .store()
                .find_identity(IdentityKind::User, name)
                .await?
                .filter(|user| user.active)
                .ok_or_else(|| {
                    Error::not_found(format!("user `{name}` does not exist or is disabled"))
                })?,
        };
        if password.chars().count() < MIN_PASSWORD_LENGTH {
            return Err(Error::invalid_parameter(format!(
                "the password must have at least {MIN_PASSWORD_LENGTH} characters"
            )));
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(Error::internal)?;
        let salt = SaltString::encode_b64(&salt).map_err(Error::internal)?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(Error::internal)?
            .to_string();
        self.access
            .store()
            .set_local_password(user.id, &hash, now_millis())
            .await?;
        Ok(())
    }

    /// The user named `user_name`, if active and `password` is their local password. The same refusal for every mismatch,
    /// so the form tells nothing about which part was wrong; past [`MAX_FAILURES`] recent ones, no check at all.
    pub(crate) async fn check_local_password(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<Identity, SignInError> {
        self.failed_logins.check(user_name)?;
        let checked = self.verify_local_password(user_name, password).await;
        if let Err(SignInError::AccessDenied(_)) = &checked {
            self.failed_logins.record(user_name);
        }
        checked
    }

    async fn verify_local_password(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<Identity, SignInError> {
        let refused = || SignInError::AccessDenied("wrong user name or password".into());
        let store = self.access.store();
        let user = store
            .find_identity(IdentityKind::User, user_name.trim())
            .await?
            .filter(|user| user.active)
            .ok_or_else(refused)?;
        let stored = store.local_password(user.id).await?.ok_or_else(refused)?;
        // A stored hash that does not parse matches nothing.
        let matches = PasswordHash::new(&stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
        match matches {
            true => Ok(user),
            false => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passwords_lock_only_their_user_name() {
        let failures = FailedLogins::default();
        for _ in 0..MAX_FAILURES {
            assert!(failures.check("Alice@example.com").is_ok());
            failures.record("Alice@example.com");
        }
        assert!(
            failures.check("alice@example.com").is_err(),
            "names lock whatever their case"
        );
        assert!(failures.check("bob@example.com").is_ok());
    }

    #[test]
    fn guesses_spread_over_many_names_are_bounded_too() {
        let failures = FailedLogins::default();
        for guess in 0..MAX_FAILURES_IN_ALL {
            failures.record(&format!("user-{guess}@example.com"));
        }
        assert!(failures.check("someone-new@example.com").is_err());
    }
}
