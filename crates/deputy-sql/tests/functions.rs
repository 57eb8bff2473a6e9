//! Unity Catalog SQL functions that read tables: scalar functions whose body holds scalar subqueries and table
//! functions (`RETURNS TABLE ... RETURN SELECT ...`). They run with their owner's rights (the caller needs EXECUTE,
//! the owner SELECT on what the body reads) while the row filters and column masks of every table the body reads
//! evaluate for the caller, so a function is never a way around a policy. The fixture is `function_fixture`: the
//! policy scenario plus functions `admin` owns and `bob` may execute.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, function_fixture, render};
use deputy_sql::{CancellationToken, SqlError, StatementParameter};

/// The error of a statement that must fail.
async fn error(fixture: &Fixture, user: &str, sql: &str) -> SqlError {
    match fixture.run(user, sql).await {
        Ok(result) => panic!(
            "{user}: {sql}: expected an error, got {:?}",
            render(&result)
        ),
        Err(error) => error,
    }
}

/// The message of a failed statement with the object's name blanked out, and its error code: what a caller learns.
async fn failure(fixture: &Fixture, user: &str, sql: &str, name: &str) -> (String, &'static str) {
    let error = error(fixture, user, sql).await;
    (
        error.to_string().replace(name, "<name>"),
        error.error_code(),
    )
}

/// The rows of a statement that must succeed, run with named parameters `(name, value, type)`.
async fn rows_with(
    fixture: &Fixture,
    user: &str,
    sql: &str,
    parameters: &[(&str, &str, &str)],
) -> Vec<String> {
    let parameters: Vec<StatementParameter> = parameters
        .iter()
        .map(|(name, value, type_name)| StatementParameter {
            name: (*name).to_owned(),
            value: Some((*value).to_owned()),
            type_name: Some((*type_name).to_owned()),
        })
        .collect();
    match fixture
        .engine
        .execute(
            &fixture.session(user),
            sql,
            &parameters,
            CancellationToken::new(),
        )
        .await
    {
        Ok(result) => render(&result),
        Err(error) => panic!("{user}: {sql}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_functions_read_masked_columns_as_the_caller() {
    let fixture = function_fixture().await;
    let sql = "SELECT main.sales.max_email(), main.sales.email_of(1), main.sales.email_of(2)";
    // bob sees the masked value, even as the result of the body's aggregate, and nothing of the hidden customer 2.
    assert_eq!(fixture.rows("bob", sql).await, ["***|***|NULL"]);
    // The same functions for the admin, whom the policies let see everything in clear.
    assert_eq!(
        fixture.rows("admin", sql).await,
        ["eve@x.zz|ann@x.eu|ben@x.us"]
    );
    // Called once per row, with the argument taken from a column.
    let per_row = "SELECT o.id, main.sales.email_of(o.customer_id) FROM orders o ORDER BY o.id";
    assert_eq!(
        fixture.rows("bob", per_row).await,
        ["100|***", "101|NULL", "102|***", "103|NULL", "104|NULL"]
    );
    assert_eq!(
        fixture.rows("admin", per_row).await,
        [
            "100|ann@x.eu",
            "101|ben@x.us",
            "102|cid@x.eu",
            "103|dee@x.us",
            "104|eve@x.zz"
        ]
    );
    // Predicates over the function's results see what the caller sees.
    let probing = "SELECT count(*) FROM orders WHERE main.sales.email_of(customer_id) LIKE '%@%'";
    assert_eq!(fixture.rows("bob", probing).await, ["0"]);
    assert_eq!(fixture.rows("admin", probing).await, ["5"]);
    // The issue's example: a scalar subquery over a table without policies, per customer bob may see.
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT id, main.sales.customer_total(id) FROM customers ORDER BY id"
            )
            .await,
        ["1|5", "3|7"]
    );
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT main.sales.customer_total(2), main.sales.customer_total(99)"
            )
            .await,
        ["6|NULL"]
    );
    // A correlated call inside an aggregate's arguments is beyond what DataFusion decorrelates: refused, never a
    // wrong answer.
    let aggregated = "SELECT count(main.sales.email_of(customer_id)), max(main.sales.email_of(customer_id)) \
                      FROM orders";
    assert!(fixture.run("bob", aggregated).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_functions_apply_the_row_filter_of_the_caller() {
    let fixture = function_fixture().await;
    let all = "SELECT * FROM main.sales.customer_rows() ORDER BY id";
    assert_eq!(
        fixture.rows("bob", all).await,
        ["1|Ann|***|EU|10", "3|Cid|***|EU|30"]
    );
    assert_eq!(
        fixture.rows("admin", all).await,
        [
            "1|Ann|ann@x.eu|EU|10",
            "2|Ben|ben@x.us|US|20",
            "3|Cid|cid@x.eu|EU|30",
            "4|Dee|dee@x.us|US|40",
            "5|Eve|eve@x.zz|NULL|50"
        ]
    );
    // The result has the columns the function declares.
    let result = fixture.run("bob", all).await.unwrap();
    let names: Vec<String> = result
        .columns()
        .into_iter()
        .map(|column| column.name)
        .collect();
    assert_eq!(names, ["id", "name", "email", "region", "amount"]);
    // With an argument: the same function, different rows for each caller.
    let eu = "SELECT * FROM main.sales.customers_in('EU') ORDER BY id";
    let us = "SELECT * FROM main.sales.customers_in('US') ORDER BY id";
    assert_eq!(fixture.rows("bob", eu).await, ["1|***", "3|***"]);
    assert_eq!(fixture.rows("bob", us).await, Vec::<String>::new());
    assert_eq!(
        fixture.rows("admin", eu).await,
        ["1|ann@x.eu", "3|cid@x.eu"]
    );
    assert_eq!(
        fixture.rows("admin", us).await,
        ["2|ben@x.us", "4|dee@x.us"]
    );
    // Joined with another table, and aggregated.
    let joined = "SELECT f.id, o.total FROM main.sales.customers_in('EU') f \
                  JOIN orders o ON o.customer_id = f.id ORDER BY f.id";
    assert_eq!(fixture.rows("bob", joined).await, ["1|5", "3|7"]);
    let grouped = "SELECT coalesce(region, '-'), count(*), sum(amount), max(email) \
                   FROM main.sales.customer_rows() GROUP BY coalesce(region, '-') ORDER BY 1";
    assert_eq!(fixture.rows("bob", grouped).await, ["EU|2|40|***"]);
    assert_eq!(
        fixture.rows("admin", grouped).await,
        ["-|1|50|eve@x.zz", "EU|2|40|cid@x.eu", "US|2|60|dee@x.us"]
    );
    // A copy made through the function holds what bob sees, not what the function's owner sees.
    fixture
        .setup(
            "bob",
            &["CREATE TABLE main.scratch.copied AS SELECT * FROM main.sales.customer_rows()"],
        )
        .await;
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT count(*), max(email) FROM main.scratch.copied"
            )
            .await,
        ["2|***"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_follow_the_caller_whoever_owns_the_function() {
    let fixture = function_fixture().await;
    // alice is restricted like bob; her function reads the customers with her rights.
    fixture
        .setup(
            "admin",
            &["GRANT CREATE FUNCTION ON SCHEMA main.sales TO alice"],
        )
        .await;
    fixture
        .setup(
            "alice",
            &[
                "CREATE FUNCTION main.sales.alice_rows() RETURNS TABLE (id INT, email STRING) \
                 RETURN SELECT id, email FROM main.sales.customers",
                "GRANT EXECUTE ON FUNCTION main.sales.alice_rows TO bob",
            ],
        )
        .await;
    let sql = "SELECT * FROM main.sales.alice_rows() ORDER BY id";
    assert_eq!(fixture.rows("alice", sql).await, ["1|***", "3|***"]);
    assert_eq!(fixture.rows("bob", sql).await, ["1|***", "3|***"]);
    // The admin calling alice's function gets what the policies give the admin, not what they give alice.
    assert_eq!(
        fixture.rows("admin", sql).await,
        [
            "1|ann@x.eu",
            "2|ben@x.us",
            "3|cid@x.eu",
            "4|dee@x.us",
            "5|eve@x.zz"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_may_read_what_the_caller_cannot_under_the_callers_policies() {
    let fixture = function_fixture().await;
    let (hidden, code) = failure(
        &fixture,
        "bob",
        "SELECT * FROM main.sales.tiers",
        "main.sales.tiers",
    )
    .await;
    assert_eq!(code, "NOT_FOUND", "{hidden}");
    // bob cannot read the tiers, the admin who owns the function can: the call is allowed, and both the customers'
    // policies and the tiers' row filter (gold hidden from all but admins) apply to bob.
    let sql = "SELECT * FROM main.sales.customer_tiers() ORDER BY id";
    assert_eq!(fixture.rows("bob", sql).await, ["3|***|bronze"]);
    assert_eq!(
        fixture.rows("admin", sql).await,
        [
            "1|ann@x.eu|gold",
            "2|ben@x.us|silver",
            "3|cid@x.eu|bronze",
            "4|dee@x.us|gold",
            "5|eve@x.zz|silver"
        ]
    );
    let counted = "WITH t AS (SELECT * FROM main.sales.customer_tiers()) \
                   SELECT count(*), count(DISTINCT tier) FROM t WHERE tier = 'gold' OR id IN (1, 2, 4, 5)";
    assert_eq!(fixture.rows("bob", counted).await, ["0|0"]);
    // The caller needs nothing on the tables the body reads: without SELECT on the customers either, bob still
    // gets the same rows through the function, and still nothing directly.
    fixture
        .setup(
            "admin",
            &["REVOKE SELECT ON TABLE main.sales.customers FROM bob"],
        )
        .await;
    assert!(matches!(
        error(&fixture, "bob", "SELECT * FROM main.sales.customers").await,
        SqlError::TableNotFound(_)
    ));
    assert_eq!(fixture.rows("bob", sql).await, ["3|***|bronze"]);
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT * FROM main.sales.customer_rows() ORDER BY id"
            )
            .await,
        ["1|Ann|***|EU|10", "3|Cid|***|EU|30"]
    );
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT main.sales.max_email(), main.sales.email_of(2)"
            )
            .await,
        ["***|NULL"]
    );
    // alice (in `analysts`, SELECT on the customers, none on the tiers) gets the same as bob once her group may
    // execute the function.
    fixture
        .setup(
            "admin",
            &["GRANT EXECUTE ON FUNCTION main.sales.customer_tiers TO analysts"],
        )
        .await;
    assert_eq!(fixture.rows("alice", sql).await, ["3|***|bronze"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_its_owner_cannot_read_is_refused() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "GRANT CREATE FUNCTION ON SCHEMA main.sales TO alice",
                "GRANT SELECT ON TABLE main.sales.orders TO alice",
                "CREATE TABLE main.sales.gone (id INT)",
                "INSERT INTO main.sales.gone VALUES (1)",
                "GRANT SELECT ON TABLE main.sales.gone TO alice",
            ],
        )
        .await;
    // Refused when created: alice cannot read the secret table, which fails like a table that does not exist.
    let hidden = failure(
        &fixture,
        "alice",
        "CREATE FUNCTION main.sales.peek() RETURNS TABLE (x INT) RETURN SELECT x FROM main.sales.secret",
        "main.sales.secret",
    )
    .await;
    let missing = failure(
        &fixture,
        "alice",
        "CREATE FUNCTION main.sales.peek() RETURNS TABLE (x INT) RETURN SELECT x FROM main.sales.nothing",
        "main.sales.nothing",
    )
    .await;
    assert_eq!(hidden, missing);
    assert_eq!(hidden.1, "NOT_FOUND", "{}", hidden.0);
    let hidden_scalar = failure(
        &fixture,
        "alice",
        "CREATE FUNCTION main.sales.peek() RETURNS INT RETURN (SELECT max(x) FROM main.sales.secret)",
        "main.sales.secret",
    )
    .await;
    assert_eq!(hidden_scalar.1, "NOT_FOUND", "{}", hidden_scalar.0);
    // Created while alice could read the orders; bob may execute them.
    fixture
        .setup(
            "alice",
            &[
                "CREATE FUNCTION main.sales.alice_orders() RETURNS TABLE (id INT, total INT) \
                 RETURN SELECT id, total FROM main.sales.orders",
                "CREATE FUNCTION main.sales.alice_total() RETURNS INT \
                 RETURN (SELECT CAST(sum(total) AS INT) FROM main.sales.orders)",
                "CREATE FUNCTION main.sales.alice_gone() RETURNS TABLE (id INT) RETURN SELECT id FROM main.sales.gone",
                "GRANT EXECUTE ON FUNCTION main.sales.alice_orders TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.alice_total TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.alice_gone TO bob",
            ],
        )
        .await;
    // A function of the admin's that calls alice's: each body reads with its own owner's rights.
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.sales.via_alice() RETURNS TABLE (id INT) \
                 RETURN SELECT id FROM main.sales.alice_orders()",
                "GRANT EXECUTE ON FUNCTION main.sales.via_alice TO bob",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT count(*) FROM main.sales.alice_orders()")
            .await,
        ["5"]
    );
    assert_eq!(
        fixture.rows("bob", "SELECT main.sales.alice_total()").await,
        ["35"]
    );
    assert_eq!(
        fixture
            .rows("bob", "SELECT count(*) FROM main.sales.via_alice()")
            .await,
        ["5"]
    );
    assert_eq!(
        fixture
            .rows("bob", "SELECT count(*) FROM main.sales.alice_gone()")
            .await,
        ["1"]
    );
    fixture
        .setup(
            "admin",
            &[
                "REVOKE SELECT ON TABLE main.sales.orders FROM alice",
                "DROP TABLE main.sales.gone",
            ],
        )
        .await;
    // Now the owner cannot read the orders: the calls fail, for bob who may read the orders himself and for the
    // admin who may read everything, exactly as a body reading a dropped table fails.
    let gone = error(
        &fixture,
        "bob",
        "SELECT count(*) FROM main.sales.alice_gone()",
    )
    .await;
    assert!(matches!(gone, SqlError::TableNotFound(_)), "{gone}");
    let gone = gone
        .to_string()
        .replace("main.sales.alice_gone", "<function>")
        .replace("main.sales.gone", "<table>");
    for user in ["bob", "admin"] {
        for sql in [
            "SELECT count(*) FROM main.sales.alice_orders()",
            "SELECT count(*) FROM orders WHERE id IN (SELECT id FROM main.sales.alice_orders())",
        ] {
            let refused = error(&fixture, user, sql).await;
            assert!(
                matches!(refused, SqlError::TableNotFound(_)),
                "{user}: {sql}: {refused}"
            );
            let refused = refused
                .to_string()
                .replace("main.sales.alice_orders", "<function>")
                .replace("main.sales.orders", "<table>");
            assert_eq!(refused, gone, "{user}: {sql}");
        }
        for sql in [
            "SELECT count(*) FROM main.sales.via_alice()",
            "SELECT main.sales.alice_total()",
        ] {
            let refused = error(&fixture, user, sql).await;
            assert!(
                matches!(refused, SqlError::TableNotFound(_)),
                "{user}: {sql}: {refused}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_and_the_usage_chain_are_required() {
    let fixture = function_fixture().await;
    // alice may use main.sales and read the customers but execute none of the functions.
    for sql in [
        "SELECT main.sales.max_email()",
        "SELECT * FROM main.sales.customer_rows()",
        "SELECT count(*) FROM customers WHERE id IN (SELECT id FROM main.sales.customer_rows())",
        "SELECT * FROM main.sales.customer_tiers()",
    ] {
        let refused = error(&fixture, "alice", sql).await;
        assert!(
            matches!(
                refused,
                SqlError::FunctionNotFound(_) | SqlError::PermissionDenied(_)
            ),
            "{sql}: {refused}"
        );
    }
    // carol may execute a function but not use its catalog: it looks missing.
    fixture
        .setup(
            "admin",
            &["GRANT EXECUTE ON FUNCTION main.sales.customer_rows TO carol"],
        )
        .await;
    let refused = failure(
        &fixture,
        "carol",
        "SELECT * FROM main.sales.customer_rows()",
        "main.sales.customer_rows",
    )
    .await;
    let missing = failure(
        &fixture,
        "carol",
        "SELECT * FROM main.sales.no_such_function()",
        "main.sales.no_such_function",
    )
    .await;
    assert_eq!(refused, missing);
    assert_eq!(refused.1, "NOT_FOUND", "{}", refused.0);
    // Granted, the same statement answers for alice; revoked, bob loses it.
    fixture
        .setup(
            "admin",
            &[
                "GRANT EXECUTE ON FUNCTION main.sales.customer_rows TO alice",
                "REVOKE EXECUTE ON FUNCTION main.sales.customer_rows FROM bob",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows(
                "alice",
                "SELECT id, email FROM main.sales.customer_rows() ORDER BY id"
            )
            .await,
        ["1|***", "3|***"]
    );
    let revoked = error(&fixture, "bob", "SELECT * FROM main.sales.customer_rows()").await;
    assert!(
        matches!(
            revoked,
            SqlError::FunctionNotFound(_) | SqlError::PermissionDenied(_)
        ),
        "{revoked}"
    );
}

/// A caller without EXECUTE who can see the function's schema is refused with the privilege named, as Databricks
/// answers (the one exception to "a hidden object fails like a missing one", stated in the `catalog` module).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_execute_a_function_is_refused_naming_execute() {
    let fixture = function_fixture().await;
    let pairs = [
        (
            "SELECT main.sales.max_email()",
            "main.sales.max_email",
            "SELECT main.sales.no_such_function()",
            "main.sales.no_such_function",
        ),
        (
            "SELECT * FROM main.sales.customer_rows()",
            "main.sales.customer_rows",
            "SELECT * FROM main.sales.no_such_function()",
            "main.sales.no_such_function",
        ),
        (
            "SELECT count(*) FROM customers WHERE id IN (SELECT id FROM main.sales.customer_rows())",
            "main.sales.customer_rows",
            "SELECT count(*) FROM customers WHERE id IN (SELECT id FROM main.sales.no_such_function())",
            "main.sales.no_such_function",
        ),
    ];
    let mut differences = Vec::new();
    for (hidden_sql, hidden_name, missing_sql, missing_name) in pairs {
        let hidden = failure(&fixture, "alice", hidden_sql, hidden_name).await;
        let missing = failure(&fixture, "alice", missing_sql, missing_name).await;
        // alice can see the schema, so the refusal names the privilege, as Databricks does; a missing function
        // is just missing.
        if hidden.1 != "PERMISSION_DENIED"
            || !hidden
                .0
                .contains("EXECUTE on function `<name>` is required")
            || missing.1 != "NOT_FOUND"
        {
            differences.push(format!(
                "alice: {hidden_sql}\n  hidden  {hidden:?}\n  missing {missing:?}"
            ));
        }
    }
    fixture
        .setup(
            "admin",
            &["REVOKE EXECUTE ON FUNCTION main.sales.customer_rows FROM bob"],
        )
        .await;
    let revoked = failure(
        &fixture,
        "bob",
        "SELECT * FROM main.sales.customer_rows()",
        "main.sales.customer_rows",
    )
    .await;
    let missing = failure(
        &fixture,
        "bob",
        "SELECT * FROM main.sales.no_such_function()",
        "main.sales.no_such_function",
    )
    .await;
    if revoked.1 != "PERMISSION_DENIED" || missing.1 != "NOT_FOUND" {
        differences.push(format!(
            "bob after REVOKE EXECUTE\n  hidden  {revoked:?}\n  missing {missing:?}"
        ));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_call_functions_with_the_policies_at_every_level() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                // scalar -> table
                "CREATE FUNCTION main.sales.visible_customers() RETURNS BIGINT \
                 RETURN (SELECT count(*) FROM main.sales.customer_rows())",
                "CREATE FUNCTION main.sales.max_row_email() RETURNS STRING \
                 RETURN (SELECT max(email) FROM main.sales.customer_rows())",
                // table -> table
                "CREATE FUNCTION main.sales.rich_customers(min_amount INT) RETURNS TABLE (id INT, email STRING) \
                 RETURN SELECT id, email FROM main.sales.customer_rows() WHERE amount >= min_amount",
                // table -> table and scalar
                "CREATE FUNCTION main.sales.customer_spend() RETURNS TABLE (id INT, email STRING, spent INT) \
                 RETURN SELECT id, main.sales.email_of(id), main.sales.customer_total(id) \
                 FROM main.sales.customer_rows()",
                // scalar -> scalar
                "CREATE FUNCTION main.sales.shout_email(cid INT) RETURNS STRING \
                 RETURN upper(main.sales.email_of(cid))",
                "GRANT EXECUTE ON FUNCTION main.sales.visible_customers TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.max_row_email TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.rich_customers TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.customer_spend TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.shout_email TO bob",
            ],
        )
        .await;
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "SELECT main.sales.visible_customers(), main.sales.max_row_email()",
            &["2|***"],
            &["5|eve@x.zz"],
        ),
        (
            "SELECT * FROM main.sales.rich_customers(20) ORDER BY id",
            &["3|***"],
            &["2|ben@x.us", "3|cid@x.eu", "4|dee@x.us", "5|eve@x.zz"],
        ),
        (
            "SELECT * FROM main.sales.customer_spend() ORDER BY id",
            &["1|***|5", "3|***|7"],
            &[
                "1|ann@x.eu|5",
                "2|ben@x.us|6",
                "3|cid@x.eu|7",
                "4|dee@x.us|8",
                "5|eve@x.zz|9",
            ],
        ),
        (
            "SELECT main.sales.shout_email(1), main.sales.shout_email(2)",
            &["***|NULL"],
            &["ANN@X.EU|BEN@X.US"],
        ),
    ];
    for (sql, bob, admin) in cases {
        assert_eq!(fixture.rows("bob", sql).await, *bob, "bob: {sql}");
        assert_eq!(fixture.rows("admin", sql).await, *admin, "admin: {sql}");
    }
    // The inner functions run with their owner's rights too: bob needs EXECUTE on the function he calls only.
    fixture
        .setup(
            "admin",
            &[
                "REVOKE EXECUTE ON FUNCTION main.sales.customer_rows FROM bob",
                "REVOKE EXECUTE ON FUNCTION main.sales.email_of FROM bob",
                "REVOKE EXECUTE ON FUNCTION main.sales.customer_total FROM bob",
            ],
        )
        .await;
    for (sql, bob, _) in cases {
        assert_eq!(
            fixture.rows("bob", sql).await,
            *bob,
            "bob without EXECUTE on the inner functions: {sql}"
        );
    }
    // (The revocations took: bob cannot call the inner functions himself.)
    let revoked = error(&fixture, "bob", "SELECT main.sales.email_of(1)").await;
    assert!(
        matches!(
            revoked,
            SqlError::FunctionNotFound(_) | SqlError::PermissionDenied(_)
        ),
        "{revoked}"
    );
}

/// How long a statement may take before it counts as hung. Generous: the slowest legitimate statement here is a
/// deep chain of function calls in a debug build.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `test` on a runtime the test does not wait for at the end: a statement stuck planning an endless recursion
/// cannot be interrupted, and dropping a runtime waits for its workers, so a hang would hang the test binary instead
/// of failing the test.
fn abandoning_runtime<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(test())));
    runtime.shutdown_background();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a statement in a task of its own and fails the test if it has not finished within `PATIENCE`.
async fn bounded(fixture: &Arc<Fixture>, user: &str, sql: &str) -> Result<Vec<String>, SqlError> {
    let task = {
        let fixture = Arc::clone(fixture);
        let (user, sql) = (user.to_owned(), sql.to_owned());
        tokio::spawn(async move { fixture.run(&user, &sql).await.map(|result| render(&result)) })
    };
    match tokio::time::timeout(PATIENCE, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => panic!("{user}: {sql}: panicked: {panic}"),
        Err(_) => panic!("{user}: {sql}: still running after {PATIENCE:?}"),
    }
}

/// The rows of a statement that must succeed, within `PATIENCE`.
async fn must(fixture: &Arc<Fixture>, user: &str, sql: &str) -> Vec<String> {
    match bounded(fixture, user, sql).await {
        Ok(rows) => rows,
        Err(error) => panic!("{user}: {sql}: {error}"),
    }
}

/// A cycle (or a chain past the depth bound) is refused with an error, not an internal one, a crash or a hang.
fn assert_refused(sql: &str, error: &SqlError) {
    assert!(
        !matches!(error, SqlError::Internal(_) | SqlError::Canceled),
        "{sql}: refused with {} ({error})",
        error.error_code()
    );
}

/// Runs `closing`, which would close a cycle: either it is refused, or each of `calls`, which would go round the
/// cycle, is.
async fn cycle_refused(fixture: &Arc<Fixture>, closing: &str, calls: &[&str]) {
    match bounded(fixture, "admin", closing).await {
        Err(error) => assert_refused(closing, &error),
        Ok(_) => {
            for call in calls {
                match bounded(fixture, "admin", call).await {
                    Err(error) => assert_refused(call, &error),
                    Ok(rows) => panic!("{call}: a cycle answered {rows:?}"),
                }
            }
        }
    }
}

/// Runs `statements`, which must succeed, as the admin, each within `PATIENCE`.
async fn setup(fixture: &Arc<Fixture>, statements: &[&str]) {
    for sql in statements {
        must(fixture, "admin", sql).await;
    }
}

/// Whatever a cycle left in the catalog, everything else still works, for everyone.
async fn assert_unaffected(fixture: &Arc<Fixture>) {
    assert_eq!(
        must(
            fixture,
            "admin",
            "SELECT count(*) FROM main.sales.customers"
        )
        .await,
        ["5"]
    );
    assert_eq!(
        must(
            fixture,
            "bob",
            "SELECT * FROM main.sales.customers_in('EU') ORDER BY id"
        )
        .await,
        ["1|***", "3|***"]
    );
}

#[test]
fn cycles_made_by_creation_order_are_refused() {
    abandoning_runtime(|| async {
        let fixture = Arc::new(function_fixture().await);
        // Scalar functions: g is dropped and created again calling f, which calls g.
        setup(
            &fixture,
            &[
                "CREATE FUNCTION main.scratch.g() RETURNS INT RETURN 1",
                "CREATE FUNCTION main.scratch.f() RETURNS INT RETURN main.scratch.g() + 1",
            ],
        )
        .await;
        assert_eq!(
            must(&fixture, "admin", "SELECT main.scratch.f()").await,
            ["2"]
        );
        setup(&fixture, &["DROP FUNCTION main.scratch.g"]).await;
        cycle_refused(
            &fixture,
            "CREATE FUNCTION main.scratch.g() RETURNS INT RETURN main.scratch.f() + 1",
            &["SELECT main.scratch.f()", "SELECT main.scratch.g()"],
        )
        .await;
        // Table functions, the same way.
        setup(
            &fixture,
            &[
                "CREATE FUNCTION main.scratch.tg() RETURNS TABLE (x INT) RETURN SELECT 1 AS x",
                "CREATE FUNCTION main.scratch.tf() RETURNS TABLE (x INT) RETURN SELECT x FROM main.scratch.tg()",
            ],
        )
        .await;
        assert_eq!(
            must(&fixture, "admin", "SELECT * FROM main.scratch.tf()").await,
            ["1"]
        );
        setup(&fixture, &["DROP FUNCTION main.scratch.tg"]).await;
        cycle_refused(
            &fixture,
            "CREATE FUNCTION main.scratch.tg() RETURNS TABLE (x INT) \
             RETURN SELECT x + 1 AS x FROM main.scratch.tf()",
            &[
                "SELECT * FROM main.scratch.tf()",
                "SELECT count(*) FROM main.scratch.tg()",
            ],
        )
        .await;
        // A scalar function reading a table function that calls it back.
        setup(
            &fixture,
            &[
                "CREATE FUNCTION main.scratch.one() RETURNS BIGINT RETURN 1",
                "CREATE FUNCTION main.scratch.ones() RETURNS TABLE (x BIGINT) RETURN SELECT main.scratch.one() AS x",
                "CREATE FUNCTION main.scratch.count_ones() RETURNS BIGINT \
                 RETURN (SELECT count(*) FROM main.scratch.ones())",
                "DROP FUNCTION main.scratch.one",
            ],
        )
        .await;
        cycle_refused(
            &fixture,
            "CREATE FUNCTION main.scratch.one() RETURNS BIGINT RETURN main.scratch.count_ones()",
            &[
                "SELECT main.scratch.count_ones()",
                "SELECT * FROM main.scratch.ones()",
            ],
        )
        .await;
        assert_unaffected(&fixture).await;
    });
}

#[test]
fn cycles_made_by_create_or_replace_are_refused() {
    abandoning_runtime(|| async {
        let fixture = Arc::new(function_fixture().await);
        // CREATE OR REPLACE replaces a body...
        setup(
            &fixture,
            &[
                "CREATE FUNCTION main.scratch.k() RETURNS INT RETURN 1",
                "CREATE OR REPLACE FUNCTION main.scratch.k() RETURNS INT RETURN 2",
            ],
        )
        .await;
        assert_eq!(
            must(&fixture, "admin", "SELECT main.scratch.k()").await,
            ["2"]
        );
        // ...but not with one that calls itself...
        setup(
            &fixture,
            &["CREATE FUNCTION main.scratch.h(n INT) RETURNS INT RETURN n"],
        )
        .await;
        cycle_refused(
            &fixture,
            "CREATE OR REPLACE FUNCTION main.scratch.h(n INT) RETURNS INT RETURN main.scratch.h(n - 1) + 1",
            &["SELECT main.scratch.h(3)"],
        )
        .await;
        // ...or a table function that calls back the scalar function that reads it.
        setup(
            &fixture,
            &[
                "CREATE FUNCTION main.scratch.rows_of_s() RETURNS TABLE (x BIGINT) RETURN SELECT 1 AS x",
                "CREATE FUNCTION main.scratch.s() RETURNS BIGINT \
                 RETURN (SELECT count(*) FROM main.scratch.rows_of_s())",
            ],
        )
        .await;
        assert_eq!(
            must(&fixture, "admin", "SELECT main.scratch.s()").await,
            ["1"]
        );
        cycle_refused(
            &fixture,
            "CREATE OR REPLACE FUNCTION main.scratch.rows_of_s() RETURNS TABLE (x BIGINT) \
             RETURN SELECT main.scratch.s() AS x",
            &[
                "SELECT main.scratch.s()",
                "SELECT * FROM main.scratch.rows_of_s()",
            ],
        )
        .await;
        assert_unaffected(&fixture).await;
    });
}

#[test]
fn nesting_is_bounded() {
    abandoning_runtime(|| async {
        let fixture = Arc::new(function_fixture().await);
        // A chain of functions each calling the previous one: a few levels work, a chain far deeper than any
        // reasonable bound is refused, when created or when called.
        chain_is_bounded(
            &fixture,
            "CREATE FUNCTION main.scratch.d0() RETURNS INT RETURN 0",
            |level| {
                format!(
                    "CREATE FUNCTION main.scratch.d{level}() RETURNS INT RETURN main.scratch.d{}() + 1",
                    level - 1
                )
            },
            |level| format!("SELECT main.scratch.d{level}()"),
        )
        .await;
        // The same with table functions.
        chain_is_bounded(
            &fixture,
            "CREATE FUNCTION main.scratch.t0() RETURNS TABLE (x INT) RETURN SELECT 0 AS x",
            |level| {
                format!(
                    "CREATE FUNCTION main.scratch.t{level}() RETURNS TABLE (x INT) \
                     RETURN SELECT x + 1 AS x FROM main.scratch.t{}()",
                    level - 1
                )
            },
            |level| format!("SELECT * FROM main.scratch.t{level}()"),
        )
        .await;
        // Each level calls the previous one twice: a body expanded into its callers doubles at every level. Either
        // it is refused somewhere or it answers 2^levels, in bounded time.
        setup(
            &fixture,
            &["CREATE FUNCTION main.scratch.w0() RETURNS INT RETURN 1"],
        )
        .await;
        let mut widest = 0;
        for level in 1..=24 {
            let sql = format!(
                "CREATE FUNCTION main.scratch.w{level}() RETURNS INT \
                 RETURN main.scratch.w{previous}() + main.scratch.w{previous}()",
                previous = level - 1
            );
            match bounded(&fixture, "admin", &sql).await {
                Ok(_) => widest = level,
                Err(error) => {
                    assert_refused(&sql, &error);
                    break;
                }
            }
        }
        assert!(widest >= 3, "refused at width 2^{}", widest + 1);
        let call = format!("SELECT main.scratch.w{widest}()");
        match bounded(&fixture, "admin", &call).await {
            Ok(rows) => assert_eq!(rows, [(1_i64 << widest).to_string()], "{call}"),
            Err(error) => assert_refused(&call, &error),
        }
        assert_unaffected(&fixture).await;
    });
}

/// Creates `create(1)`, `create(2)`, ... on top of `base` until a level is refused (or 200 levels): a level past 3 must
/// be refused as an analysis error, level 3 must answer 3, and if no level was refused, calling the deepest must be.
async fn chain_is_bounded(
    fixture: &Arc<Fixture>,
    base: &str,
    create: impl Fn(usize) -> String,
    call: impl Fn(usize) -> String,
) {
    setup(fixture, &[base]).await;
    let mut deepest = 0;
    let mut refused = false;
    for level in 1..=200 {
        let sql = create(level);
        match bounded(fixture, "admin", &sql).await {
            Ok(_) => deepest = level,
            Err(error) => {
                assert_refused(&sql, &error);
                assert!(level > 3, "{sql}: refused at depth {level}: {error}");
                refused = true;
                break;
            }
        }
    }
    assert_eq!(must(fixture, "admin", &call(3)).await, ["3"]);
    if !refused {
        let sql = call(deepest);
        match bounded(fixture, "admin", &sql).await {
            Err(error) => assert_refused(&sql, &error),
            Ok(rows) => panic!("{sql}: {deepest} nested calls answered {rows:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_parameters_as_arguments() {
    let fixture = function_fixture().await;
    let sql = "SELECT * FROM main.sales.customers_in(:r) ORDER BY id";
    assert_eq!(
        rows_with(&fixture, "bob", sql, &[("r", "EU", "STRING")]).await,
        ["1|***", "3|***"]
    );
    assert_eq!(
        rows_with(&fixture, "bob", sql, &[("r", "US", "STRING")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        rows_with(&fixture, "admin", sql, &[("r", "US", "STRING")]).await,
        ["2|ben@x.us", "4|dee@x.us"]
    );
    let joined = "SELECT f.id, o.total FROM main.sales.customers_in(:r) f \
                  JOIN orders o ON o.customer_id = f.id WHERE o.total >= :min ORDER BY f.id";
    assert_eq!(
        rows_with(
            &fixture,
            "bob",
            joined,
            &[("r", "EU", "STRING"), ("min", "6", "INT")]
        )
        .await,
        ["3|7"]
    );
    let scalar = "SELECT main.sales.email_of(:cid), main.sales.customer_total(:cid)";
    assert_eq!(
        rows_with(&fixture, "bob", scalar, &[("cid", "2", "INT")]).await,
        ["NULL|6"]
    );
    assert_eq!(
        rows_with(&fixture, "admin", scalar, &[("cid", "2", "INT")]).await,
        ["ben@x.us|6"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_over_a_view() {
    let fixture = function_fixture().await;
    // alice's view, read by the admin's function, for bob: the view runs with alice's rights, the policies for bob.
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.sales.view_rows() RETURNS TABLE (id INT, email STRING, region STRING) \
                 RETURN SELECT id, email, region FROM main.sales.customer_view",
                "CREATE FUNCTION main.sales.view_emails() RETURNS STRING \
                 RETURN (SELECT max(email) FROM main.sales.customer_view)",
                "GRANT EXECUTE ON FUNCTION main.sales.view_rows TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.view_emails TO bob",
            ],
        )
        .await;
    let sql = "SELECT * FROM main.sales.view_rows() ORDER BY id";
    assert_eq!(fixture.rows("bob", sql).await, ["1|***|EU", "3|***|EU"]);
    assert_eq!(
        fixture.rows("admin", sql).await,
        [
            "1|ann@x.eu|EU",
            "2|ben@x.us|US",
            "3|cid@x.eu|EU",
            "4|dee@x.us|US",
            "5|eve@x.zz|NULL"
        ]
    );
    assert_eq!(
        fixture.rows("bob", "SELECT main.sales.view_emails()").await,
        ["***"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT main.sales.view_emails()")
            .await,
        ["eve@x.zz"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_wins_over_a_parameter_of_the_same_name() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                // `region = region` compares the column with itself: every customer with a region.
                "CREATE FUNCTION main.sales.same_region(region STRING) RETURNS BIGINT \
                 RETURN (SELECT count(*) FROM main.sales.customers WHERE region = region)",
                // `id = id` likewise: every customer.
                "CREATE FUNCTION main.sales.same_id(id INT) RETURNS TABLE (id INT, name STRING) \
                 RETURN SELECT id, name FROM main.sales.customers WHERE id = id",
                // A distinct name is the parameter, and so is one qualified by the function's name.
                "CREATE FUNCTION main.sales.by_cid(cid INT) RETURNS TABLE (id INT, name STRING) \
                 RETURN SELECT id, name FROM main.sales.customers WHERE id = cid",
                "CREATE FUNCTION main.sales.by_qualified_id(id INT) RETURNS TABLE (id INT, name STRING) \
                 RETURN SELECT id, name FROM main.sales.customers WHERE id = by_qualified_id.id",
                "GRANT EXECUTE ON FUNCTION main.sales.same_region TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.same_id TO bob",
            ],
        )
        .await;
    // Were the parameter used, 'US' would count 2 for the admin and 0 for bob.
    let scalar = "SELECT main.sales.same_region('US')";
    assert_eq!(fixture.rows("admin", scalar).await, ["4"]);
    assert_eq!(fixture.rows("bob", scalar).await, ["2"]);
    let table = "SELECT id FROM main.sales.same_id(1) ORDER BY id";
    assert_eq!(
        fixture.rows("admin", table).await,
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(fixture.rows("bob", table).await, ["1", "3"]);
    assert_eq!(
        fixture
            .rows("admin", "SELECT * FROM main.sales.by_cid(4)")
            .await,
        ["4|Dee"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT * FROM main.sales.by_qualified_id(4)")
            .await,
        ["4|Dee"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arguments_are_refused_clearly() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.sales.customers_from(min_id INT) RETURNS TABLE (id INT) \
               RETURN SELECT id FROM main.sales.customers WHERE id >= min_id",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT * FROM main.sales.customers_from(4) ORDER BY id"
            )
            .await,
        ["4", "5"]
    );
    for (sql, function) in [
        ("SELECT * FROM main.sales.customers_in()", "customers_in"),
        (
            "SELECT * FROM main.sales.customers_in('EU', 'US')",
            "customers_in",
        ),
        ("SELECT main.sales.email_of()", "email_of"),
        ("SELECT main.sales.email_of(1, 2)", "email_of"),
        ("SELECT main.sales.max_email(1)", "max_email"),
        (
            "SELECT * FROM main.sales.customers_from(DATE '2024-01-01')",
            "customers_from",
        ),
        ("SELECT main.sales.email_of(DATE '2024-01-01')", "email_of"),
    ] {
        let error = error(&fixture, "admin", sql).await;
        assert!(
            matches!(error, SqlError::Analysis(_) | SqlError::Execution(_)),
            "{sql}: {error}"
        );
        assert_eq!(error.error_code(), "BAD_REQUEST", "{sql}: {error}");
        assert!(error.to_string().contains(function), "{sql}: {error}");
    }
    // A string that is no number fails when it is cast to the parameter's type, naming the value, as a cast does.
    for sql in [
        "SELECT * FROM main.sales.customers_from('abc')",
        "SELECT main.sales.email_of('abc')",
    ] {
        let error = error(&fixture, "admin", sql).await;
        assert!(
            matches!(error, SqlError::Analysis(_) | SqlError::Execution(_)),
            "{sql}: {error}"
        );
        assert!(error.to_string().contains("'abc'"), "{sql}: {error}");
    }
    // A table function is not a scalar one, nor the other way round.
    for sql in [
        "SELECT main.sales.customer_rows()",
        "SELECT * FROM main.sales.max_email()",
    ] {
        let error = error(&fixture, "admin", sql).await;
        assert!(!matches!(error, SqlError::Internal(_)), "{sql}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_through_a_function_shows_the_policies_and_no_data() {
    let fixture = function_fixture().await;
    let text = fixture
        .rows(
            "bob",
            "EXPLAIN SELECT email FROM main.sales.customer_rows() WHERE email = 'ann@x.eu'",
        )
        .await
        .join("\n");
    assert!(text.contains("DeputyPolicyExec"), "{text}");
    assert!(text.contains("main.sales.region_filter(region"), "{text}");
    assert!(text.contains("main.sales.mask_email(email"), "{text}");
    assert!(
        !text.contains("ben@x.us") && !text.contains("cid@x.eu"),
        "{text}"
    );
    // The tiers bob cannot read are guarded in the plan as well.
    let text = fixture
        .rows("bob", "EXPLAIN SELECT * FROM main.sales.customer_tiers()")
        .await
        .join("\n");
    assert!(text.contains("main.sales.hide_gold(tier"), "{text}");
    assert!(text.contains("main.sales.region_filter(region"), "{text}");
    // For the admin the filter folds away, as it does inline.
    let text = fixture
        .rows("admin", "EXPLAIN SELECT * FROM main.sales.customer_rows()")
        .await
        .join("\n");
    assert!(text.contains("DeputyPolicyExec"), "{text}");
    assert!(!text.contains("region_filter"), "{text}");
    // A scalar function's plan holds no value bob may not see, even if its subquery was folded to a constant.
    let text = fixture
        .rows(
            "bob",
            "EXPLAIN SELECT main.sales.max_email(), main.sales.email_of(2)",
        )
        .await
        .join("\n");
    assert!(!text.contains("@x."), "{text}");
    let analyzed = fixture
        .rows(
            "bob",
            "EXPLAIN ANALYZE SELECT count(*) FROM main.sales.customer_rows()",
        )
        .await
        .join("\n");
    assert!(analyzed.contains("DeputyPolicyExec"), "{analyzed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_hold_through_functions_as_they_do_inline() {
    let fixture = function_fixture().await;
    // Each query written inline and through `customer_rows()`, whose body is the plain table: same answer for bob
    // and for the admin, whatever the shape.
    let shapes = [
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM {t}) ORDER BY id",
        "SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM {t} c WHERE c.id = o.customer_id)",
        "WITH x AS (SELECT * FROM {t}) SELECT count(*), sum(amount), min(email) FROM x",
        "SELECT (SELECT max(amount) FROM {t})",
        "SELECT a.id, b.id FROM {t} a JOIN {t} b ON a.region = b.region AND a.id < b.id ORDER BY 1, 2",
        "SELECT email FROM {t} UNION ALL SELECT email FROM {t} ORDER BY 1",
        "SELECT id FROM {t} WHERE email = 'ann@x.eu' OR email LIKE 'ben%' ORDER BY id",
        "SELECT count(*) FROM {t} WHERE region = 'US' OR id IN (2, 4, 5)",
        "SELECT id FROM {t} WHERE 1 / (CASE WHEN region = 'US' THEN 0 ELSE 1 END) = 1 ORDER BY id",
        "SELECT id FROM {t} ORDER BY id DESC LIMIT 5",
        "SELECT id, sum(amount) OVER (), lag(email) OVER (ORDER BY id) FROM {t} ORDER BY id",
        "SELECT DISTINCT length(email), upper(email) FROM {t} ORDER BY 1, 2",
    ];
    let mut differences = Vec::new();
    for user in ["bob", "admin"] {
        for shape in shapes {
            let inline = shape.replace("{t}", "main.sales.customers");
            let through = shape.replace("{t}", "main.sales.customer_rows()");
            // Errors count as answers: the admin sees the US rows the division by zero fails on, bob does not.
            let answer = |result: Result<deputy_sql::StatementResult, SqlError>| {
                result
                    .map(|result| render(&result))
                    .map_err(|error| error.to_string())
            };
            let expected = answer(fixture.run(user, &inline).await);
            let got = answer(fixture.run(user, &through).await);
            if got != expected {
                differences.push(format!(
                    "{user}: {through}\n  inline   {expected:?}\n  function {got:?}"
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The shapes do tell bob and the admin apart, so the comparison above is not between two empty answers.
    assert_eq!(
        fixture
            .rows(
                "bob",
                "SELECT count(*), min(email) FROM main.sales.customer_rows()"
            )
            .await,
        ["2|***"]
    );
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT count(*), min(email) FROM main.sales.customer_rows()"
            )
            .await,
        ["5|ann@x.eu"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_functions_may_not_read_tables() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE TABLE main.scratch.t (cid INT, e STRING)",
                "INSERT INTO main.scratch.t VALUES (1, 'a'), (9, 'b')",
                "GRANT SELECT ON TABLE main.scratch.t TO bob",
                "CREATE FUNCTION main.scratch.has_orders(cid INT) RETURNS BOOLEAN \
                 RETURN (SELECT count(*) FROM main.sales.orders WHERE customer_id = cid) > 0",
                "CREATE FUNCTION main.scratch.spends(cid INT) RETURNS BOOLEAN \
                 RETURN main.sales.customer_total(cid) > 0",
                "CREATE FUNCTION main.scratch.first_name(e STRING) RETURNS STRING \
                 RETURN (SELECT min(name) FROM main.sales.customers)",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT main.scratch.has_orders(1), main.scratch.has_orders(9)"
            )
            .await,
        ["true|false"]
    );
    // Refused when set, directly or through a function that reads a table; the table is unchanged.
    for sql in [
        "ALTER TABLE main.scratch.t SET ROW FILTER main.scratch.has_orders ON (cid)",
        "ALTER TABLE main.scratch.t SET ROW FILTER main.scratch.spends ON (cid)",
        "ALTER TABLE main.scratch.t ALTER COLUMN e SET MASK main.scratch.first_name",
    ] {
        let error = error(&fixture, "admin", sql).await;
        assert_eq!(error.error_code(), "BAD_REQUEST", "{sql}: {error}");
    }
    // Nor is a table function a row filter.
    let sql = "ALTER TABLE main.scratch.t SET ROW FILTER main.sales.customer_rows ON (cid)";
    let refused = error(&fixture, "admin", sql).await;
    assert!(
        !matches!(refused, SqlError::Internal(_)),
        "{sql}: {refused}"
    );
    assert_eq!(
        fixture
            .rows("bob", "SELECT cid, e FROM main.scratch.t ORDER BY cid")
            .await,
        ["1|a", "9|b"]
    );
    // Stored anyway, by replacing the body of a function already attached: reading the table fails for everyone
    // the policy applies to, rather than reading around it.
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.scratch.small(cid INT) RETURNS BOOLEAN RETURN cid < 5",
                "CREATE FUNCTION main.scratch.hide(e STRING) RETURNS STRING RETURN '***'",
                "ALTER TABLE main.scratch.t SET ROW FILTER main.scratch.small ON (cid)",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT cid, e FROM main.scratch.t")
            .await,
        ["1|a"]
    );
    fixture
        .setup("admin", &["DROP FUNCTION main.scratch.small"])
        .await;
    // The replacement may be refused itself; either way the filter never reads the orders for bob.
    let _ = fixture
        .run(
            "admin",
            "CREATE FUNCTION main.scratch.small(cid INT) RETURNS BOOLEAN \
             RETURN (SELECT count(*) FROM main.sales.orders WHERE customer_id = cid) > 0",
        )
        .await;
    for sql in [
        "SELECT cid, e FROM main.scratch.t",
        "SELECT count(*) FROM main.scratch.t",
    ] {
        let error = error(&fixture, "bob", sql).await.to_string();
        assert!(
            !error.contains("|a") && !error.contains("'b'"),
            "{sql}: {error}"
        );
    }
    fixture
        .setup(
            "admin",
            &[
                "ALTER TABLE main.scratch.t DROP ROW FILTER",
                "ALTER TABLE main.scratch.t ALTER COLUMN e SET MASK main.scratch.hide",
            ],
        )
        .await;
    assert_eq!(
        fixture
            .rows("bob", "SELECT cid, e FROM main.scratch.t ORDER BY cid")
            .await,
        ["1|***", "9|***"]
    );
    // The same for the mask, dropped and created again reading the customers: the masked column cannot be read.
    fixture
        .setup("admin", &["DROP FUNCTION main.scratch.hide"])
        .await;
    let _ = fixture
        .run(
            "admin",
            "CREATE FUNCTION main.scratch.hide(e STRING) RETURNS STRING \
             RETURN (SELECT min(name) FROM main.sales.customers)",
        )
        .await;
    for sql in [
        "SELECT e FROM main.scratch.t",
        "SELECT * FROM main.scratch.t",
    ] {
        let error = error(&fixture, "bob", sql).await.to_string();
        assert!(!error.contains("Ann"), "{sql}: {error}");
    }
}

/// Scalar functions with parameters calling each other three deep: each inlined body's parameters become the
/// caller's arguments, columns of the calling query included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameterised_scalar_functions_nest() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.scratch.p0(x INT) RETURNS INT \
                 RETURN (SELECT CAST(count(*) AS INT) FROM main.sales.orders) + x",
                "CREATE FUNCTION main.scratch.p1(x INT) RETURNS INT RETURN main.scratch.p0(x) + 1",
                "CREATE FUNCTION main.scratch.p2(y INT) RETURNS INT RETURN main.scratch.p1(y) * 10",
            ],
        )
        .await;
    assert_eq!(
        fixture.rows("admin", "SELECT main.scratch.p2(2)").await,
        ["80"]
    );
    assert_eq!(
        fixture
            .rows(
                "admin",
                "SELECT id, main.scratch.p2(id) FROM main.sales.orders WHERE id <= 101 ORDER BY id"
            )
            .await,
        ["100|1060", "101|1070"]
    );
}

/// A lookup body without an aggregate, `(SELECT email FROM customers WHERE id = cid)`, called once per row of the
/// caller's query: no row gives NULL, one its value (as the caller's policies show it), more than one an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_functions_answer_per_row_and_refuse_many_rows() {
    let fixture = function_fixture().await;
    fixture
        .setup(
            "admin",
            &[
                "CREATE FUNCTION main.sales.plain_email(cid INT) RETURNS STRING \
                 RETURN (SELECT email FROM main.sales.customers WHERE id = cid)",
                "CREATE FUNCTION main.sales.email_in(r STRING) RETURNS STRING \
                 RETURN (SELECT email FROM main.sales.customers WHERE region = r)",
                "GRANT EXECUTE ON FUNCTION main.sales.plain_email TO bob",
                "GRANT EXECUTE ON FUNCTION main.sales.email_in TO bob",
            ],
        )
        .await;
    let per_row = "SELECT o.id, main.sales.plain_email(o.customer_id) FROM orders o ORDER BY o.id";
    assert_eq!(
        fixture.rows("bob", per_row).await,
        ["100|***", "101|NULL", "102|***", "103|NULL", "104|NULL"]
    );
    assert_eq!(
        fixture
            .rows("admin", "SELECT main.sales.plain_email(4)")
            .await,
        ["dee@x.us"]
    );
    // Two EU customers: too many rows for a value, for bob and the admin alike; the US region is hidden from bob.
    for user in ["bob", "admin"] {
        let error = fixture
            .run(user, "SELECT main.sales.email_in('EU')")
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("SCALAR_SUBQUERY_TOO_MANY_ROWS"),
            "{user}: {error}"
        );
    }
    assert_eq!(
        fixture
            .rows("bob", "SELECT main.sales.email_in('US')")
            .await,
        ["NULL"]
    );
}
