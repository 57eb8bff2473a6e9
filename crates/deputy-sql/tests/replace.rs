//! CREATE OR REPLACE TABLE and CREATE TABLE IF NOT EXISTS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use common::policy_fixture;
use deputy_sql::SqlError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_table_keeps_its_grants_and_owner() {
    let fixture = policy_fixture().await;
    let grants_before = fixture
        .rows("admin", "SHOW GRANTS ON TABLE main.sales.orders")
        .await;
    assert!(!grants_before.is_empty());
    fixture
        .setup(
            "admin",
            &["CREATE OR REPLACE TABLE main.sales.orders (code STRING COMMENT 'new', n BIGINT)"],
        )
        .await;
    assert_eq!(
        fixture.rows("admin", "DESCRIBE orders").await,
        ["code|string|new", "n|bigint|NULL"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SHOW GRANTS ON TABLE main.sales.orders")
            .await,
        grants_before
    );
    // bob's SELECT on the old table reads the new, empty one.
    assert_eq!(
        fixture.rows("bob", "SELECT count(*) FROM orders").await,
        ["0"]
    );
    fixture
        .setup("admin", &["INSERT INTO orders VALUES ('a', 1), ('b', 2)"])
        .await;
    // CTAS may read the table it replaces.
    fixture
        .setup(
            "admin",
            &["CREATE OR REPLACE TABLE orders AS SELECT upper(code) AS code, n * 10 AS n FROM orders WHERE n > 1"],
        )
        .await;
    assert_eq!(
        fixture.rows("bob", "SELECT code, n FROM orders").await,
        ["B|20"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SHOW GRANTS ON TABLE main.sales.orders")
            .await,
        grants_before
    );
    // OR REPLACE of a missing table creates it, owned by its creator.
    fixture
        .setup(
            "bob",
            &["CREATE OR REPLACE TABLE main.scratch.fresh AS SELECT 1 AS x"],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT x FROM main.scratch.fresh")
            .await,
        ["1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_table_keeps_its_policies() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &["CREATE OR REPLACE TABLE main.sales.customers AS \
               SELECT * FROM (VALUES (7, 'Gus', 'gus@x.eu', 'EU', 1), (8, 'Hal', 'hal@x.us', 'US', 2)) \
               AS v(id, name, email, region, amount)"],
        )
        .await;
    // The row filter and the mask apply to the new rows.
    assert_eq!(
        fixture.rows("bob", "SELECT id, email FROM customers").await,
        ["7|***"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT id, email FROM customers ORDER BY id")
            .await,
        ["7|gus@x.eu", "8|hal@x.us"]
    );
    // A definition without a policy's column is refused, and the table is unchanged.
    let error = fixture
        .run(
            "admin",
            "CREATE OR REPLACE TABLE main.sales.customers (id INT, region STRING)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::InvalidInput(_)), "{error}");
    let error = fixture
        .run(
            "admin",
            "CREATE OR REPLACE TABLE main.sales.customers (id INT, email STRING)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Analysis(_)), "{error}");
    assert_eq!(
        fixture
            .rows("admin", "SELECT id, email FROM customers ORDER BY id")
            .await,
        ["7|gus@x.eu", "8|hal@x.us"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_needs_ownership_and_a_table() {
    let fixture = policy_fixture().await;
    // alice may create tables in the schema and read customers, but does not own it.
    let error = fixture
        .run(
            "alice",
            "CREATE OR REPLACE TABLE main.sales.customers (x INT)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::PermissionDenied(_)), "{error}");
    let error = fixture
        .run(
            "admin",
            "CREATE OR REPLACE TABLE main.sales.customer_view (x INT)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::InvalidInput(_)), "{error}");
    let error = fixture
        .run("admin", "CREATE OR REPLACE VIEW main.sales.v AS SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Syntax(_)), "{error}");
    assert_eq!(
        fixture
            .rows("admin", "SELECT count(*) FROM customers")
            .await,
        ["5"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_not_exists_leaves_an_existing_table_alone() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE TABLE IF NOT EXISTS main.sales.orders (other STRING)",
                "CREATE TABLE IF NOT EXISTS main.sales.orders AS SELECT 1 AS other",
                "CREATE TABLE IF NOT EXISTS main.sales.brand_new (x INT)",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows("admin", "SELECT count(*), sum(total) FROM orders")
            .await,
        ["5|35"]
    );
    assert_eq!(
        fixture.rows("admin", "DESCRIBE main.sales.brand_new").await,
        ["x|int|NULL"]
    );
    let error = fixture
        .run("admin", "CREATE TABLE main.sales.orders (other STRING)")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::AlreadyExists { .. }), "{error}");
}
