//! The live authorization state: the current [`Snapshot`] behind an atomic pointer.
//!
//! Readers load the current snapshot without locking and decide against it; a writer copies the snapshot (O(1):
//! the maps are persistent), applies its changes to the copy and publishes the copy with one atomic swap. A reader
//! therefore sees every change of a write or none of it, and a failed write publishes nothing. Writers are
//! serialised by a mutex so two concurrent writes cannot lose each other's changes; readers never touch it.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::decide::{AccessRequest, Decision, decide};
use crate::snapshot::Snapshot;

pub struct AuthzState {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

impl AuthzState {
    pub fn new(snapshot: Snapshot) -> AuthzState {
        AuthzState {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot. Hold it for as long as a set of decisions must agree with each other.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Decides against the current snapshot.
    pub fn decide(&self, request: &AccessRequest) -> Decision {
        decide(request, &self.current.load())
    }

    /// Applies `change` to a copy of the current snapshot and publishes the copy if `change` succeeds. On error
    /// nothing is published, so a multi-step change is all-or-nothing. Returns the published snapshot.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<(), E>,
    ) -> Result<Arc<Snapshot>, E> {
        // The mutex guards no data, only the read-modify-write sequence; a writer that panicked left the published
        // snapshot intact, so a poisoned lock is safe to take over.
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Snapshot::clone(&self.current.load());
        change(&mut next)?;
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        Ok(next)
    }
}

impl std::fmt::Debug for AuthzState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzState")
            .field("current", &self.current.load())
            .finish()
    }
}
