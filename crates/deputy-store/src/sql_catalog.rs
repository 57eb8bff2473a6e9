//! [`CatalogStore`] on SQL (SQLite or PostgreSQL).

use crate::catalog::{
    AclEntry, AuthorizationDelta, AuthorizationRows, CatalogStore, GrantChange, GrantRecord,
    NewSecurable, SecurableChanges, SecurableDelta, SecurableId, SecurablePage, SecurableRecord,
    WorkspaceObjectDelta, WorkspaceObjectRecord,
};
use crate::sql_store::{
    ALL_IDENTITIES, ALL_MEMBERSHIPS, Dialect, SqlStore, Statement, identity_from_row,
    is_unique_violation, membership_from_row,
};
use crate::{EpochMillis, PrincipalId, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

fn securable_from_row(row: &AnyRow) -> StoreResult<SecurableRecord> {
    Ok(SecurableRecord {
        id: SecurableId(row.try_get("id")?),
        kind: row.try_get("kind")?,
        namespace: row.try_get("namespace")?,
        full_name: row.try_get("full_name")?,
        parent_id: row.try_get::<Option<i64>, _>("parent_id")?.map(SecurableId),
        owner_id: PrincipalId(row.try_get("owner_id")?),
        comment: row.try_get("comment")?,
        properties: row.try_get("properties")?,
        spec: row.try_get("spec")?,
        created_at: row.try_get("created_at")?,
        created_by: PrincipalId(row.try_get("created_by")?),
        updated_at: row.try_get("updated_at")?,
        updated_by: PrincipalId(row.try_get("updated_by")?),
    })
}

fn grant_from_row(row: &AnyRow) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        securable_id: SecurableId(row.try_get("securable_id")?),
        principal_id: PrincipalId(row.try_get("principal_id")?),
        privilege: row.try_get("privilege")?,
    })
}

fn workspace_object_from_row(row: &AnyRow) -> StoreResult<WorkspaceObjectRecord> {
    Ok(WorkspaceObjectRecord {
        object_type: row.try_get("object_type")?,
        object_id: row.try_get("object_id")?,
        name: row.try_get("name")?,
        owner_id: PrincipalId(row.try_get("owner_id")?),
        spec: row.try_get("spec")?,
        created_at: row.try_get("created_at")?,
    })
}

fn acl_from_row(row: &AnyRow) -> StoreResult<AclEntry> {
    Ok(AclEntry {
        object_type: row.try_get("object_type")?,
        object_id: row.try_get("object_id")?,
        principal_id: PrincipalId(row.try_get("principal_id")?),
        level: row.try_get("level")?,
    })
}

#[async_trait]
impl CatalogStore for SqlStore {
    async fn create_securable(
        &self,
        securable: NewSecurable,
        now: EpochMillis,
    ) -> StoreResult<SecurableRecord> {
        let row = sqlx::query(
            "INSERT INTO securables (kind, namespace, full_name, parent_id, owner_id, comment, properties, spec, \
             created_at, created_by, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *",
        )
        .bind(&securable.kind)
        .bind(&securable.namespace)
        .bind(&securable.full_name)
        .bind(securable.parent_id.map(|id| id.0))
        .bind(securable.owner_id.0)
        .bind(&securable.comment)
        .bind(&securable.properties)
        .bind(&securable.spec)
        .bind(now)
        .bind(securable.created_by.0)
        .bind(now)
        .bind(securable.created_by.0)
        .fetch_one(self.pool())
        .await
        .map_err(|error| match is_unique_violation(&error) {
            true => StoreError::AlreadyExists(format!("{} `{}`", securable.kind, securable.full_name)),
            false => error.into(),
        })?;
        securable_from_row(&row)
    }

    async fn find_securable(
        &self,
        namespace: &str,
        full_name: &str,
    ) -> StoreResult<Option<SecurableRecord>> {
        let row = sqlx::query("SELECT * FROM securables WHERE namespace = $1 AND full_name = $2")
            .bind(namespace)
            .bind(full_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(securable_from_row).transpose()
    }

    async fn get_securable(&self, id: SecurableId) -> StoreResult<Option<SecurableRecord>> {
        let row = sqlx::query("SELECT * FROM securables WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(securable_from_row).transpose()
    }

    async fn list_securables(&self, page: &SecurablePage) -> StoreResult<Vec<SecurableRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM securables WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR parent_id = $2) \
             AND ($3 IS NULL OR full_name > $3) ORDER BY full_name LIMIT $4",
        )
        .bind(&page.kind)
        .bind(page.parent_id.map(|id| id.0))
        .bind(&page.after)
        .bind(page.limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(securable_from_row).collect()
    }

    async fn update_securable(
        &self,
        id: SecurableId,
        changes: SecurableChanges,
        updated_by: PrincipalId,
        now: EpochMillis,
    ) -> StoreResult<SecurableRecord> {
        let mut transaction = self.pool().begin().await?;
        let current = sqlx::query("SELECT * FROM securables WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *transaction)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("securable {}", id.0)))?;
        let current = securable_from_row(&current)?;
        if let Some(new_name) = &changes.full_name {
            // Descendants share the prefix `old.`; rewrite it. Names compare ignoring case.
            sqlx::query(
                "UPDATE securables SET full_name = $1 || substr(full_name, length($2) + 1) \
                 WHERE lower(substr(full_name, 1, length($2) + 1)) = lower($2 || '.')",
            )
            .bind(new_name)
            .bind(&current.full_name)
            .execute(&mut *transaction)
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::AlreadyExists(format!("`{new_name}`")),
                false => error.into(),
            })?;
        }
        let comment = match changes.comment {
            Some(comment) => comment,
            None => current.comment,
        };
        let row = sqlx::query(
            "UPDATE securables SET full_name = $1, owner_id = $2, comment = $3, properties = $4, spec = $5, \
             updated_at = $6, updated_by = $7 WHERE id = $8 RETURNING *",
        )
        .bind(changes.full_name.as_ref().unwrap_or(&current.full_name))
        .bind(changes.owner_id.unwrap_or(current.owner_id).0)
        .bind(comment)
        .bind(changes.properties.as_ref().unwrap_or(&current.properties))
        .bind(changes.spec.as_ref().unwrap_or(&current.spec))
        .bind(now)
        .bind(updated_by.0)
        .bind(id.0)
        .fetch_one(&mut *transaction)
        .await
        .map_err(|error| match is_unique_violation(&error) {
            true => StoreError::AlreadyExists(format!("`{}`", changes.full_name.clone().unwrap_or_default())),
            false => error.into(),
        })?;
        transaction.commit().await?;
        securable_from_row(&row)
    }

    async fn delete_securable(&self, id: SecurableId) -> StoreResult<()> {
        // Children go through ON DELETE CASCADE on parent_id, and their grants through the grants foreign key.
        let result = sqlx::query("DELETE FROM securables WHERE id = $1")
            .bind(id.0)
            .execute(self.pool())
            .await?;
        match result.rows_affected() {
            0 => Err(StoreError::NotFound(format!("securable {}", id.0))),
            _ => Ok(()),
        }
    }

    async fn all_securables(&self) -> StoreResult<Vec<SecurableRecord>> {
        let rows = sqlx::query(ALL_SECURABLES).fetch_all(self.pool()).await?;
        rows.iter().map(securable_from_row).collect()
    }

    async fn change_grants(
        &self,
        securable: SecurableId,
        changes: &[GrantChange],
    ) -> StoreResult<()> {
        let mut transaction = self.pool().begin().await?;
        for change in changes {
            for privilege in &change.add {
                sqlx::query("INSERT INTO grants (securable_id, principal_id, privilege) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(securable.0)
                    .bind(change.principal_id.0)
                    .bind(privilege)
                    .execute(&mut *transaction)
                    .await?;
            }
            for privilege in &change.remove {
                sqlx::query("DELETE FROM grants WHERE securable_id = $1 AND principal_id = $2 AND privilege = $3")
                    .bind(securable.0)
                    .bind(change.principal_id.0)
                    .bind(privilege)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn grants_on(&self, securable: SecurableId) -> StoreResult<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE securable_id = $1 ORDER BY principal_id, privilege",
        )
        .bind(securable.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn create_workspace_object(&self, object: WorkspaceObjectRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workspace_objects (object_type, object_id, name, owner_id, spec, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&object.object_type)
        .bind(&object.object_id)
        .bind(&object.name)
        .bind(object.owner_id.0)
        .bind(&object.spec)
        .bind(object.created_at)
        .execute(self.pool())
        .await
        .map_err(|error| match is_unique_violation(&error) {
            true => StoreError::AlreadyExists(format!("{} `{}`", object.object_type, object.name)),
            false => error.into(),
        })?;
        Ok(())
    }

    async fn get_workspace_object(
        &self,
        object_type: &str,
        object_id: &str,
    ) -> StoreResult<Option<WorkspaceObjectRecord>> {
        let row = sqlx::query(
            "SELECT * FROM workspace_objects WHERE object_type = $1 AND object_id = $2",
        )
        .bind(object_type)
        .bind(object_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(workspace_object_from_row).transpose()
    }

    async fn list_workspace_objects(
        &self,
        object_type: &str,
    ) -> StoreResult<Vec<WorkspaceObjectRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workspace_objects WHERE object_type = $1 ORDER BY created_at, object_id",
        )
        .bind(object_type)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(workspace_object_from_row).collect()
    }

    async fn update_workspace_object_spec(
        &self,
        object_type: &str,
        object_id: &str,
        spec: &str,
    ) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE workspace_objects SET spec = $1 WHERE object_type = $2 AND object_id = $3",
        )
        .bind(spec)
        .bind(object_type)
        .bind(object_id)
        .execute(self.pool())
        .await?;
        match result.rows_affected() {
            0 => Err(StoreError::NotFound(format!("{object_type} `{object_id}`"))),
            _ => Ok(()),
        }
    }

    async fn delete_workspace_object(&self, object_type: &str, object_id: &str) -> StoreResult<()> {
        let result =
            sqlx::query("DELETE FROM workspace_objects WHERE object_type = $1 AND object_id = $2")
                .bind(object_type)
                .bind(object_id)
                .execute(self.pool())
                .await?;
        match result.rows_affected() {
            0 => Err(StoreError::NotFound(format!("{object_type} `{object_id}`"))),
            _ => Ok(()),
        }
    }

    async fn set_object_acl(
        &self,
        object_type: &str,
        object_id: &str,
        entries: &[(PrincipalId, String)],
        replace: bool,
    ) -> StoreResult<()> {
        let mut transaction = self.pool().begin().await?;
        if replace {
            sqlx::query("DELETE FROM object_acls WHERE object_type = $1 AND object_id = $2")
                .bind(object_type)
                .bind(object_id)
                .execute(&mut *transaction)
                .await?;
        }
        for (principal, level) in entries {
            sqlx::query(
                "INSERT INTO object_acls (object_type, object_id, principal_id, level) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (object_type, object_id, principal_id) DO UPDATE SET level = excluded.level",
            )
            .bind(object_type)
            .bind(object_id)
            .bind(principal.0)
            .bind(level)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn object_acl(&self, object_type: &str, object_id: &str) -> StoreResult<Vec<AclEntry>> {
        let rows = sqlx::query("SELECT * FROM object_acls WHERE object_type = $1 AND object_id = $2 ORDER BY principal_id")
            .bind(object_type)
            .bind(object_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(acl_from_row).collect()
    }

    async fn authorization_rows(&self) -> StoreResult<AuthorizationRows> {
        let mut transaction = self.begin_consistent_read().await?;
        let mut read =
            async |sql: &'static str| sqlx::query(sql).fetch_all(&mut *transaction).await;
        let identities = read(ALL_IDENTITIES).await?;
        let memberships = read(ALL_MEMBERSHIPS).await?;
        let securables = read(ALL_SECURABLES).await?;
        let grants =
            read("SELECT * FROM grants ORDER BY securable_id, principal_id, privilege").await?;
        let workspace_objects =
            read("SELECT * FROM workspace_objects ORDER BY object_type, created_at, object_id")
                .await?;
        let object_acls =
            read("SELECT * FROM object_acls ORDER BY object_type, object_id, principal_id").await?;
        let through = read(LOG_POSITION).await?;
        transaction.commit().await?;
        Ok(AuthorizationRows {
            identities: identities
                .iter()
                .map(identity_from_row)
                .collect::<StoreResult<_>>()?,
            memberships: memberships
                .iter()
                .map(membership_from_row)
                .collect::<StoreResult<_>>()?,
            securables: securables
                .iter()
                .map(securable_from_row)
                .collect::<StoreResult<_>>()?,
            grants: grants
                .iter()
                .map(grant_from_row)
                .collect::<StoreResult<_>>()?,
            workspace_objects: workspace_objects
                .iter()
                .map(workspace_object_from_row)
                .collect::<StoreResult<_>>()?,
            object_acls: object_acls
                .iter()
                .map(acl_from_row)
                .collect::<StoreResult<_>>()?,
            through: single_number(&through)?,
        })
    }

    async fn authorization_changes(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Option<AuthorizationDelta>> {
        let mut transaction = self.begin_consistent_read().await?;
        let pruned_through = sqlx::query("SELECT through_seq FROM authorization_changes_pruned")
            .fetch_all(&mut *transaction)
            .await?;
        if single_number(&pruned_through)? > after {
            return Ok(None);
        }
        let changes = sqlx::query(
            "SELECT seq, subject, securable_id, object_type, object_id FROM authorization_changes \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(&mut *transaction)
        .await?;
        if changes.len() > limit {
            return Ok(None);
        }
        let mut delta = AuthorizationDelta {
            through: after,
            ..AuthorizationDelta::default()
        };
        let mut directory_changed = false;
        let mut securable_ids = std::collections::BTreeSet::new();
        let mut objects = std::collections::BTreeSet::new();
        for change in &changes {
            delta.through = change.try_get("seq")?;
            let subject: String = change.try_get("subject")?;
            match subject.as_str() {
                "directory" => directory_changed = true,
                "securable" => {
                    securable_ids.insert(
                        change
                            .try_get::<Option<i64>, _>("securable_id")?
                            .ok_or_else(|| {
                                StoreError::Corrupt(
                                    "a logged securable change names no securable".into(),
                                )
                            })?,
                    );
                }
                "workspace_object" => {
                    let object_type: Option<String> = change.try_get("object_type")?;
                    let object_id: Option<String> = change.try_get("object_id")?;
                    objects.insert(object_type.zip(object_id).ok_or_else(|| {
                        StoreError::Corrupt(
                            "a logged workspace object change names no object".into(),
                        )
                    })?);
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unknown authorization change subject `{other}`"
                    )));
                }
            }
        }
        if directory_changed {
            let identities = sqlx::query(ALL_IDENTITIES)
                .fetch_all(&mut *transaction)
                .await?;
            let memberships = sqlx::query(ALL_MEMBERSHIPS)
                .fetch_all(&mut *transaction)
                .await?;
            delta.directory = Some((
                identities
                    .iter()
                    .map(identity_from_row)
                    .collect::<StoreResult<_>>()?,
                memberships
                    .iter()
                    .map(membership_from_row)
                    .collect::<StoreResult<_>>()?,
            ));
        }
        if !securable_ids.is_empty() {
            let ids: Vec<i64> = securable_ids.into_iter().collect();
            let records = rows_with_ids(
                &mut transaction,
                "SELECT * FROM securables WHERE id IN (",
                &ids,
            )
            .await?
            .iter()
            .map(securable_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
            let grants = rows_with_ids(
                &mut transaction,
                "SELECT * FROM grants WHERE securable_id IN (",
                &ids,
            )
            .await?
            .iter()
            .map(grant_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
            delta.securables = ids
                .into_iter()
                .map(|id| SecurableDelta {
                    id: SecurableId(id),
                    record: records.iter().find(|record| record.id.0 == id).cloned(),
                    grants: grants
                        .iter()
                        .filter(|grant| grant.securable_id.0 == id)
                        .cloned()
                        .collect(),
                })
                .collect();
        }
        for (object_type, object_id) in objects {
            let exists = sqlx::query(
                "SELECT 1 FROM workspace_objects WHERE object_type = $1 AND object_id = $2",
            )
            .bind(&object_type)
            .bind(&object_id)
            .fetch_optional(&mut *transaction)
            .await?
            .is_some();
            let acl = sqlx::query(
                "SELECT * FROM object_acls WHERE object_type = $1 AND object_id = $2 ORDER BY principal_id",
            )
            .bind(&object_type)
            .bind(&object_id)
            .fetch_all(&mut *transaction)
            .await?
            .iter()
            .map(acl_from_row)
            .collect::<StoreResult<_>>()?;
            delta.workspace_objects.push(WorkspaceObjectDelta {
                object_type,
                object_id,
                exists,
                acl,
            });
        }
        transaction.commit().await?;
        Ok(Some(delta))
    }

    async fn prune_authorization_changes(&self, cutoff: EpochMillis) -> StoreResult<u64> {
        let mut transaction = self.pool().begin().await?;
        let newest_pruned = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS log_position FROM authorization_changes WHERE changed_at < $1",
        )
        .bind(cutoff)
        .fetch_all(&mut *transaction)
        .await?;
        let newest_pruned = single_number(&newest_pruned)?;
        // Readers behind the pruned positions must learn they cannot catch up from the log, in the same commit.
        sqlx::query(
            "UPDATE authorization_changes_pruned SET through_seq = $1 WHERE through_seq < $1",
        )
        .bind(newest_pruned)
        .execute(&mut *transaction)
        .await?;
        let deleted = sqlx::query("DELETE FROM authorization_changes WHERE seq <= $1")
            .bind(newest_pruned)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        Ok(deleted)
    }
}

impl SqlStore {
    /// A read-only transaction whose statements all see one moment. PostgreSQL's default takes a new snapshot per
    /// statement, where SQLite's read transaction keeps the first.
    async fn begin_consistent_read(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        let mut transaction = self.pool().begin().await?;
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *transaction)
                .await?;
        }
        Ok(transaction)
    }
}

/// The rows `select_in` (a statement ending in `IN (`) finds for `ids`.
async fn rows_with_ids(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    select_in: &str,
    ids: &[i64],
) -> StoreResult<Vec<AnyRow>> {
    let mut statement = Statement::new(select_in);
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            statement.push(", ");
        }
        statement.bind(*id)?;
    }
    statement.push(")");
    Ok(statement.query().fetch_all(&mut **transaction).await?)
}

/// The one number a one-row, one-column read returns.
fn single_number(rows: &[AnyRow]) -> StoreResult<i64> {
    let row = rows.first().ok_or_else(|| {
        StoreError::Corrupt("a bookkeeping row of the change log is missing".into())
    })?;
    Ok(row.try_get(0)?)
}

/// Where the authorization change log stands.
const LOG_POSITION: &str =
    "SELECT COALESCE(MAX(seq), 0) AS log_position FROM authorization_changes";

/// Parents before children: ids grow with creation and a parent always exists before its children.
const ALL_SECURABLES: &str = "SELECT * FROM securables ORDER BY id";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IdentityKind, MetadataStore, NewIdentity};

    async fn store_with_owner() -> (crate::testing::TemporaryStore, SqlStore, PrincipalId) {
        let (temporary, store) = crate::test_support::open_temporary().await;
        let owner = store
            .create_identity(
                NewIdentity {
                    kind: IdentityKind::User,
                    name: "owner".into(),
                    display_name: "owner".into(),
                    given_name: None,
                    family_name: None,
                    external_id: None,
                    active: true,
                },
                1,
            )
            .await
            .unwrap();
        (temporary, store, owner.id)
    }

    fn new(
        kind: &str,
        full_name: &str,
        parent: Option<SecurableId>,
        owner: PrincipalId,
    ) -> NewSecurable {
        NewSecurable {
            kind: kind.into(),
            namespace: if kind == "table" {
                "relation".into()
            } else {
                kind.into()
            },
            full_name: full_name.into(),
            parent_id: parent,
            owner_id: owner,
            comment: None,
            properties: "{}".into(),
            spec: "{}".into(),
            created_by: owner,
        }
    }

    #[tokio::test]
    async fn renaming_a_catalog_renames_its_descendants_only() {
        let (_dir, store, owner) = store_with_owner().await;
        let main = store
            .create_securable(new("catalog", "main", None, owner), 1)
            .await
            .unwrap();
        let other = store
            .create_securable(new("catalog", "main_x", None, owner), 1)
            .await
            .unwrap();
        let sales = store
            .create_securable(new("schema", "main.sales", Some(main.id), owner), 1)
            .await
            .unwrap();
        store
            .create_securable(new("table", "main.sales.orders", Some(sales.id), owner), 1)
            .await
            .unwrap();
        store
            .create_securable(new("schema", "main_x.sales", Some(other.id), owner), 1)
            .await
            .unwrap();
        let changes = SecurableChanges {
            full_name: Some("prod".into()),
            ..SecurableChanges::default()
        };
        store
            .update_securable(main.id, changes, owner, 2)
            .await
            .unwrap();
        let names: Vec<String> = store
            .all_securables()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.full_name)
            .collect();
        assert_eq!(
            names,
            vec![
                "prod",
                "main_x",
                "prod.sales",
                "prod.sales.orders",
                "main_x.sales"
            ]
        );
    }

    #[tokio::test]
    async fn deleting_a_catalog_cascades_to_children_and_grants() {
        let (_dir, store, owner) = store_with_owner().await;
        let main = store
            .create_securable(new("catalog", "main", None, owner), 1)
            .await
            .unwrap();
        let sales = store
            .create_securable(new("schema", "main.sales", Some(main.id), owner), 1)
            .await
            .unwrap();
        let change = GrantChange {
            principal_id: owner,
            add: vec!["USE_SCHEMA".into()],
            remove: vec![],
        };
        store.change_grants(sales.id, &[change]).await.unwrap();
        assert_eq!(store.authorization_rows().await.unwrap().grants.len(), 1);
        store.delete_securable(main.id).await.unwrap();
        assert!(store.all_securables().await.unwrap().is_empty());
        assert!(store.authorization_rows().await.unwrap().grants.is_empty());
    }

    #[tokio::test]
    async fn names_collide_case_insensitively_within_a_namespace() {
        let (_dir, store, owner) = store_with_owner().await;
        store
            .create_securable(new("catalog", "Main", None, owner), 1)
            .await
            .unwrap();
        let clash = store
            .create_securable(new("catalog", "MAIN", None, owner), 1)
            .await;
        assert!(matches!(clash, Err(StoreError::AlreadyExists(_))));
        assert!(
            store
                .find_securable("catalog", "main")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn object_acls_replace_and_merge() {
        let (_dir, store, owner) = store_with_owner().await;
        let object = WorkspaceObjectRecord {
            object_type: "warehouses".into(),
            object_id: "w1".into(),
            name: "default".into(),
            owner_id: owner,
            spec: "{}".into(),
            created_at: 1,
        };
        store.create_workspace_object(object).await.unwrap();
        store
            .set_object_acl("warehouses", "w1", &[(owner, "CAN_USE".into())], false)
            .await
            .unwrap();
        store
            .set_object_acl("warehouses", "w1", &[(owner, "CAN_MANAGE".into())], false)
            .await
            .unwrap();
        assert_eq!(
            store.object_acl("warehouses", "w1").await.unwrap()[0].level,
            "CAN_MANAGE"
        );
        store
            .set_object_acl("warehouses", "w1", &[], true)
            .await
            .unwrap();
        assert!(
            store
                .object_acl("warehouses", "w1")
                .await
                .unwrap()
                .is_empty()
        );
        store
            .delete_workspace_object("warehouses", "w1")
            .await
            .unwrap();
        assert!(
            store
                .get_workspace_object("warehouses", "w1")
                .await
                .unwrap()
                .is_none()
        );
    }
}
