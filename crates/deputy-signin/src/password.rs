//! The bootstrap admin's local password (argon2id), for a workspace that has no identity provider yet. No other
//! user has a password: people sign in through the organisation's provider.

use crate::{SignIn, SignInError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use deputy_access::Error;
use deputy_access::bootstrap::ADMIN_USER;
use deputy_access::clock::now_millis;
use deputy_access::credentials::Caller;
use deputy_store::{Identity, IdentityKind};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MIN_PASSWORD_LENGTH: usize = 12;
/// At most this many wrong local passwords per [`FAILURE_WINDOW`]; then every attempt is refused until the oldest
/// failure leaves the window, so the password cannot be guessed at argon2's speed indefinitely.
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Recent failed local sign-ins, in this process (each replica counts its own).
#[derive(Default)]
pub(crate) struct FailedLogins(Mutex<VecDeque<Instant>>);

impl FailedLogins {
    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        // A panic while holding the lock leaves a plain list behind; it is still consistent.
        let mut failures = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while failures
            .front()
            .is_some_and(|failed| failed.elapsed() >= FAILURE_WINDOW)
        {
            failures.pop_front();
        }
        failures
    }

    fn check(&self) -> Result<(), SignInError> {
        match self.recent().len() >= MAX_FAILURES {
            true => Err(SignInError::AccessDenied(
                "too many wrong passwords; try again in a few minutes".into(),
            )),
            false => Ok(()),
        }
    }

    fn record(&self) {
        self.recent().push_back(Instant::now());
    }
}

impl SignIn {
    /// Sets the bootstrap admin's password; only that admin, signed in as themselves, may.
    pub async fn set_local_password(&self, caller: &Caller, password: &str) -> Result<(), Error> {
        if caller.identity.kind != IdentityKind::User
            || caller.identity.name != ADMIN_USER
            || caller.is_delegated()
        {
            return Err(Error::permission_denied(format!(
                "only the bootstrap admin `{ADMIN_USER}`, as themselves, has a local password"
            )));
        }
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
            .set_local_password(caller.identity.id, &hash, now_millis())
            .await?;
        Ok(())
    }

    /// The bootstrap admin, if `user_name` is theirs and `password` matches. The same refusal for every mismatch,
    /// so the form tells nothing about which part was wrong; past [`MAX_FAILURES`] recent ones, no check at all.
    pub(crate) async fn check_local_password(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<Identity, SignInError> {
        self.failed_logins.check()?;
        let checked = self.verify_local_password(user_name, password).await;
        if let Err(SignInError::AccessDenied(_)) = &checked {
            self.failed_logins.record();
        }
        checked
    }

    async fn verify_local_password(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<Identity, SignInError> {
        let refused = || SignInError::AccessDenied("wrong user name or password".into());
        if !user_name.eq_ignore_ascii_case(ADMIN_USER) {
            return Err(refused());
        }
        let store = self.access.store();
        let admin = store
            .find_identity(IdentityKind::User, ADMIN_USER)
            .await?
            .filter(|admin| admin.active)
            .ok_or_else(refused)?;
        let stored = store.local_password(admin.id).await?.ok_or_else(refused)?;
        // A stored hash that does not parse matches nothing.
        let matches = PasswordHash::new(&stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
        match matches {
            true => Ok(admin),
            false => Err(refused()),
        }
    }
}
