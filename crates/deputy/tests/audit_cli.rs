//! `deputy audit retention` and `deputy audit export` against a real `deputy serve`: the retention is set, shown and
//! cleared, bad values are refused with the server's error, and an export over several pages writes every event the
//! API answers, once each and in order, as JSON lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use serde_json::Value;
use support::{Cli, Server, http_get};

/// Every event the admin reads through the API, oldest first (fewer than one page of the API's largest).
fn api_events(server: &Server, cli: &Cli) -> Vec<Value> {
    let (status, body) = http_get(
        server.port,
        "/api/2.0/deputy/audit?limit=1000",
        Some(&cli.token),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["events"].as_array().unwrap().clone()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

#[test]
fn audit_retention_and_export_end_to_end() {
    let (data_dir, server) = Server::start_in_temp_dir();
    let cli = Cli::as_admin(&server, data_dir.path());

    assert_eq!(
        cli.ok(&["audit", "retention", "get"]),
        "audit events are kept forever\n"
    );
    // Each change is audited: twelve changes make events enough for several pages of five.
    for days in 1..=12 {
        cli.ok(&["audit", "retention", "set", "--days", &days.to_string()]);
    }
    assert_eq!(
        cli.ok(&["audit", "retention", "get"]),
        "audit events are kept for 12 days\n"
    );
    assert_eq!(
        cli.json(&["audit", "retention", "get"]),
        serde_json::json!({ "retention_days": 12 })
    );
    let refused = cli.fails(&["audit", "retention", "set", "--days", "0"]);
    assert!(refused.contains("INVALID_PARAMETER_VALUE"), "{refused}");
    cli.fails(&["audit", "retention", "set"]);
    cli.fails(&["audit", "retention", "set", "--days", "3", "--forever"]);
    assert_eq!(
        cli.ok(&["audit", "retention", "set", "--forever"]),
        "audit events are kept forever\n"
    );

    let events = api_events(&server, &cli);
    assert!(events.len() >= 13, "{events:?}");
    let file = data_dir.path().join("audit.jsonl");
    let written = cli.ok(&[
        "audit",
        "export",
        "--page-size",
        "5",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(written, "");
    let exported = json_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(exported, events);
    let seqs: Vec<i64> = exported
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    // The same to standard output, whatever `--output` says, in pages of three.
    let to_stdout = cli.ok(&["audit", "export", "--page-size", "3", "--output", "json"]);
    assert_eq!(json_lines(&to_stdout), events);

    // Filters: a time range (RFC 3339 or epoch milliseconds) and a user.
    let middle = events[events.len() / 2]["time_ms"].as_i64().unwrap();
    let before_middle: Vec<Value> = events
        .iter()
        .filter(|e| e["time_ms"].as_i64().unwrap() < middle)
        .cloned()
        .collect();
    let until = cli.ok(&[
        "audit",
        "export",
        "--page-size",
        "2",
        "--until",
        &middle.to_string(),
    ]);
    assert_eq!(json_lines(&until), before_middle);
    let since = cli.ok(&["audit", "export", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(json_lines(&since), events);
    let future = cli.ok(&["audit", "export", "--since", "2999-01-01T00:00:00+01:00"]);
    assert_eq!(future, "");
    let admin: Vec<Value> = events
        .iter()
        .filter(|e| e["user_name"] == "admin")
        .cloned()
        .collect();
    assert!(admin.len() >= 13);
    let by_user = cli.ok(&["audit", "export", "--user", "admin", "--page-size", "4"]);
    assert_eq!(json_lines(&by_user), admin);
    assert_eq!(
        cli.ok(&["audit", "export", "--user", "nobody@example.com"]),
        ""
    );
    let bad_time = cli.fails(&["audit", "export", "--since", "yesterday"]);
    assert!(bad_time.contains("RFC 3339"), "{bad_time}");
    cli.fails(&["audit", "export", "--page-size", "1001"]);

    server.stop();
}
