//! The SQL implementation of every store trait, on SQLite (the embedded default: one file in WAL mode) or on
//! PostgreSQL (several replicas sharing one database). One implementation serves both through sqlx's `Any` driver:
//! statements use what the two dialects share (`$N` parameters, `ON CONFLICT`, `RETURNING`, recursive CTEs), and
//! the few places that differ ask [`Dialect`]. Each dialect has its own migrations with the same version numbers.

use crate::audit::AuditGroupCommit;
use crate::{
    ClientSecret, EpochMillis, Identity, IdentityKind, IdentityQuery, IdentityUpdate,
    MetadataStore, NewIdentity, PersonalAccessToken, PrincipalId, StoreError, StoreResult,
    StoredSigningKey,
};
use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::query::Query;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{
    Any, AnyPool, Arguments, AssertSqlSafe, ConnectOptions, Encode, Executor, Row, SqlSafeStr, Type,
};
use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

/// Which database a store talks to, for the few statements whose spelling differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A migration: its version, description, and its SQL for each dialect.
struct DialectMigration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $description:literal, $file:literal) => {
        DialectMigration {
            version: $version,
            description: $description,
            sqlite: include_str!(concat!("../migrations/sqlite/", $file)),
            postgres: include_str!(concat!("../migrations/postgres/", $file)),
        }
    };
}

/// Migrations are compiled into the binary so that `deputy` runs from any directory.
const MIGRATIONS: &[DialectMigration] = &[
    migration!(1, "foundation", "0001_foundation.sql"),
    migration!(2, "unity catalog", "0002_unity_catalog.sql"),
    migration!(4, "audit", "0004_audit.sql"),
    migration!(7, "genie conversations", "0007_genie_conversations.sql"),
    migration!(10, "consents", "0010_consents.sql"),
    migration!(11, "federation policies", "0011_federation_policies.sql"),
    migration!(12, "sign-in", "0012_sign_in.sql"),
    migration!(13, "audit by user", "0013_audit_by_user.sql"),
    migration!(
        14,
        "endpoint conversations",
        "0014_endpoint_conversations.sql"
    ),
    migration!(15, "change feed", "0015_change_feed.sql"),
    migration!(
        16,
        "authorization changes",
        "0016_authorization_changes.sql"
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
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// Where the pool connects, for PostgreSQL's listening connection.
    url: String,
    audit: std::sync::Arc<AuditGroupCommit>,
}

/// The PostgreSQL advisory lock that start-ups and key rotations take in turn ("deputy" in ASCII).
const SETUP_LOCK: i64 = 0x6465_7075_7479;

/// Connections per process. PostgreSQL serves every replica from one server, so each replica takes a modest share.
const MAX_CONNECTIONS: u32 = 8;

impl SqlStore {
    /// Opens (creating if needed) an SQLite database file and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> StoreResult<SqlStore> {
        SqlStore::start(&SqlStore::sqlite_url(path), Dialect::Sqlite).await
    }

    /// The `sqlite://` URL of a database file, created when first opened.
    pub fn sqlite_url(path: &Path) -> String {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy()
            .to_string()
    }

    /// Connects to the database a URL names: `postgres://` (created when it does not exist yet) or `sqlite://`.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("postgres" | "postgresql") => {
                crate::postgres::create_database_if_missing(url).await?;
                SqlStore::start(url, Dialect::Postgres).await
            }
            Some("sqlite") => SqlStore::start(url, Dialect::Sqlite).await,
            _ => Err(StoreError::Configuration(format!(
                "a database URL must start with postgres:// or sqlite://, not `{}`",
                crate::postgres::without_password(url)
            ))),
        }
    }

    async fn start(url: &str, dialect: Dialect) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A local file has no connection to lose; the default ping before every acquire costs a round trip to
            // the connection's thread on every query. A PostgreSQL connection can drop, so it is pinged.
            .test_before_acquire(dialect == Dialect::Postgres)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // FULL: an acknowledged write (a revocation, a new token) survives power loss, not just a
                        // crash. The rest as sqlx's own SQLite defaults, which a URL cannot carry.
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        migrator(dialect).run(&pool).await?;
        Ok(SqlStore {
            pool,
            dialect,
            url: url.to_owned(),
            audit: Default::default(),
        })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn audit_group(&self) -> &AuditGroupCommit {
        &self.audit
    }
}

fn migrator(dialect: Dialect) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|migration| {
            let sql = match dialect {
                Dialect::Sqlite => migration.sqlite,
                Dialect::Postgres => migration.postgres,
            };
            Migration::new(
                migration.version,
                Cow::Borrowed(migration.description),
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

/// A statement put together at run time, its values bound as numbered parameters (`$1`, `$2`, ...), which both
/// dialects read. (sqlx's `QueryBuilder` writes `?` through the `Any` driver, which PostgreSQL does not read.)
pub(crate) struct Statement {
    sql: String,
    arguments: AnyArguments,
}

impl Statement {
    pub(crate) fn new(sql: &str) -> Statement {
        Statement {
            sql: sql.to_owned(),
            arguments: AnyArguments::default(),
        }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Statement {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next parameter's placeholder and binds `value` to it.
    pub(crate) fn bind<'t, T>(&mut self, value: T) -> StoreResult<&mut Statement>
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.arguments
            .add(value)
            .map_err(|error| StoreError::Corrupt(format!("a statement's parameter: {error}")))?;
        self.sql.push_str(&format!("${}", self.arguments.len()));
        Ok(self)
    }

    pub(crate) fn query(self) -> Query<'static, Any, AnyArguments> {
        sqlx::query_with(AssertSqlSafe(self.sql), self.arguments)
    }

    #[cfg(test)]
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }
}

/// Reads a yes/no column: PostgreSQL keeps a `BOOLEAN`, SQLite an integer 0 or 1.
pub(crate) fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

/// Every identity and every direct membership: what the in-memory directory is built from.
pub(crate) const ALL_IDENTITIES: &str = concat!(
    "SELECT ",
    identity_columns!(),
    " FROM principals ORDER BY id"
);
pub(crate) const ALL_MEMBERSHIPS: &str =
    "SELECT group_id, member_id FROM memberships ORDER BY group_id, member_id";

pub(crate) fn membership_from_row(row: &AnyRow) -> StoreResult<(PrincipalId, PrincipalId)> {
    Ok((
        PrincipalId(row.try_get("group_id")?),
        PrincipalId(row.try_get("member_id")?),
    ))
}

pub(crate) fn identity_from_row(row: &AnyRow) -> StoreResult<Identity> {
    Ok(Identity {
        id: PrincipalId(row.try_get("id")?),
        kind: row.try_get::<String, _>("kind")?.parse()?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        given_name: row.try_get("given_name")?,
        family_name: row.try_get("family_name")?,
        external_id: row.try_get("external_id")?,
        active: flag(row, "active")?,
        created_at: row.try_get("created_at")?,
    })
}

fn token_from_row(row: &AnyRow) -> StoreResult<PersonalAccessToken> {
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
impl MetadataStore for SqlStore {
    async fn workspace_id(&self) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT workspace_id FROM workspace WHERE singleton = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("workspace_id")).transpose()?)
    }

    async fn create_workspace(&self, workspace_id: i64, now: EpochMillis) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workspace (singleton, workspace_id, created_at) VALUES (1, $1, $2)",
        )
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
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
            " FROM principals WHERE id = $1"
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
            " FROM principals WHERE kind = $1 AND name = $2"
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
                "kind = $1 AND ($2 IS NULL OR name = $2) AND ($3 IS NULL OR lower(display_name) = lower($3))"
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
            " ORDER BY id LIMIT $4 OFFSET $5"
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
            "UPDATE principals SET name = $1, display_name = $2, given_name = $3, family_name = $4, external_id = $5, \
             active = $6 WHERE id = $7 RETURNING ",
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
        let result = sqlx::query("DELETE FROM principals WHERE id = $1")
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
        sqlx::query("DELETE FROM memberships WHERE group_id = $1")
            .bind(group.0)
            .execute(&mut *transaction)
            .await?;
        for member in members {
            sqlx::query("INSERT INTO memberships (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(group.0)
                .bind(member.0)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn add_group_member(&self, group: PrincipalId, member: PrincipalId) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO memberships (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
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
        sqlx::query("DELETE FROM memberships WHERE group_id = $1 AND member_id = $2")
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
            " FROM principals WHERE id IN (SELECT member_id FROM memberships WHERE group_id = $1) ORDER BY id"
        );
        let rows = sqlx::query(sql).bind(group.0).fetch_all(&self.pool).await?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn direct_groups(&self, member: PrincipalId) -> StoreResult<Vec<Identity>> {
        let sql = concat!(
            "SELECT ",
            identity_columns!(),
            " FROM principals WHERE id IN (SELECT group_id FROM memberships WHERE member_id = $1) ORDER BY id"
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
                 SELECT group_id FROM memberships WHERE member_id = $1 \
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

    async fn insert_personal_access_token(&self, token: PersonalAccessToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO personal_access_tokens \
             (token_id, owner_id, created_by, secret_hash, comment, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn get_personal_access_token(
        &self,
        token_id: &str,
    ) -> StoreResult<Option<PersonalAccessToken>> {
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE token_id = $1")
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
            "SELECT * FROM personal_access_tokens WHERE ($1 IS NULL OR owner_id = $1) ORDER BY created_at, token_id",
        )
        .bind(owner.map(|id| id.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_personal_access_token(&self, token_id: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM personal_access_tokens WHERE token_id = $1")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn insert_client_secret(&self, secret: ClientSecret) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO client_secrets (secret_id, principal_id, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
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
            "SELECT * FROM client_secrets WHERE principal_id = $1 ORDER BY created_at, secret_id",
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
            sqlx::query("DELETE FROM client_secrets WHERE principal_id = $1 AND secret_id = $2")
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
                "INSERT INTO signing_keys (kid, seed, created_at, retired_at) VALUES ($1, $2, $3, $4)",
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
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_revoked_token_ids(&self, now: EpochMillis) -> StoreResult<Vec<String>> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT jti FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("jti")?)).collect()
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    async fn set_settings(&self, settings: &[(&str, &str)]) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await?;
        for (key, value) in settings {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(*key)
                .bind(*value)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn exclusive_setup(&self) -> StoreResult<crate::SetupGuard> {
        let session = match self.dialect {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                let mut session = self.pool.acquire().await?.detach();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(SETUP_LOCK)
                    .execute(&mut session)
                    .await?;
                Some(session)
            }
        };
        Ok(crate::SetupGuard { _session: session })
    }

    async fn follow_changes(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::UnboundedReceiver<crate::Change>>> {
        match self.dialect {
            Dialect::Sqlite => Ok(None),
            Dialect::Postgres => crate::postgres::follow_changes(&self.url).await.map(Some),
        }
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
        let temporary = crate::testing::TemporaryStore::new();
        {
            let store = temporary.open().await.unwrap();
            store.create_workspace(42, 1).await.unwrap();
            store
                .set_settings(&[("obo-enabled", "true")])
                .await
                .unwrap();
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
        let store = temporary.open().await.unwrap();
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
