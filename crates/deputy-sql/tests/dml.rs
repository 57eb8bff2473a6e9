//! DELETE and UPDATE: results, privileges, the row filter and masks of the caller, and atomic rewrites.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::sync::Arc;

use common::{Fixture, policy_fixture};
use deputy_sql::{SqlError, StatementParameter};

async fn affected(fixture: &Fixture, user: &str, sql: &str) -> Vec<String> {
    fixture.rows(user, sql).await
}

/// Every entry of the warehouse's `tables/` directory, sorted.
fn table_entries(fixture: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = walk(&fixture.temporary.dir().join("data").join("tables"));
    names.sort();
    names
}

fn walk(directory: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.display().to_string());
        if path.is_dir() {
            found.extend(walk(&path));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_update_change_only_matching_rows() {
    let fixture = policy_fixture().await;
    assert_eq!(
        affected(&fixture, "admin", "DELETE FROM orders WHERE total > 7").await,
        ["2"]
    );
    assert_eq!(
        affected(
            &fixture,
            "admin",
            "UPDATE main.sales.orders SET total = total * 10, customer_id = NULL WHERE id IN (100, 102)"
        )
        .await,
        ["2"]
    );
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT id, customer_id, total FROM orders ORDER BY id"
            )
            .await,
        ["100|NULL|50", "101|2|6", "102|NULL|70"]
    );
    // A subquery in WHERE reads other tables through the caller's catalog.
    assert_eq!(
        affected(
            &fixture,
            "admin",
            "DELETE FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE region = 'US')"
        )
        .await,
        ["1"]
    );
    // An alias, and a parameter.
    let result = fixture
        .engine
        .execute(
            &fixture.session("admin"),
            "UPDATE orders o SET total = :total WHERE o.id = 100",
            &[StatementParameter {
                name: "total".to_owned(),
                value: Some("1".to_owned()),
                type_name: Some("INT".to_owned()),
            }],
            deputy_sql::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(common::render(&result), ["1"]);
    assert_eq!(result.columns()[0].name, "num_affected_rows");
    assert_eq!(
        fixture
            .rows("admin", "SELECT id, total FROM orders ORDER BY id")
            .await,
        ["100|1", "102|70"]
    );
    // No match changes nothing; no WHERE deletes everything.
    assert_eq!(
        affected(
            &fixture,
            "admin",
            "UPDATE orders SET total = 0 WHERE id = 999"
        )
        .await,
        ["0"]
    );
    assert_eq!(
        affected(&fixture, "admin", "DELETE FROM orders").await,
        ["2"]
    );
    assert_eq!(
        fixture.rows("admin", "SELECT count(*) FROM orders").await,
        ["0"]
    );
    // The table still takes rows, and the rewritten version is what a restarted engine reads.
    fixture
        .setup("admin", &["INSERT INTO orders VALUES (200, 1, 3)"])
        .await;
    let engine = fixture.restart_engine();
    let rows = common::render(
        &fixture
            .run_on(&engine, "admin", "SELECT id, total FROM orders")
            .await
            .unwrap(),
    );
    assert_eq!(rows, ["200|3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_cannot_reach_rows_the_row_filter_hides() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &["GRANT MODIFY ON TABLE main.sales.customers TO bob"],
        )
        .await;
    // bob sees the EU customers 1 and 3 only.
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "DELETE FROM customers WHERE id IN (2, 4, 5)"
        )
        .await,
        ["0"]
    );
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET amount = 0 WHERE region = 'US'"
        )
        .await,
        ["0"]
    );
    // The statement's expressions never run on a hidden row, so an error cannot reveal one.
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET amount = amount + 1 / (CASE WHEN region = 'US' OR region IS NULL THEN 0 ELSE 1 END) \
             WHERE 1 / (CASE WHEN region = 'US' OR region IS NULL THEN 0 ELSE 1 END) = 1"
        )
        .await,
        ["2"]
    );
    assert_eq!(
        affected(&fixture, "bob", "DELETE FROM customers").await,
        ["2"]
    );
    // The hidden rows are untouched, values included.
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT id, email, region, amount FROM customers ORDER BY id"
            )
            .await,
        ["2|ben@x.us|US|20", "4|dee@x.us|US|40", "5|eve@x.zz|NULL|50"]
    );
    assert_eq!(
        fixture.rows("bob", "SELECT count(*) FROM customers").await,
        ["0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_sees_masked_values_and_keeps_stored_ones() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &["GRANT MODIFY ON TABLE main.sales.customers TO bob"],
        )
        .await;
    // A predicate on the masked column compares the mask, as in a SELECT.
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "DELETE FROM customers WHERE email = 'ann@x.eu'"
        )
        .await,
        ["0"]
    );
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET amount = 7 WHERE email LIKE 'cid%'"
        )
        .await,
        ["0"]
    );
    // Copying the masked column elsewhere copies the mask, directly or through a subquery or an expression.
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET name = email, region = (SELECT max(email) FROM customers) WHERE id = 1"
        )
        .await,
        ["1"]
    );
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET name = upper(email) || '!' WHERE id = 3"
        )
        .await,
        ["1"]
    );
    // The admin sees what bob wrote, and the stored emails bob never assigned are intact.
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT id, name, email, region FROM customers WHERE id IN (1, 3) ORDER BY id"
            )
            .await,
        ["1|***|ann@x.eu|***", "3|***!|cid@x.eu|EU"]
    );
    // Assigning the masked column itself writes what bob gave, and nothing else changes.
    assert_eq!(
        affected(
            &fixture,
            "bob",
            "UPDATE customers SET email = 'new@x.eu' WHERE id = 3"
        )
        .await,
        ["1"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT id, email FROM customers ORDER BY id")
            .await,
        [
            "1|ann@x.eu",
            "2|ben@x.us",
            "3|new@x.eu",
            "4|dee@x.us",
            "5|eve@x.zz"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_needs_modify_and_select() {
    let fixture = policy_fixture().await;
    // bob holds SELECT on orders, not MODIFY.
    for sql in [
        "DELETE FROM orders WHERE id = 100",
        "DELETE FROM orders",
        "UPDATE orders SET total = 0",
    ] {
        let error = fixture.run("bob", sql).await.unwrap_err();
        assert!(
            matches!(error, SqlError::PermissionDenied(_)),
            "{sql}: {error}"
        );
    }
    // carol gets MODIFY without SELECT: she may empty the table, not evaluate expressions over it.
    fixture
        .setup(
            "admin",
            &[
                "GRANT USE CATALOG ON CATALOG main TO carol",
                "GRANT USE SCHEMA ON SCHEMA main.sales TO carol",
                "GRANT MODIFY ON TABLE main.sales.orders TO carol",
            ],
        )
        .await;
    for sql in [
        "DELETE FROM orders WHERE id = 100",
        "UPDATE orders SET total = 0",
    ] {
        let error = fixture.run("carol", sql).await.unwrap_err();
        assert!(
            matches!(&error, SqlError::PermissionDenied(message) if message.contains("SELECT")),
            "{sql}: {error}"
        );
    }
    assert_eq!(
        fixture.rows("admin", "SELECT count(*) FROM orders").await,
        ["5"]
    );
    assert_eq!(
        affected(&fixture, "carol", "DELETE FROM orders").await,
        ["5"]
    );
    // Hidden tables are missing; views are not tables.
    let error = fixture
        .run("bob", "DELETE FROM main.sales.secret")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::TableNotFound(_)), "{error}");
    let error = fixture
        .run("admin", "DELETE FROM main.sales.customer_view")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::InvalidInput(_)), "{error}");
    let error = fixture
        .run("admin", "DELETE FROM orders WHERE random() < 0.5")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Unsupported(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rewrite_leaves_the_table_and_its_files_unchanged() {
    let fixture = policy_fixture().await;
    let before = fixture
        .rows(
            "admin",
            "SELECT id, customer_id, total FROM orders ORDER BY id",
        )
        .await;
    let files = table_entries(&fixture);
    // Row 102 divides by zero after other rows have been rewritten.
    let error = fixture
        .run("admin", "UPDATE orders SET total = 10 / (id - 102)")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Execution(_)), "{error}");
    let error = fixture
        .run("admin", "DELETE FROM orders WHERE 10 / (id - 104) > 0")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Execution(_)), "{error}");
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT id, customer_id, total FROM orders ORDER BY id"
            )
            .await,
        before
    );
    assert_eq!(table_entries(&fixture), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_and_rewrites_lose_nothing() {
    let fixture = Arc::new(policy_fixture().await);
    fixture
        .setup("admin", &["CREATE TABLE main.sales.events (id INT, n INT)"])
        .await;
    let mut tasks = Vec::new();
    for index in 0..40 {
        let fixture = Arc::clone(&fixture);
        tasks.push(tokio::spawn(async move {
            let sql = if index % 4 == 0 {
                "UPDATE events SET n = n + 1".to_owned()
            } else {
                format!("INSERT INTO events VALUES ({index}, 0)")
            };
            fixture.run("admin", &sql).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // Every insert survived every rewrite.
    assert_eq!(
        fixture
            .rows("admin", "SELECT count(*), count(DISTINCT id) FROM events")
            .await,
        ["30|30"]
    );
}
