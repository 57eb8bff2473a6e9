//! The embedded [`MetadataStore`]: one SQLite file in WAL mode.

use crate::audit::AuditGroupCommit;
use crate::{
    ClientSecret, EpochMillis, Identity, IdentityKind, IdentityQuery, IdentityUpdate,
    MetadataStore, NewIdentity, PersonalAccessToken, PrincipalId, StoreError, StoreResult,
    StoredSigningKey,
};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, SqlitePool};
use std::borrow::Cow;
use std::path::Path;

/// Migrations are compiled into the binary so that `deputy` runs from any directory.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/0001_foundation.sql"),
    ),
    (
        2,
        "unity catalog",
        include_str!("../migrations/0002_unity_catalog.sql"),
    ),
    (4, "audit", include_str!("../migrations/0004_audit.sql")),
    (
        7,
        "genie conversations",
        include_str!("../migrations/0007_genie_conversations.sql"),
    ),
    (
        10,
        "consents",
        include_str!("../migrations/0010_consents.sql"),
    ),
    (
        11,
        "federation policies",
        include_str!("../migrations/0011_federation_policies.sql"),
    ),
    (
        12,
        "sign-in",
        include_str!("../migrations/0012_sign_in.sql"),
    ),
    (
        13,
        "audit by user",
        include_str!("../migrations/0013_audit_by_user.sql"),
    ),
    (
        14,
        "endpoint conversations",
        include_str!("../migrations/0014_endpoint_conversations.sql"),
    ),
];

/// The columns of `principals` that make an [`Identity`]; a macro so that statements stay `&'static str` literals,
/// which sqlx accepts without an injection audit.
macro_rules! identity_columns {
    () => {
        "id, kind, name, display_name, given_name, family_name, external_id, active, created_at"
    };
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    audit: std::sync::Arc<AuditGroupCommit>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write (a revocation, a new token) survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file has no connection to lose; the default ping before every acquire costs a round trip to
            // the connection's thread on every query.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(SqliteStore {
            pool,
            audit: Default::default(),
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn audit_group(&self) -> &AuditGroupCommit {
        &self.audit
    }
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn identity_from_row(row: &SqliteRow) -> StoreResult<Identity> {
    Ok(Identity {
        id: PrincipalId(row.try_get("id")?),
        kind: row.try_get::<String, _>("kind")?.parse()?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        given_name: row.try_get("given_name")?,
        family_name: row.try_get("family_name")?,
        external_id: row.try_get("external_id")?,
        active: row.try_get("active")?,
        created_at: row.try_get("created_at")?,
    })
}

fn token_from_row(row: &SqliteRow) -> StoreResult<PersonalAccessToken> {
    Ok(PersonalAccessToken {
        token_id: row.try_get("token_id")?,
        owner_id: PrincipalId(row.try_get("owner_id")?),
        created_by: PrincipalId(row.try_get("created_by")?),
        secret_hash: row.try_get("secret_hash")?,
        comment: row.try_get("comment")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn describe(identity_kind: IdentityKind, name: &str) -> String {
    let noun = match identity_kind {
        IdentityKind::User => "user",
        IdentityKind::ServicePrincipal => "service principal",
        IdentityKind::Group => "group",
    };
    format!("{noun} `{name}`")
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn workspace_id(&self) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT workspace_id FROM workspace WHERE singleton = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("workspace_id")).transpose()?)
    }

    async fn create_workspace(&self, workspace_id: i64, now: EpochMillis) -> StoreResult<()> {
        sqlx::query("INSERT INTO workspace (singleton, workspace_id, created_at) VALUES (1, ?, ?)")
            .bind(workspace_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::AlreadyExists("workspace".into()),
                false => error.into(),
            })?;
        Ok(())
    }

    async fn create_identity(
        &self,
        identity: NewIdentity,
        now: EpochMillis,
    ) -> StoreResult<Identity> {
        let sql = concat!(
            "INSERT INTO principals (kind, name, display_name, given_name, family_name, external_id, active, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            identity_columns!()
        );
        let row = sqlx::query(sql)
            .bind(identity.kind.as_str())
            .bind(&identity.name)
            .bind(&identity.display_name)
            .bind(&identity.given_name)
            .bind(&identity.family_name)
            .bind(&identity.external_id)
            .bind(identity.active)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::AlreadyExists(describe(identity.kind, &identity.name)),
                false => error.into(),
            })?;
        identity_from_row(&row)
    }

    async fn get_identity(&self, id: PrincipalId) -> StoreResult<Option<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE id = ?"
        );
        let row = sqlx::query(sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(identity_from_row).transpose()
    }

    async fn find_identity(&self, kind: IdentityKind, name: &str) -> StoreResult<Option<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE kind = ? AND name = ?"
        );
        let row = sqlx::query(sql)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(identity_from_row).transpose()
    }

    async fn list_identities(
        &self,
        kind: IdentityKind,
        query: &IdentityQuery,
    ) -> StoreResult<(Vec<Identity>, i64)> {
        // NULL parameters switch a condition off, so one statement serves every combination of filters.
        macro_rules! condition {
            () => {
                "kind = ?1 AND (?2 IS NULL OR name = ?2) AND (?3 IS NULL OR display_name = ?3 COLLATE NOCASE)"
            };
        }
        let total: i64 = sqlx::query(concat!(
            "SELECT COUNT(*) AS total FROM principals WHERE ",
            condition!()
        ))
        .bind(kind.as_str())
        .bind(&query.name_equals)
        .bind(&query.display_name_equals)
        .fetch_one(&self.pool)
        .await?
        .try_get("total")?;
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE ",
            condition!(),
            " ORDER BY id LIMIT ?4 OFFSET ?5"
        );
        let rows = sqlx::query(sql)
            .bind(kind.as_str())
            .bind(&query.name_equals)
            .bind(&query.display_name_equals)
            .bind(query.limit)
            .bind(query.offset)
            .fetch_all(&self.pool)
            .await?;
        let identities = rows
            .iter()
            .map(identity_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((identities, total))
    }

    async fn update_identity(
        &self,
        id: PrincipalId,
        update: IdentityUpdate,
    ) -> StoreResult<Identity> {
        let sql = concat!(
            "UPDATE principals SET name = ?, display_name = ?, given_name = ?, family_name = ?, external_id = ?, \
             active = ? WHERE id = ? RETURNING ",
            identity_columns!()
        );
        let row = sqlx::query(sql)
            .bind(&update.name)
            .bind(&update.display_name)
            .bind(&update.given_name)
            .bind(&update.family_name)
            .bind(&update.external_id)
            .bind(update.active)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::AlreadyExists(format!("`{}`", update.name)),
                false => error.into(),
            })?;
        match row {
            Some(row) => identity_from_row(&row),
            None => Err(StoreError::NotFound(format!("principal {id}"))),
        }
    }

    async fn delete_identity(&self, id: PrincipalId) -> StoreResult<()> {
        // Foreign keys cascade to memberships, tokens and secrets inside the same statement.
        let result = sqlx::query("DELETE FROM principals WHERE id = ?")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        match result.rows_affected() {
            0 => Err(StoreError::NotFound(format!("principal {id}"))),
            _ => Ok(()),
        }
    }

    async fn set_group_members(
        &self,
        group: PrincipalId,
        members: &[PrincipalId],
    ) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM memberships WHERE group_id = ?")
            .bind(group.0)
            .execute(&mut *transaction)
            .await?;
        for member in members {
            sqlx::query("INSERT OR IGNORE INTO memberships (group_id, member_id) VALUES (?, ?)")
                .bind(group.0)
                .bind(member.0)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn add_group_member(&self, group: PrincipalId, member: PrincipalId) -> StoreResult<()> {
        sqlx::query("INSERT OR IGNORE INTO memberships (group_id, member_id) VALUES (?, ?)")
            .bind(group.0)
            .bind(member.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_group_member(
        &self,
        group: PrincipalId,
        member: PrincipalId,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM memberships WHERE group_id = ? AND member_id = ?")
            .bind(group.0)
            .bind(member.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn group_members(&self, group: PrincipalId) -> StoreResult<Vec<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE id IN (SELECT member_id FROM memberships WHERE group_id = ?) ORDER BY id"
        );
        let rows = sqlx::query(sql).bind(group.0).fetch_all(&self.pool).await?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn direct_groups(&self, member: PrincipalId) -> StoreResult<Vec<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE id IN (SELECT group_id FROM memberships WHERE member_id = ?) ORDER BY id"
        );
        let rows = sqlx::query(sql)
            .bind(member.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn transitive_groups(&self, member: PrincipalId) -> StoreResult<Vec<Identity>> {
        // UNION (not UNION ALL) discards rows already seen, which is what stops a membership cycle.
        let sql = concat!(
            "WITH RECURSIVE ancestors(group_id) AS ( \
                 SELECT group_id FROM memberships WHERE member_id = ? \
                 UNION SELECT m.group_id FROM memberships m JOIN ancestors a ON m.member_id = a.group_id) \
             SELECT ",
            identity_columns!(),
            " FROM principals WHERE id IN (SELECT group_id FROM ancestors) ORDER BY id"
        );
        let rows = sqlx::query(sql)
            .bind(member.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn all_identities(&self) -> StoreResult<Vec<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals ORDER BY id"
        );
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn all_memberships(&self) -> StoreResult<Vec<(PrincipalId, PrincipalId)>> {
        let rows =
            sqlx::query("SELECT group_id, member_id FROM memberships ORDER BY group_id, member_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    PrincipalId(row.try_get("group_id")?),
                    PrincipalId(row.try_get("member_id")?),
                ))
            })
            .collect()
    }

    async fn insert_personal_access_token(&self, token: PersonalAccessToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO personal_access_tokens \
             (token_id, owner_id, created_by, secret_hash, comment, scopes, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.token_id)
        .bind(token.owner_id.0)
        .bind(token.created_by.0)
        .bind(&token.secret_hash)
        .bind(&token.comment)
        .bind(&token.scopes)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_personal_access_token_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<PersonalAccessToken>> {
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE secret_hash = ?")
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn get_personal_access_token(
        &self,
        token_id: &str,
    ) -> StoreResult<Option<PersonalAccessToken>> {
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE token_id = ?")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_personal_access_tokens(
        &self,
        owner: Option<PrincipalId>,
    ) -> StoreResult<Vec<PersonalAccessToken>> {
        let rows = sqlx::query(
            "SELECT * FROM personal_access_tokens WHERE (?1 IS NULL OR owner_id = ?1) ORDER BY created_at, token_id",
        )
        .bind(owner.map(|id| id.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_personal_access_token(&self, token_id: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM personal_access_tokens WHERE token_id = ?")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn insert_client_secret(&self, secret: ClientSecret) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO client_secrets (secret_id, principal_id, secret_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&secret.secret_id)
        .bind(secret.principal_id.0)
        .bind(&secret.secret_hash)
        .bind(secret.created_at)
        .bind(secret.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_client_secrets(&self, principal: PrincipalId) -> StoreResult<Vec<ClientSecret>> {
        let rows = sqlx::query(
            "SELECT * FROM client_secrets WHERE principal_id = ? ORDER BY created_at, secret_id",
        )
        .bind(principal.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClientSecret {
                    secret_id: row.try_get("secret_id")?,
                    principal_id: PrincipalId(row.try_get("principal_id")?),
                    secret_hash: row.try_get("secret_hash")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }

    async fn delete_client_secret(
        &self,
        principal: PrincipalId,
        secret_id: &str,
    ) -> StoreResult<bool> {
        let result =
            sqlx::query("DELETE FROM client_secrets WHERE principal_id = ? AND secret_id = ?")
                .bind(principal.0)
                .bind(secret_id)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn load_signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        let rows = sqlx::query(
            "SELECT kid, seed, created_at, retired_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredSigningKey {
                    kid: row.try_get("kid")?,
                    seed: row.try_get("seed")?,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                })
            })
            .collect()
    }

    async fn replace_signing_keys(&self, keys: &[StoredSigningKey]) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM signing_keys")
            .execute(&mut *transaction)
            .await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO signing_keys (kid, seed, created_at, retired_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&key.kid)
            .bind(&key.seed)
            .bind(key.created_at)
            .bind(key.retired_at)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn revoke_token_id(&self, jti: &str, expires_at: EpochMillis) -> StoreResult<()> {
        sqlx::query("INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)")
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_revoked_token_ids(&self, now: EpochMillis) -> StoreResult<Vec<String>> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT jti FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("jti")?)).collect()
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{open_temporary, user};

    fn group(name: &str) -> NewIdentity {
        NewIdentity {
            kind: IdentityKind::Group,
            ..user(name)
        }
    }

    #[tokio::test]
    async fn names_are_unique_per_kind_and_case_insensitive() {
        let (_dir, store) = open_temporary().await;
        store
            .create_identity(user("Alice@example.com"), 1)
            .await
            .unwrap();
        let duplicate = store.create_identity(user("alice@EXAMPLE.com"), 2).await;
        assert!(
            matches!(duplicate, Err(StoreError::AlreadyExists(_))),
            "{duplicate:?}"
        );
        // A group may share a user's name: the namespaces are separate.
        store
            .create_identity(group("alice@example.com"), 3)
            .await
            .unwrap();
        let found = store
            .find_identity(IdentityKind::User, "ALICE@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.name, "Alice@example.com");
    }

    #[tokio::test]
    async fn transitive_groups_follow_nesting_and_survive_cycles() {
        let (_dir, store) = open_temporary().await;
        let alice = store.create_identity(user("alice"), 1).await.unwrap();
        let inner = store.create_identity(group("inner"), 1).await.unwrap();
        let outer = store.create_identity(group("outer"), 1).await.unwrap();
        let unrelated = store.create_identity(group("unrelated"), 1).await.unwrap();
        store.add_group_member(inner.id, alice.id).await.unwrap();
        store.add_group_member(outer.id, inner.id).await.unwrap();
        store.add_group_member(inner.id, outer.id).await.unwrap(); // a cycle
        let groups: Vec<String> = store
            .transitive_groups(alice.id)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(groups, vec!["inner", "outer"]);
        assert!(
            store
                .direct_groups(alice.id)
                .await
                .unwrap()
                .iter()
                .all(|g| g.id != unrelated.id)
        );
    }

    #[tokio::test]
    async fn deleting_an_identity_cascades_to_its_credentials_and_memberships() {
        let (_dir, store) = open_temporary().await;
        let alice = store.create_identity(user("alice"), 1).await.unwrap();
        let team = store.create_identity(group("team"), 1).await.unwrap();
        store.add_group_member(team.id, alice.id).await.unwrap();
        store
            .insert_personal_access_token(PersonalAccessToken {
                token_id: "t1".into(),
                owner_id: alice.id,
                created_by: alice.id,
                secret_hash: "abc".into(),
                comment: String::new(),
                scopes: "all-apis".into(),
                created_at: 1,
                expires_at: -1,
            })
            .await
            .unwrap();
        store.delete_identity(alice.id).await.unwrap();
        assert!(
            store
                .find_personal_access_token_by_hash("abc")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.group_members(team.id).await.unwrap().is_empty());
        assert!(matches!(
            store.delete_identity(alice.id).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store.create_workspace(42, 1).await.unwrap();
            store.set_setting("obo-enabled", "true").await.unwrap();
            let key = StoredSigningKey {
                kid: "k1".into(),
                seed: vec![7; 32],
                created_at: 1,
                retired_at: None,
            };
            store.replace_signing_keys(&[key]).await.unwrap();
            store.revoke_token_id("jti-1", 10_000).await.unwrap();
            store.revoke_token_id("jti-old", 5).await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.workspace_id().await.unwrap(), Some(42));
        assert!(matches!(
            store.create_workspace(7, 2).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(
            store.get_setting("obo-enabled").await.unwrap().as_deref(),
            Some("true")
        );
        assert_eq!(
            store.load_signing_keys().await.unwrap()[0].seed,
            vec![7; 32]
        );
        assert_eq!(
            store.live_revoked_token_ids(100).await.unwrap(),
            vec!["jti-1".to_string()]
        );
    }

    #[tokio::test]
    async fn listing_pages_and_filters() {
        let (_dir, store) = open_temporary().await;
        for index in 0..5 {
            store
                .create_identity(user(&format!("user{index}")), 1)
                .await
                .unwrap();
        }
        let query = IdentityQuery {
            offset: 3,
            limit: 10,
            ..IdentityQuery::default()
        };
        let (page, total) = store
            .list_identities(IdentityKind::User, &query)
            .await
            .unwrap();
        assert_eq!((page.len(), total), (2, 5));
        let query = IdentityQuery {
            name_equals: Some("USER2".into()),
            limit: 10,
            ..IdentityQuery::default()
        };
        let (page, total) = store
            .list_identities(IdentityKind::User, &query)
            .await
            .unwrap();
        assert_eq!((page[0].name.as_str(), total), ("user2", 1));
    }
}
