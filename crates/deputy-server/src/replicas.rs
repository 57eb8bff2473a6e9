//! Several replicas may share one PostgreSQL database. Each keeps copies in memory (the directory, the authorization
//! snapshot, the key ring, revocations, known personal access tokens, the on-behalf-of switches, the running agent
//! workers); this follows the store's announcements of what other replicas committed and reloads the copies they made
//! stale.
//!
//! **Bound:** a write committed on one replica is in every other replica's copies once its announcement has arrived
//! and the reload finished: milliseconds for a revocation, a deleted token or a grant (the change log taken in).
//! `BENCHMARKS.md` has the measured figures.

use crate::ServeError;
use deputy_access::Access;
use deputy_serving::Serving;
use deputy_store::{Change, MetadataStore};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// After a reload failed (the database unreachable, say), how long to wait before reloading everything again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Starts following the store's announcements, when it makes any (PostgreSQL; not SQLite, which one process owns).
pub(crate) async fn follow_other_replicas(
    store: &dyn MetadataStore,
    access: Arc<Access>,
    serving: Arc<Serving>,
) -> Result<(), ServeError> {
    let Some(mut changes) = store.follow_changes().await? else {
        return Ok(());
    };
    tokio::spawn(async move {
        let mut retry = false;
        loop {
            let first = match retry {
                true => Change::Everything,
                false => match changes.recv().await {
                    Some(change) => change,
                    None => return,
                },
            };
            // A burst of writes announces the same kinds many times: each stale copy is reloaded once.
            let mut stale = HashSet::from([first]);
            while let Ok(next) = changes.try_recv() {
                stale.insert(next);
            }
            if stale.contains(&Change::Everything) {
                stale = HashSet::from([Change::Everything]);
            }
            retry = false;
            for change in stale {
                if let Err(error) = reload(change, &access, &serving).await {
                    tracing::warn!(?change, %error, "could not reload what another replica changed; retrying");
                    retry = true;
                }
            }
            if retry {
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    });
    Ok(())
}

async fn reload(change: Change, access: &Access, serving: &Serving) -> Result<(), String> {
    // Every stale copy is reloaded even when another fails; the first failure is reported.
    let mut reloaded = access.follow(change).await.map_err(|error| error.message);
    if matches!(change, Change::Authorization | Change::Everything) {
        let stopped = serving.stop_workers_of_deleted_endpoints().await;
        reloaded = reloaded.and(stopped.map_err(|error| error.message));
    }
    if matches!(change, Change::Settings | Change::Everything) {
        let settings = serving.agents().reload_settings(access.store()).await;
        reloaded = reloaded.and(settings.map_err(|error| error.to_string()));
    }
    reloaded
}
