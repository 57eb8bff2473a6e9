//! What other processes changed in a shared database. Each replica keeps copies in memory (the directory, the
//! authorization snapshot, the key ring, revocations, known personal access tokens, settings); on PostgreSQL, triggers
//! announce every committed write to those tables (`NOTIFY deputy_changes, '<kind>'`, delivered at commit), and
//! [`follow_changes`](crate::MetadataStore::follow_changes) turns the announcements into [`Change`]s.

use std::str::FromStr;

/// The channel the triggers of migration 15 notify on.
pub(crate) const CHANNEL: &str = "deputy_changes";

/// Which in-memory copy a committed write makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Identities, memberships, securables, grants, workspace objects or their ACLs.
    Authorization,
    PersonalAccessTokens,
    SigningKeys,
    Revocations,
    Settings,
    /// Announcements may have been missed (on start, or after the listening connection was lost): anything may have
    /// changed.
    Everything,
}

impl FromStr for Change {
    type Err = String;

    /// Parses a trigger's payload (the names in the PostgreSQL migration 15).
    fn from_str(payload: &str) -> Result<Change, String> {
        match payload {
            "authorization" => Ok(Change::Authorization),
            "personal_access_tokens" => Ok(Change::PersonalAccessTokens),
            "signing_keys" => Ok(Change::SigningKeys),
            "revocations" => Ok(Change::Revocations),
            "settings" => Ok(Change::Settings),
            other => Err(format!("an unknown change `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{open_temporary, user};
    use crate::{Dialect, MetadataStore};
    use std::time::Duration;

    /// Another process's write is announced to a follower of the same database; on SQLite there is no other
    /// process to hear from.
    #[tokio::test]
    async fn writes_by_another_process_are_announced_by_kind() {
        let (temporary, follower) = open_temporary().await;
        let Some(mut changes) = follower.follow_changes().await.unwrap() else {
            assert_eq!(follower.dialect(), Dialect::Sqlite);
            return;
        };
        assert_eq!(changes.recv().await, Some(Change::Everything));
        let writer = temporary.open().await.unwrap();
        let next = async |changes: &mut tokio::sync::mpsc::UnboundedReceiver<Change>| {
            tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .expect("an announcement within ten seconds")
        };
        writer.create_identity(user("alice"), 1).await.unwrap();
        assert_eq!(next(&mut changes).await, Some(Change::Authorization));
        writer
            .set_settings(&[("obo-enabled", "true"), ("consent-required", "true")])
            .await
            .unwrap();
        assert_eq!(next(&mut changes).await, Some(Change::Settings));
        writer.revoke_token_id("jti-1", i64::MAX).await.unwrap();
        assert_eq!(next(&mut changes).await, Some(Change::Revocations));
        // Purging expired revocations on reload announces nothing, or replicas would wake each other forever.
        writer.live_revoked_token_ids(0).await.unwrap();
        writer.delete_personal_access_token("none").await.unwrap();
        assert_eq!(next(&mut changes).await, Some(Change::PersonalAccessTokens));
    }
}
