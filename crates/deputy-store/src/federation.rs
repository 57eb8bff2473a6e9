//! Token federation policies: the other issuers whose JWTs may be exchanged for Deputy tokens, and whom they map to.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;

/// One federation policy. `audiences` is never empty (a token must name one of them); `subject`, when set, is the
/// only subject-claim value accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationPolicy {
    pub policy_id: String,
    pub description: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub subject_claim: String,
    pub subject: Option<String>,
    /// `Some`: a workload identity policy for this service principal; `None`: the subject claim names a user.
    pub service_principal_id: Option<PrincipalId>,
    pub created_ms: EpochMillis,
    pub created_by: PrincipalId,
}

#[async_trait]
pub trait FederationStore: Send + Sync + 'static {
    /// Fails if a policy with the same id exists.
    async fn insert_federation_policy(&self, policy: &FederationPolicy) -> StoreResult<()>;
    async fn federation_policy(&self, policy_id: &str) -> StoreResult<Option<FederationPolicy>>;
    /// All policies, oldest first.
    async fn federation_policies(&self) -> StoreResult<Vec<FederationPolicy>>;
    /// The policies that trust `issuer` (compared exactly).
    async fn federation_policies_for_issuer(
        &self,
        issuer: &str,
    ) -> StoreResult<Vec<FederationPolicy>>;
    /// False when there was none.
    async fn delete_federation_policy(&self, policy_id: &str) -> StoreResult<bool>;
}

mod sql {
    use super::{FederationPolicy, FederationStore};
    use crate::sql_store::{SqlStore, is_unique_violation};
    use crate::{PrincipalId, StoreError, StoreResult};
    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::any::AnyRow;

    macro_rules! policy_columns {
        () => {
            "policy_id, description, issuer, audiences, subject_claim, subject, service_principal_id, \
             created_ms, created_by"
        };
    }

    /// A stored row that does not parse is an error, never a policy with empty audiences.
    fn policy_of(row: &AnyRow) -> StoreResult<FederationPolicy> {
        let audiences: String = row.try_get("audiences")?;
        let audiences: Vec<String> = serde_json::from_str(&audiences).map_err(|error| {
            StoreError::Corrupt(format!("a federation policy's audiences: {error}"))
        })?;
        Ok(FederationPolicy {
            policy_id: row.try_get("policy_id")?,
            description: row.try_get("description")?,
            issuer: row.try_get("issuer")?,
            audiences,
            subject_claim: row.try_get("subject_claim")?,
            subject: row.try_get("subject")?,
            service_principal_id: row
                .try_get::<Option<i64>, _>("service_principal_id")?
                .map(PrincipalId),
            created_ms: row.try_get("created_ms")?,
            created_by: PrincipalId(row.try_get("created_by")?),
        })
    }

    #[async_trait]
    impl FederationStore for SqlStore {
        async fn insert_federation_policy(&self, policy: &FederationPolicy) -> StoreResult<()> {
            let audiences = serde_json::to_string(&policy.audiences)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
            sqlx::query(concat!(
                "INSERT INTO federation_policies (",
                policy_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&policy.policy_id)
            .bind(&policy.description)
            .bind(&policy.issuer)
            .bind(audiences)
            .bind(&policy.subject_claim)
            .bind(&policy.subject)
            .bind(policy.service_principal_id.map(|id| id.0))
            .bind(policy.created_ms)
            .bind(policy.created_by.0)
            .execute(self.pool())
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => {
                    StoreError::AlreadyExists(format!("federation policy `{}`", policy.policy_id))
                }
                false => error.into(),
            })?;
            Ok(())
        }

        async fn federation_policy(
            &self,
            policy_id: &str,
        ) -> StoreResult<Option<FederationPolicy>> {
            let row = sqlx::query(concat!(
                "SELECT ",
                policy_columns!(),
                " FROM federation_policies WHERE policy_id = $1"
            ))
            .bind(policy_id)
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(policy_of).transpose()
        }

        async fn federation_policies(&self) -> StoreResult<Vec<FederationPolicy>> {
            let rows = sqlx::query(concat!(
                "SELECT ",
                policy_columns!(),
                " FROM federation_policies ORDER BY created_ms, policy_id"
            ))
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(policy_of).collect()
        }

        async fn federation_policies_for_issuer(
            &self,
            issuer: &str,
        ) -> StoreResult<Vec<FederationPolicy>> {
            let rows = sqlx::query(concat!(
                "SELECT ",
                policy_columns!(),
                " FROM federation_policies WHERE issuer = $1 ORDER BY created_ms, policy_id"
            ))
            .bind(issuer)
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(policy_of).collect()
        }

        async fn delete_federation_policy(&self, policy_id: &str) -> StoreResult<bool> {
            let deleted = sqlx::query("DELETE FROM federation_policies WHERE policy_id = $1")
                .bind(policy_id)
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

    fn policy(
        id: &str,
        issuer: &str,
        service_principal_id: Option<PrincipalId>,
    ) -> FederationPolicy {
        FederationPolicy {
            policy_id: id.into(),
            description: String::new(),
            issuer: issuer.into(),
            audiences: vec!["https://deputy.example".into(), "ci".into()],
            subject_claim: "sub".into(),
            subject: None,
            service_principal_id,
            created_ms: 1,
            created_by: PrincipalId(1),
        }
    }

    #[tokio::test]
    async fn policies_are_stored_found_by_issuer_and_deleted() {
        let (_dir, store) = open_temporary().await;
        let sp = store
            .create_identity(test_support::user("robot"), 1)
            .await
            .unwrap()
            .id;
        let account = policy("a", "https://idp.example", None);
        let workload = policy("w", "https://ci.example", Some(sp));
        store.insert_federation_policy(&account).await.unwrap();
        store.insert_federation_policy(&workload).await.unwrap();
        assert!(matches!(
            store.insert_federation_policy(&account).await,
            Err(crate::StoreError::AlreadyExists(_))
        ));

        assert_eq!(
            store.federation_policy("w").await.unwrap(),
            Some(workload.clone())
        );
        assert_eq!(
            store
                .federation_policies_for_issuer("https://idp.example")
                .await
                .unwrap(),
            vec![account.clone()]
        );
        assert!(
            store
                .federation_policies_for_issuer("https://idp.example/")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.federation_policies().await.unwrap().len(), 2);

        // Deleting the service principal deletes its policies.
        store.delete_identity(sp).await.unwrap();
        assert_eq!(store.federation_policy("w").await.unwrap(), None);
        assert!(store.delete_federation_policy("a").await.unwrap());
        assert!(!store.delete_federation_policy("a").await.unwrap());
    }

    #[tokio::test]
    async fn unparsable_audiences_are_an_error_not_an_empty_list() {
        let (_dir, store) = open_temporary().await;
        store
            .insert_federation_policy(&policy("a", "https://idp.example", None))
            .await
            .unwrap();
        sqlx::query("UPDATE federation_policies SET audiences = 'not json'")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(
            store
                .federation_policies_for_issuer("https://idp.example")
                .await
                .is_err()
        );
    }
}
