//! How long the audit log keeps its events. An admin sets a retention period in days (the workspace setting
//! [`RETENTION_SETTING`]; without one, events are kept forever), and every server purges the events older than that
//! when it starts, every [`PURGE_INTERVAL`], and soon after the setting changes on it ([`purge_periodically`]).
//!
//! Replicas sharing one database each purge on their own: a purge deletes by time, so running it twice, or in two
//! replicas at once, deletes the same events once and never a newer one. The setting is read from the store at every
//! purge, and a replica hearing that another changed a setting purges again (`Access::follow`).

use crate::{Access, Caller, Error, clock};
use deputy_store::EpochMillis;
use std::sync::Arc;
use std::time::Duration;

/// The workspace setting: a number of days, or [`FOREVER`] (the same as no value).
pub const RETENTION_SETTING: &str = "audit-retention-days";

/// The stored value once an admin chose to keep events forever again.
const FOREVER: &str = "forever";

/// The longest retention period that can be set: a hundred years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// How often a server purges expired events, besides when it starts and when the setting changes on it.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// What a change of retention is audited as.
pub const RETENTION_AUDIT_API: &str = "audit.retention";

const DAY_MS: EpochMillis = 24 * 60 * 60 * 1000;

/// How long audit events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditRetention {
    Forever,
    Days(u32),
}

impl AuditRetention {
    /// The retention an admin asked for: `None` keeps events forever, else a number of days from 1 to
    /// [`MAX_RETENTION_DAYS`].
    pub fn from_days(days: Option<i64>) -> Result<AuditRetention, Error> {
        let Some(days) = days else {
            return Ok(AuditRetention::Forever);
        };
        match u32::try_from(days) {
            Ok(days) if (1..=MAX_RETENTION_DAYS).contains(&days) => Ok(AuditRetention::Days(days)),
            _ => Err(Error::invalid_parameter(format!(
                "`retention_days` must be a whole number of days from 1 to {MAX_RETENTION_DAYS} (or null to keep \
                 events forever), not `{days}`"
            ))),
        }
    }

    /// The time before which events have expired at `now`; `None` when they never expire.
    pub fn cutoff(self, now: EpochMillis) -> Option<EpochMillis> {
        match self {
            AuditRetention::Forever => None,
            AuditRetention::Days(days) => Some(now.saturating_sub(i64::from(days) * DAY_MS)),
        }
    }

    fn stored(self) -> String {
        match self {
            AuditRetention::Forever => FOREVER.to_owned(),
            AuditRetention::Days(days) => days.to_string(),
        }
    }

    /// Reads the stored setting. A value this code did not write is an error, never a default: a purge must not
    /// guess how much of the log to delete.
    fn from_stored(stored: Option<&str>) -> Result<AuditRetention, Error> {
        match stored {
            None | Some(FOREVER) => Ok(AuditRetention::Forever),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|days| (1..=MAX_RETENTION_DAYS).contains(days))
                .map(AuditRetention::Days)
                .ok_or_else(|| {
                    Error::internal(format!(
                        "the stored setting `{RETENTION_SETTING}` does not parse: `{text}`"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for AuditRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditRetention::Forever => f.write_str("forever"),
            AuditRetention::Days(1) => f.write_str("1 day"),
            AuditRetention::Days(days) => write!(f, "{days} days"),
        }
    }
}

impl Access {
    /// The audit retention (admins only).
    pub async fn audit_retention(&self, caller: &Caller) -> Result<AuditRetention, Error> {
        caller.require_admin()?;
        self.stored_audit_retention().await
    }

    /// Sets the audit retention to `days` (`None`: forever; admins only) and wakes this server's purge. The change
    /// is audited before it is made, and so is a refusal to someone who is not an admin: shortening the retention
    /// deletes history, so who did it must stay on record.
    pub async fn set_audit_retention(
        &self,
        caller: &Caller,
        days: Option<i64>,
    ) -> Result<AuditRetention, Error> {
        let entry = self
            .audit_entry(caller, RETENTION_AUDIT_API)
            .securable(RETENTION_SETTING);
        if let Err(refused) = caller.require_admin() {
            self.record(&[entry.denied(refused.message.clone())])
                .await?;
            return Err(refused);
        }
        let retention = AuditRetention::from_days(days)?;
        self.record(&[entry.allowed(format!("audit events are kept {}", phrase(retention)))])
            .await?;
        self.store()
            .set_settings(&[(RETENTION_SETTING, &retention.stored())])
            .await?;
        self.audit_retention_changed.notify_one();
        Ok(retention)
    }

    /// Deletes the audit events that have expired at `now` under the stored retention; returns how many.
    pub async fn purge_expired_audit_events(&self, now: EpochMillis) -> Result<u64, Error> {
        let Some(cutoff) = self.stored_audit_retention().await?.cutoff(now) else {
            return Ok(0);
        };
        Ok(self.store().delete_audit_events_before(cutoff).await?)
    }

    async fn stored_audit_retention(&self) -> Result<AuditRetention, Error> {
        let stored = self.store().get_setting(RETENTION_SETTING).await?;
        AuditRetention::from_stored(stored.as_deref())
    }
}

fn phrase(retention: AuditRetention) -> String {
    match retention {
        AuditRetention::Forever => "forever".to_owned(),
        days => format!("for {days}"),
    }
}

/// Purges expired audit events now, then every [`PURGE_INTERVAL`] and whenever the retention changes on this server,
/// until the task running it is dropped. A purge that fails is logged and tried again at the next turn.
pub async fn purge_periodically(access: Arc<Access>) {
    loop {
        match access.purge_expired_audit_events(clock::now_millis()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged expired audit events"),
            Err(error) => tracing::warn!(%error, "could not purge expired audit events"),
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
            () = access.audit_retention_changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_days_are_checked_and_stored_as_read() {
        assert_eq!(
            AuditRetention::from_days(None).unwrap(),
            AuditRetention::Forever
        );
        for days in [1, 30, i64::from(MAX_RETENTION_DAYS)] {
            let retention = AuditRetention::from_days(Some(days)).unwrap();
            assert_eq!(retention, AuditRetention::Days(days as u32));
            assert_eq!(
                AuditRetention::from_stored(Some(&retention.stored())).unwrap(),
                retention
            );
        }
        for days in [0, -1, i64::from(MAX_RETENTION_DAYS) + 1, i64::MAX] {
            let error = AuditRetention::from_days(Some(days)).unwrap_err();
            assert_eq!(
                error.code,
                crate::ErrorCode::InvalidParameterValue,
                "{days}"
            );
        }
        let forever = AuditRetention::Forever.stored();
        assert_eq!(
            AuditRetention::from_stored(Some(&forever)).unwrap(),
            AuditRetention::Forever
        );
        assert_eq!(
            AuditRetention::from_stored(None).unwrap(),
            AuditRetention::Forever
        );
        for corrupt in ["", "0", "-3", "ten", "36501"] {
            assert!(
                AuditRetention::from_stored(Some(corrupt)).is_err(),
                "{corrupt}"
            );
        }
    }

    #[test]
    fn events_expire_a_whole_number_of_days_back() {
        let now = 100 * DAY_MS + 5;
        assert_eq!(AuditRetention::Forever.cutoff(now), None);
        assert_eq!(AuditRetention::Days(1).cutoff(now), Some(99 * DAY_MS + 5));
        assert_eq!(AuditRetention::Days(30).cutoff(now), Some(70 * DAY_MS + 5));
    }
}
