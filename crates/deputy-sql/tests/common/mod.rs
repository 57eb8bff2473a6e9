//! A real deputy-store database (SQLite in a temporary directory, or PostgreSQL under the test switch), principals, an authorization state loaded from
//! the store, and an engine; `run` executes a statement as a named user and publishes its catalog changes, as the
//! server does.

#![allow(dead_code)] // Each test binary uses a different part of the fixture.

use std::collections::HashMap;
use std::sync::Arc;

use deputy_authz::{AuthzState, PrincipalId};
use deputy_core::ScopeSet;
use deputy_sql::{
    CancellationToken, Session, SqlEngine, SqlError, StatementResult, apply_catalog_changes,
};
use deputy_store::testing::TemporaryStore;
use deputy_store::{IdentityKind, MetadataStore, NewIdentity, SqlStore, Store};

pub struct Fixture {
    /// The data directory and, on SQLite, the metadata database; or a fresh PostgreSQL database.
    pub temporary: TemporaryStore,
    pub store: Arc<SqlStore>,
    pub engine: Arc<SqlEngine>,
    pub authz: Arc<AuthzState>,
    users: HashMap<String, (PrincipalId, Vec<String>)>,
}

/// Users and the groups they are in. `admin` owns the metastore and is in `admins`.
const USERS: &[(&str, &[&str])] = &[
    ("admin", &["admins"]),
    ("alice", &["analysts"]),
    ("bob", &[]),
    ("carol", &["analysts"]),
];

impl Fixture {
    pub async fn new() -> Fixture {
        let temporary = TemporaryStore::new();
        let store = Arc::new(temporary.open().await.unwrap());
        let mut groups = HashMap::new();
        for group in ["admins", "analysts"] {
            let identity = store
                .create_identity(identity(IdentityKind::Group, group), 0)
                .await
                .unwrap();
            groups.insert(group, identity.id);
        }
        let mut users = HashMap::new();
        for (name, member_of) in USERS {
            let identity = store
                .create_identity(identity(IdentityKind::User, name), 0)
                .await
                .unwrap();
            for group in *member_of {
                store
                    .add_group_member(groups[group], identity.id)
                    .await
                    .unwrap();
            }
            let id = PrincipalId(u64::try_from(identity.id.0).unwrap());
            let names = member_of.iter().map(|group| group.to_string()).collect();
            users.insert(name.to_string(), (id, names));
        }
        let snapshot = deputy_catalog::load_snapshot(&*store as &dyn Store)
            .await
            .unwrap();
        let engine = Arc::new(
            SqlEngine::new(
                temporary.dir().join("data"),
                Arc::clone(&store) as Arc<dyn Store>,
            )
            .unwrap(),
        );
        Fixture {
            temporary,
            store,
            engine,
            authz: Arc::new(AuthzState::new(snapshot)),
            users,
        }
    }

    /// A fresh engine on the same data directory and store, as after a restart.
    pub fn restart_engine(&self) -> SqlEngine {
        SqlEngine::new(
            self.temporary.dir().join("data"),
            Arc::clone(&self.store) as Arc<dyn Store>,
        )
        .unwrap()
    }

    pub fn session(&self, user: &str) -> Session {
        let (principal, groups) = self.users[user].clone();
        Session {
            principal,
            user_name: user.to_owned(),
            groups,
            scopes: ScopeSet::all(),
            snapshot: self.authz.snapshot(),
            default_catalog: Some("main".to_owned()),
            default_schema: Some("sales".to_owned()),
        }
    }

    pub async fn run_on(
        &self,
        engine: &SqlEngine,
        user: &str,
        sql: &str,
    ) -> Result<StatementResult, SqlError> {
        let result = engine
            .execute(&self.session(user), sql, &[], CancellationToken::new())
            .await?;
        self.authz
            .update(|snapshot| apply_catalog_changes(snapshot, &result.changes))
            .unwrap();
        Ok(result)
    }

    pub async fn run(&self, user: &str, sql: &str) -> Result<StatementResult, SqlError> {
        self.run_on(&self.engine, user, sql).await
    }

    /// Runs statements that must succeed.
    pub async fn setup(&self, user: &str, statements: &[&str]) {
        for sql in statements {
            if let Err(error) = self.run(user, sql).await {
                panic!("{user}: {sql}: {error}");
            }
        }
    }

    /// The rows of a statement that must succeed, each rendered as `a|b|NULL`.
    pub async fn rows(&self, user: &str, sql: &str) -> Vec<String> {
        match self.run(user, sql).await {
            Ok(result) => render(&result),
            Err(error) => panic!("{user}: {sql}: {error}"),
        }
    }
}

pub fn render(result: &StatementResult) -> Vec<String> {
    result
        .data_array()
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| cell.unwrap_or_else(|| "NULL".to_owned()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn identity(kind: IdentityKind, name: &str) -> NewIdentity {
    NewIdentity {
        kind,
        name: name.to_owned(),
        display_name: name.to_owned(),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    }
}

/// The policy scenario of the issue: `main.sales.customers` with a row filter (EU rows, or everything for admins)
/// and an email mask (clear only for the user `admin`), `main.sales.orders` without policies, a view over the
/// customers owned by alice, and a scratch schema where bob may create tables.
pub async fn policy_fixture() -> Fixture {
    let fixture = Fixture::new().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE CATALOG main",
                "CREATE SCHEMA main.sales",
                "CREATE SCHEMA main.scratch",
                "CREATE TABLE main.sales.customers (id INT, name STRING, email STRING, region STRING, amount INT)",
                "INSERT INTO main.sales.customers VALUES \
                 (1, 'Ann', 'ann@x.eu', 'EU', 10), (2, 'Ben', 'ben@x.us', 'US', 20), \
                 (3, 'Cid', 'cid@x.eu', 'EU', 30), (4, 'Dee', 'dee@x.us', 'US', 40), \
                 (5, 'Eve', 'eve@x.zz', NULL, 50)",
                "CREATE TABLE main.sales.orders (id INT, customer_id INT, total INT)",
                "INSERT INTO main.sales.orders VALUES (100, 1, 5), (101, 2, 6), (102, 3, 7), (103, 4, 8), (104, 5, 9)",
                "CREATE TABLE main.sales.secret (x INT)",
                "CREATE FUNCTION main.sales.region_filter(r STRING) RETURNS BOOLEAN \
                 RETURN r = 'EU' OR is_account_group_member('admins')",
                "CREATE FUNCTION main.sales.mask_email(e STRING) RETURNS STRING \
                 RETURN CASE WHEN current_user() = 'admin' THEN e ELSE '***' END",
                "ALTER TABLE main.sales.customers SET ROW FILTER main.sales.region_filter ON (region)",
                "ALTER TABLE main.sales.customers ALTER COLUMN email SET MASK main.sales.mask_email",
                "GRANT USE CATALOG ON CATALOG main TO bob",
                "GRANT USE CATALOG ON CATALOG main TO alice",
                "GRANT USE SCHEMA ON SCHEMA main.sales TO bob",
                "GRANT USE SCHEMA, CREATE TABLE, CREATE VIEW ON SCHEMA main.sales TO alice",
                "GRANT USE SCHEMA, CREATE TABLE ON SCHEMA main.scratch TO bob",
                "GRANT SELECT ON TABLE main.sales.customers TO bob",
                "GRANT SELECT ON TABLE main.sales.customers TO alice",
                "GRANT SELECT ON TABLE main.sales.orders TO bob",
            ],
        )
        .await;
    fixture
        .setup(
            "alice",
            &[
                "CREATE VIEW main.sales.customer_view AS SELECT id, email, region FROM main.sales.customers",
                "GRANT SELECT ON VIEW main.sales.customer_view TO bob",
            ],
        )
        .await;
    fixture
}

/// The functions scenario: `policy_fixture` plus Unity Catalog SQL functions that read tables, all owned by `admin`
/// (who reads everything in clear) and executable by `bob`, so whatever `bob` gets through them is what the
/// policies evaluated for `bob` allow:
/// - `main.sales.tiers`, which `bob` cannot read, with a row filter hiding the `gold` tier from everyone but `admins`;
/// - scalar functions: `max_email()` (an aggregate over the masked column), `email_of(cid)` (one customer's email),
///   `customer_total(cid)` (the sum of a customer's orders);
/// - table functions: `customer_rows()` (every column of the customers), `customers_in(r)` (the customers of a
///   region), `customer_tiers()` (the customers joined with the tiers `bob` cannot read).
pub async fn function_fixture() -> Fixture {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE TABLE main.sales.tiers (customer_id INT, tier STRING)",
                "INSERT INTO main.sales.tiers VALUES \
                 (1, 'gold'), (2, 'silver'), (3, 'bronze'), (4, 'gold'), (5, 'silver')",
                "CREATE FUNCTION main.sales.hide_gold(t STRING) RETURNS BOOLEAN \
                 RETURN t <> 'gold' OR is_account_group_member('admins')",
                "ALTER TABLE main.sales.tiers SET ROW FILTER main.sales.hide_gold ON (tier)",
                "CREATE FUNCTION main.sales.max_email() RETURNS STRING \
                 RETURN (SELECT max(email) FROM main.sales.customers)",
                // Aggregated by its author; the engine wraps an unaggregated body itself (see the `single_row`
                // module and `lookup_functions_answer_per_row_and_refuse_many_rows`).
                "CREATE FUNCTION main.sales.email_of(cid INT) RETURNS STRING \
                 RETURN (SELECT max(email) FROM main.sales.customers WHERE id = cid)",
                "CREATE FUNCTION main.sales.customer_total(cid INT) RETURNS INT \
                 RETURN (SELECT CAST(sum(total) AS INT) FROM main.sales.orders WHERE customer_id = cid)",
                "CREATE FUNCTION main.sales.customer_rows() \
                 RETURNS TABLE (id INT, name STRING, email STRING, region STRING, amount INT) \
                 RETURN SELECT id, name, email, region, amount FROM main.sales.customers",
                "CREATE FUNCTION main.sales.customers_in(r STRING) RETURNS TABLE (id INT, email STRING) \
                 RETURN SELECT id, email FROM main.sales.customers WHERE region = r",
                "CREATE FUNCTION main.sales.customer_tiers() RETURNS TABLE (id INT, email STRING, tier STRING) \
                 RETURN SELECT c.id, c.email, t.tier FROM main.sales.customers c \
                 JOIN main.sales.tiers t ON c.id = t.customer_id",
                "GRANT EXECUTE ON FUNCTION main.sales.max_email TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.email_of TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.customer_total TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.customer_rows TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.customers_in TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.customer_tiers TO bob",
            ],
        )
        .await;
    fixture
}
