//! The adversarial table of issue 4: every query shape a restricted user could use to read around a row filter and
//! a column mask returns exactly the permitted rows and masked values, written inline or through functions that read
//! the tables (`tests/functions.rs` has the rest of the functions' cases).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use common::{function_fixture, policy_fixture, render};
use deputy_sql::SqlError;

/// `bob` sees the EU customers (ids 1 and 3) with masked emails; `admin` sees all five in clear.
const BOB_CASES: &[(&str, &str, &[&str])] = &[
    (
        "plain select",
        "SELECT id, email FROM main.sales.customers ORDER BY id",
        &["1|***", "3|***"],
    ),
    (
        "select star",
        "SELECT * FROM customers ORDER BY id",
        &["1|Ann|***|EU|10", "3|Cid|***|EU|30"],
    ),
    (
        "join",
        "SELECT c.id, o.total FROM customers c JOIN orders o ON c.id = o.customer_id ORDER BY c.id",
        &["1|5", "3|7"],
    ),
    (
        "outer join keeps other rows but no hidden customer",
        "SELECT o.id, c.email FROM orders o LEFT JOIN customers c ON c.id = o.customer_id ORDER BY o.id",
        &["100|***", "101|NULL", "102|***", "103|NULL", "104|NULL"],
    ),
    (
        "self-join",
        "SELECT a.id, b.id FROM customers a JOIN customers b ON a.region = b.region AND a.id < b.id",
        &["1|3"],
    ),
    (
        "cte",
        "WITH x AS (SELECT * FROM customers) SELECT count(*), sum(amount) FROM x",
        &["2|40"],
    ),
    (
        "subquery in where",
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers) ORDER BY id",
        &["100", "102"],
    ),
    (
        "exists subquery",
        "SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)",
        &["2"],
    ),
    (
        "subquery in from",
        "SELECT count(*) FROM (SELECT email FROM customers WHERE email LIKE '%@%') t",
        &["0"],
    ),
    (
        "subquery in select",
        "SELECT (SELECT max(amount) FROM customers)",
        &["30"],
    ),
    (
        "union",
        "SELECT region FROM customers UNION SELECT region FROM customers",
        &["EU"],
    ),
    (
        "union all",
        "SELECT email FROM customers UNION ALL SELECT email FROM customers",
        &["***", "***", "***", "***"],
    ),
    ("count star", "SELECT count(*) FROM customers", &["2"]),
    (
        "aggregates",
        "SELECT count(*), sum(amount), min(id), max(id), min(email), max(email) FROM customers",
        &["2|40|1|3|***|***"],
    ),
    (
        "group by",
        "SELECT region, count(*) FROM customers GROUP BY region ORDER BY region",
        &["EU|2"],
    ),
    (
        "group by the null region",
        "SELECT count(*) FROM customers WHERE region IS NULL",
        &["0"],
    ),
    (
        "window functions",
        "SELECT id, sum(amount) OVER (), row_number() OVER (ORDER BY id), lag(email) OVER (ORDER BY id) \
         FROM customers ORDER BY id",
        &["1|40|1|NULL", "3|40|2|***"],
    ),
    (
        "view defined by another user",
        "SELECT id, email, region FROM main.sales.customer_view ORDER BY id",
        &["1|***|EU", "3|***|EU"],
    ),
    (
        "filter on the masked column with a real value",
        "SELECT id FROM customers WHERE email = 'ann@x.eu'",
        &[],
    ),
    (
        "filter on the masked column with a prefix",
        "SELECT count(*) FROM customers WHERE email LIKE 'ben%' OR email LIKE 'ann%'",
        &["0"],
    ),
    (
        "filter on the masked value",
        "SELECT id FROM customers WHERE email = '***' ORDER BY id",
        &["1", "3"],
    ),
    (
        "filter on a hidden row's values",
        "SELECT count(*) FROM customers WHERE region = 'US' OR id IN (2, 4, 5)",
        &["0"],
    ),
    (
        "errors cannot probe hidden rows",
        "SELECT id FROM customers WHERE 1 / (CASE WHEN region = 'US' THEN 0 ELSE 1 END) = 1 ORDER BY id",
        &["1", "3"],
    ),
    (
        "limit",
        "SELECT id FROM customers ORDER BY id DESC LIMIT 5",
        &["3", "1"],
    ),
    (
        "masked column through an expression",
        "SELECT DISTINCT length(email), upper(email) FROM customers",
        &["3|***"],
    ),
    // Through functions `admin` owns (see `function_fixture`): they read with his rights, the policies still
    // evaluate for bob.
    (
        "function reading a masked column, also inside an aggregate",
        "SELECT main.sales.max_email(), main.sales.email_of(1), main.sales.email_of(2)",
        &["***|***|NULL"],
    ),
    (
        "function called per row cannot reach a hidden row",
        "SELECT o.id, main.sales.email_of(o.customer_id) FROM orders o ORDER BY o.id",
        &["100|***", "101|NULL", "102|***", "103|NULL", "104|NULL"],
    ),
    (
        "table function over a filtered table",
        "SELECT * FROM main.sales.customer_rows() ORDER BY id",
        &["1|Ann|***|EU|10", "3|Cid|***|EU|30"],
    ),
    (
        "table function asked for hidden rows",
        "SELECT count(*) FROM main.sales.customers_in('US')",
        &["0"],
    ),
    (
        "function body joining a table the caller cannot read",
        "SELECT * FROM main.sales.customer_tiers() ORDER BY id",
        &["3|***|bronze"],
    ),
    (
        "subquery over a table function",
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM main.sales.customer_rows()) ORDER BY id",
        &["100", "102"],
    ),
    (
        "cte over a table function",
        "WITH x AS (SELECT * FROM main.sales.customer_rows()) SELECT count(*), sum(amount), max(email) FROM x",
        &["2|40|***"],
    ),
    (
        "filter on the masked column through a table function",
        "SELECT id FROM main.sales.customer_rows() WHERE email = 'ann@x.eu' OR email LIKE 'ben%'",
        &[],
    ),
    (
        "errors cannot probe hidden rows through a table function",
        "SELECT id FROM main.sales.customer_rows() \
         WHERE 1 / (CASE WHEN region = 'US' THEN 0 ELSE 1 END) = 1 ORDER BY id",
        &["1", "3"],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_user_sees_only_permitted_rows_and_masked_values() {
    let fixture = function_fixture().await;
    let mut failures = Vec::new();
    for (case, sql, expected) in BOB_CASES {
        match fixture.run("bob", sql).await {
            Ok(result) => {
                let mut rows = render(&result);
                let mut expected: Vec<String> =
                    expected.iter().map(|row| row.to_string()).collect();
                if !sql.contains("ORDER BY") {
                    rows.sort();
                    expected.sort();
                }
                if rows != expected {
                    failures.push(format!(
                        "{case}: {sql}\n  expected {expected:?}\n  got      {rows:?}"
                    ));
                }
            }
            Err(error) => failures.push(format!("{case}: {sql}\n  failed: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_evaluate_for_the_session_user() {
    let fixture = policy_fixture().await;
    // The admin is in `admins` (every row) and is the user the mask shows clear values to.
    assert_eq!(
        fixture
            .rows("admin", "SELECT id, email FROM customers ORDER BY id")
            .await,
        [
            "1|ann@x.eu",
            "2|ben@x.us",
            "3|cid@x.eu",
            "4|dee@x.us",
            "5|eve@x.zz"
        ]
    );
    // Through alice's view the admin still sees everything: the view runs with alice's rights, the policies with
    // the session's user.
    assert_eq!(
        fixture
            .rows("admin", "SELECT count(*), min(email) FROM customer_view")
            .await,
        ["5|ann@x.eu"]
    );
    // Alice, the view's owner, is restricted like bob.
    assert_eq!(
        fixture
            .rows("alice", "SELECT id, email FROM customer_view ORDER BY id")
            .await,
        ["1|***", "3|***"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_policy_and_no_data() {
    let fixture = policy_fixture().await;
    let text = fixture
        .rows(
            "bob",
            "EXPLAIN SELECT email FROM customers WHERE email = 'ann@x.eu'",
        )
        .await
        .join("\n");
    assert!(text.contains("DeputyPolicyExec"), "{text}");
    // The filter and the mask are in the plan, under the user's predicate, not bypassed.
    assert!(text.contains("main.sales.region_filter(region"), "{text}");
    assert!(text.contains("main.sales.mask_email(email"), "{text}");
    // For the admin the filter folds to `true` (`is_account_group_member('admins')`): no filter is evaluated at all.
    let text = fixture
        .rows("admin", "EXPLAIN SELECT email FROM customers")
        .await
        .join("\n");
    assert!(text.contains("DeputyPolicyExec"), "{text}");
    assert!(!text.contains("region_filter"), "{text}");
    assert!(
        !text.contains("ben@x.us") && !text.contains("cid@x.eu"),
        "{text}"
    );
    let analyzed = fixture
        .rows("bob", "EXPLAIN ANALYZE SELECT count(*) FROM customers")
        .await
        .join("\n");
    assert!(analyzed.contains("DeputyPolicyExec"), "{analyzed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_lists_only_visible_objects() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE CATALOG hidden",
                "CREATE SCHEMA hidden.s",
                "CREATE TABLE hidden.s.t (x INT)",
            ],
        )
        .await;
    let tables = "SELECT table_catalog || '.' || table_schema || '.' || table_name FROM information_schema.tables \
                  WHERE table_schema <> 'information_schema' ORDER BY 1";
    assert_eq!(
        fixture.rows("bob", tables).await,
        [
            "main.sales.customer_view",
            "main.sales.customers",
            "main.sales.orders"
        ]
    );
    let everything = fixture.rows("admin", tables).await;
    assert!(
        everything.contains(&"main.sales.secret".to_owned())
            && everything.contains(&"hidden.s.t".to_owned()),
        "{everything:?}"
    );
    // Columns of hidden tables are absent too; the visible ones are listed whatever their masks.
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT DISTINCT table_name FROM main.information_schema.columns \
                 WHERE table_schema = 'sales' ORDER BY 1"
            )
            .await,
        ["customer_view", "customers", "orders"]
    );
    // Through a hidden catalog's name bob gets what a missing one gives him: his own visible objects.
    let through_hidden = fixture
        .rows(
            "bob",
            "SELECT * FROM hidden.information_schema.tables ORDER BY 1, 2, 3",
        )
        .await;
    assert_eq!(
        through_hidden,
        fixture
            .rows(
                "bob",
                "SELECT * FROM absent.information_schema.tables ORDER BY 1, 2, 3"
            )
            .await
    );
    assert!(
        !through_hidden
            .iter()
            .any(|row| row.contains("hidden") || row.contains("secret")),
        "{through_hidden:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctas_copies_only_what_the_user_may_see() {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "bob",
            &["CREATE TABLE main.scratch.mine AS SELECT * FROM main.sales.customers"],
        )
        .await;
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT id, email, region FROM main.scratch.mine ORDER BY id"
            )
            .await,
        ["1|***|EU", "3|***|EU"]
    );
    // The admin reading bob's copy sees what bob copied: the masked values are data now.
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT count(*), min(email) FROM main.scratch.mine"
            )
            .await,
        ["2|***"]
    );
    // INSERT ... SELECT is bound by the same policies.
    fixture
        .setup(
            "bob",
            &["INSERT INTO main.scratch.mine SELECT * FROM main.sales.customers WHERE id > 1"],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT id FROM main.scratch.mine ORDER BY id")
            .await,
        ["1", "3", "3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_policies_needs_ownership_and_execute() {
    let fixture = policy_fixture().await;
    let error = fixture
        .run("bob", "ALTER TABLE main.sales.customers DROP ROW FILTER")
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::PermissionDenied(_)), "{error}");
    // bob owns his table but cannot execute the admin's function: it is invisible to him.
    fixture
        .setup("bob", &["CREATE TABLE main.scratch.t (region STRING)"])
        .await;
    let error = fixture
        .run(
            "bob",
            "ALTER TABLE main.scratch.t SET ROW FILTER main.sales.region_filter ON (region)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::FunctionNotFound(_)), "{error}");
    // Policy functions run with the owner's rights: bob needs no EXECUTE to read the table...
    let error = fixture
        .run("bob", "SELECT main.sales.mask_email('x')")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SqlError::PermissionDenied(message) if message.contains("EXECUTE on function")),
        "{error}"
    );
    // ...and once granted, the function answers for him.
    fixture
        .setup(
            "admin",
            &["GRANT EXECUTE ON FUNCTION main.sales.mask_email TO bob"],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT main.sales.mask_email('x')")
            .await,
        ["***"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT main.sales.mask_email('x')")
            .await,
        ["x"]
    );
    // A row filter must return BOOLEAN and take as many columns as named.
    let error = fixture
        .run(
            "admin",
            "ALTER TABLE main.sales.orders SET ROW FILTER main.sales.mask_email ON (id)",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SqlError::Analysis(_)), "{error}");
    // Dropping the policies restores the table for bob.
    fixture
        .setup(
            "admin",
            &[
                "ALTER TABLE main.sales.customers DROP ROW FILTER",
                "ALTER TABLE main.sales.customers ALTER COLUMN email DROP MASK",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT count(*), max(email) FROM customers")
            .await,
        ["5|eve@x.zz"]
    );
}
