//! End users' consents: which agent endpoints may act on their behalf, and with at most which scopes.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;

/// One user's consent for one endpoint. `scopes` are space-separated API scope names, as the endpoint declared them
/// when the user consented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: PrincipalId,
    pub endpoint_id: String,
    pub scopes: String,
    pub granted_ms: EpochMillis,
}

#[async_trait]
pub trait ConsentStore: Send + Sync + 'static {
    /// Records or replaces the user's consent for the endpoint.
    async fn put_consent(&self, consent: &Consent) -> StoreResult<()>;
    async fn consent(
        &self,
        user_id: PrincipalId,
        endpoint_id: &str,
    ) -> StoreResult<Option<Consent>>;
    async fn consents_of(&self, user_id: PrincipalId) -> StoreResult<Vec<Consent>>;
    /// Withdraws a consent; false when there was none.
    async fn delete_consent(&self, user_id: PrincipalId, endpoint_id: &str) -> StoreResult<bool>;
}

mod sql {
    use super::{Consent, ConsentStore};
    use crate::sql_store::SqlStore;
    use crate::{PrincipalId, StoreResult};
    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::any::AnyRow;

    fn consent_of(row: &AnyRow) -> Result<Consent, sqlx::Error> {
        Ok(Consent {
            user_id: PrincipalId(row.try_get("user_id")?),
            endpoint_id: row.try_get("endpoint_id")?,
            scopes: row.try_get("scopes")?,
            granted_ms: row.try_get("granted_ms")?,
        })
    }

    #[async_trait]
    impl ConsentStore for SqlStore {
        async fn put_consent(&self, consent: &Consent) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO consents (user_id, endpoint_id, scopes, granted_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, endpoint_id) DO UPDATE SET scopes = excluded.scopes, \
                 granted_ms = excluded.granted_ms",
            )
            .bind(consent.user_id.0)
            .bind(&consent.endpoint_id)
            .bind(&consent.scopes)
            .bind(consent.granted_ms)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn consent(
            &self,
            user_id: PrincipalId,
            endpoint_id: &str,
        ) -> StoreResult<Option<Consent>> {
            let row = sqlx::query(
                "SELECT user_id, endpoint_id, scopes, granted_ms FROM consents \
                 WHERE user_id = $1 AND endpoint_id = $2",
            )
            .bind(user_id.0)
            .bind(endpoint_id)
            .fetch_optional(self.pool())
            .await?;
            Ok(row.as_ref().map(consent_of).transpose()?)
        }

        async fn consents_of(&self, user_id: PrincipalId) -> StoreResult<Vec<Consent>> {
            let rows = sqlx::query(
                "SELECT user_id, endpoint_id, scopes, granted_ms FROM consents \
                 WHERE user_id = $1 ORDER BY granted_ms",
            )
            .bind(user_id.0)
            .fetch_all(self.pool())
            .await?;
            Ok(rows.iter().map(consent_of).collect::<Result<_, _>>()?)
        }

        async fn delete_consent(
            &self,
            user_id: PrincipalId,
            endpoint_id: &str,
        ) -> StoreResult<bool> {
            let deleted =
                sqlx::query("DELETE FROM consents WHERE user_id = $1 AND endpoint_id = $2")
                    .bind(user_id.0)
                    .bind(endpoint_id)
                    .execute(self.pool())
                    .await?;
            Ok(deleted.rows_affected() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetadataStore;
    use crate::test_support::{self, open_temporary};

    #[tokio::test]
    async fn consents_are_put_replaced_listed_and_withdrawn() {
        let (_dir, store) = open_temporary().await;
        let user = store
            .create_identity(test_support::user("alice@example.com"), 1)
            .await
            .unwrap()
            .id;
        let mut consent = Consent {
            user_id: user,
            endpoint_id: "e1".into(),
            scopes: "iam.scim".into(),
            granted_ms: 1,
        };
        store.put_consent(&consent).await.unwrap();
        consent.scopes = "iam.scim sql".into();
        consent.granted_ms = 2;
        store.put_consent(&consent).await.unwrap();
        assert_eq!(
            store.consent(user, "e1").await.unwrap(),
            Some(consent.clone())
        );
        assert_eq!(store.consents_of(user).await.unwrap(), vec![consent]);
        assert!(store.delete_consent(user, "e1").await.unwrap());
        assert!(!store.delete_consent(user, "e1").await.unwrap());
        assert_eq!(store.consent(user, "e1").await.unwrap(), None);
    }
}
