//! The catalog client commands against a real `deputy serve`: create a catalog and schema, grant on them, read the
//! grants back as JSON and as effective grants, and ask `why` before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use serde_json::Value;
use support::{Cli, Server};

fn privileges_of(grants: &Value, principal: &str) -> Vec<String> {
    let mut privileges: Vec<String> = grants["privilege_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|assignment| assignment["principal"] == principal)
        .flat_map(|assignment| assignment["privileges"].as_array().unwrap().iter())
        .map(|privilege| privilege.as_str().unwrap().to_owned())
        .collect();
    privileges.sort();
    privileges
}

#[test]
fn catalog_grants_and_why_end_to_end() {
    let (data_dir, server) = Server::start_in_temp_dir();
    let cli = Cli::as_admin(&server, data_dir.path());
    let bob = "bob@example.com";
    cli.ok(&["users", "create", bob]);

    assert_eq!(
        cli.ok(&["catalog", "create", "sales", "--comment", "revenue"]),
        "created catalog sales (owner admin)\n"
    );
    assert_eq!(
        cli.ok(&["catalog", "create-schema", "sales.raw"]),
        "created schema sales.raw (owner admin)\n"
    );
    let catalogs = cli.ok(&["catalog", "list"]);
    assert!(catalogs.starts_with("NAME"), "{catalogs}");
    assert!(
        catalogs.lines().any(
            |line| line.split_whitespace().collect::<Vec<_>>() == ["sales", "admin", "revenue"]
        ),
        "{catalogs}"
    );
    let schemas: Value =
        serde_json::from_str(&cli.ok(&["catalog", "schemas", "sales", "--output", "json"]))
            .unwrap();
    assert_eq!(schemas["schemas"][0]["full_name"], "sales.raw");
    assert_eq!(
        cli.ok(&["catalog", "tables", "sales.raw"]),
        "NAME  TYPE  OWNER  COMMENT\n"
    );

    // Before any grant: denied, with the reason, and still exit code 0.
    let denied = cli.ok(&["why", bob, "browse", "schema:sales.raw"]);
    let mut lines = denied.lines();
    assert_eq!(lines.next(), Some("deny"), "{denied}");
    assert!(
        lines.next().is_some(),
        "a denial names its reason: {denied}"
    );

    // Privileges as SQL spells them and as the wire does.
    cli.ok(&[
        "grants",
        "add",
        "catalog",
        "sales",
        bob,
        "USE CATALOG",
        "select",
    ]);
    cli.ok(&["grants", "add", "schema", "sales.raw", bob, "USE_SCHEMA"]);
    let grants: Value =
        serde_json::from_str(&cli.ok(&["grants", "show", "catalog", "sales", "--output", "json"]))
            .unwrap();
    assert_eq!(privileges_of(&grants, bob), ["SELECT", "USE_CATALOG"]);
    let table = cli.ok(&["grants", "show", "catalog", "sales"]);
    assert!(table.starts_with("PRINCIPAL"), "{table}");
    assert!(
        table.contains(bob) && table.contains("USE_CATALOG"),
        "{table}"
    );

    let effective = cli.ok(&[
        "grants",
        "show",
        "schema",
        "sales.raw",
        "--effective",
        "--principal",
        bob,
    ]);
    assert!(
        effective
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == [bob, "SELECT", "catalog", "sales"]),
        "{effective}"
    );
    assert!(
        effective
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == [bob, "USE_SCHEMA", "(direct)"]),
        "{effective}"
    );

    let allowed = cli.ok(&["why", bob, "browse", "schema:sales.raw"]);
    let mut lines = allowed.lines();
    assert_eq!(lines.next(), Some("allow"), "{allowed}");
    assert!(
        allowed.contains("USE_CATALOG"),
        "the reasons name the grants: {allowed}"
    );
    let why_json: Value = serde_json::from_str(&cli.ok(&[
        "why",
        bob,
        "browse",
        "schema:sales.raw",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(why_json["allowed"], true);

    // Removing USE_CATALOG takes the schema away again.
    let after: Value = serde_json::from_str(&cli.ok(&[
        "grants",
        "remove",
        "catalog",
        "sales",
        bob,
        "USE_CATALOG",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(privileges_of(&after, bob), ["SELECT"]);
    assert!(
        cli.ok(&["why", bob, "browse", "schema:sales.raw"])
            .starts_with("deny\n")
    );

    // Errors exit non-zero with the server's error code.
    let unknown = cli.fails(&["grants", "add", "catalog", "sales", bob, "FLY"]);
    assert!(unknown.contains("INVALID_PARAMETER_VALUE"), "{unknown}");
    assert!(
        cli.fails(&["why", "nobody@example.com", "browse", "schema:sales.raw"])
            .contains("INVALID_PARAMETER_VALUE")
    );
    assert!(
        cli.fails(&["catalog", "create", "a/b"])
            .contains("INVALID_PARAMETER_VALUE")
    );
    assert!(
        cli.fails(&["catalog", "delete", "sales"])
            .contains("INVALID_STATE")
    );
    assert_eq!(
        cli.ok(&["catalog", "delete", "sales", "--force"]),
        "deleted catalog sales\n"
    );
    assert!(!cli.ok(&["catalog", "list"]).contains("sales"));

    assert!(server.stop().success());
}
