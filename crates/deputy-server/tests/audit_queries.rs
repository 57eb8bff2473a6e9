//! `GET /api/2.0/deputy/audit` through the router: each filter, newest-first paging, everyone reading their own
//! events (admins everyone's), and parameters that do not parse refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use deputy_store::AuditEvent;
use serde_json::Value;
use support::{Harness, harness};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// Five known events after whatever setting the workspace up logged. Each carries its label (`e1`…`e5`) in `scope`,
/// which no filter reads.
struct Log {
    h: Harness,
    alice: String,
    bob: String,
    /// The last `seq` before the known events: every query starts after it.
    base: i64,
}

fn event(label: &str, user: &str, time_ms: i64, request_id: &str) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time_ms,
        request_id: request_id.into(),
        user_name: user.into(),
        actors: Vec::new(),
        endpoint: None,
        api: "GET /api/2.0/preview/scim/v2/Me".into(),
        scope: Some(label.into()),
        securable: None,
        allowed: true,
        reason: "allowed".into(),
    }
}

async fn log() -> Log {
    let h = harness().await;
    let alice = h.new_user_token(ALICE, &["all-apis"]).await;
    let bob = h.new_user_token(BOB, &["all-apis"]).await;
    let latest = h
        .call(
            Method::GET,
            "/api/2.0/deputy/audit?order=desc&limit=1",
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.body);
    let base = latest.body["last_seq"].as_i64().unwrap_or(0);
    let events = [
        AuditEvent {
            endpoint: Some("orders".into()),
            api: "POST /api/2.0/sql/statements".into(),
            securable: Some("main.sales.orders".into()),
            actors: vec!["agent-orders".into()],
            reason: "SELECT on main.sales.orders granted".into(),
            ..event("e1", ALICE, 1_000, "req-a")
        },
        AuditEvent {
            endpoint: Some("orders".into()),
            api: "agent.tool-access".into(),
            securable: Some("main.sales.margins".into()),
            actors: vec!["agent-orders".into()],
            allowed: false,
            reason: "missing SELECT on main.sales.margins".into(),
            ..event("e2", ALICE, 2_000, "req-a")
        },
        AuditEvent {
            endpoint: Some("rag".into()),
            api: "POST /api/2.0/vector-search/indexes/{name}/query".into(),
            securable: Some("main.docs.index".into()),
            actors: vec!["agent-rag".into()],
            ..event("e3", BOB, 3_000, "req-b")
        },
        AuditEvent {
            actors: vec!["Outer-Helper".into(), "agent-orders".into()],
            ..event("e4", ALICE, 4_000, "req-c")
        },
        AuditEvent {
            endpoint: Some("orders".into()),
            allowed: false,
            ..event("e5", BOB, 5_000, "req-d")
        },
    ];
    h.state
        .access()
        .store()
        .append_audit_events(&events)
        .await
        .unwrap();
    Log {
        h,
        alice,
        bob,
        base,
    }
}

impl Log {
    async fn query(&self, token: &str, parameters: &str) -> support::Reply {
        let path = format!("/api/2.0/deputy/audit?after={}&{parameters}", self.base);
        self.h.call(Method::GET, &path, Some(token), None).await
    }

    /// The labels of the events `token` reads with `parameters`, in the order answered.
    async fn labels(&self, token: &str, parameters: &str) -> Vec<String> {
        let reply = self.query(token, parameters).await;
        assert_eq!(reply.status, StatusCode::OK, "{parameters}: {}", reply.body);
        labels(&reply.body)
    }
}

fn labels(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["scope"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_filter_selects_only_the_matching_events() {
    let log = log().await;
    let admin = &log.h.admin_token;
    for (parameters, expected) in [
        ("", &["e1", "e2", "e3", "e4", "e5"][..]),
        ("user_name=bob@example.com", &["e3", "e5"]),
        ("endpoint=orders", &["e1", "e2", "e5"]),
        ("allowed=false", &["e2", "e5"]),
        ("allowed=true", &["e1", "e3", "e4"]),
        ("request_id=req-a", &["e1", "e2"]),
        // `since_ms` inclusive, `until_ms` exclusive.
        ("since_ms=2000&until_ms=4000", &["e2", "e3"]),
        ("since_ms=4000", &["e4", "e5"]),
        ("until_ms=1001", &["e1"]),
        // `contains`: the securable, the reason, the API, the endpoint, an actor; ignoring case.
        ("contains=MARGINS", &["e2"]),
        ("contains=granted", &["e1"]),
        ("contains=vector-search", &["e3"]),
        ("contains=rag", &["e3"]),
        ("contains=outer-helper", &["e4"]),
        ("contains=agent-orders", &["e1", "e2", "e4"]),
        ("contains=nowhere", &[]),
        // Conditions combine.
        (
            "endpoint=orders&allowed=false&user_name=alice@example.com",
            &["e2"],
        ),
        // An empty text parameter is no filter.
        (
            "endpoint=&contains=&request_id=",
            &["e1", "e2", "e3", "e4", "e5"],
        ),
        ("before=0", &[]),
    ] {
        assert_eq!(
            log.labels(admin, parameters).await,
            expected,
            "{parameters}"
        );
    }
    let reply = log.query(admin, "request_id=req-c").await;
    let event = &reply.body["events"][0];
    assert_eq!(event["user_name"], ALICE);
    assert_eq!(event["actors"][0], "Outer-Helper");
    assert_eq!(event["time_ms"], 4_000);
}

#[tokio::test]
async fn pages_go_forward_with_after_and_back_with_order_desc_and_before() {
    let log = log().await;
    let admin = &log.h.admin_token;

    let mut pages = Vec::new();
    let mut parameters = "order=desc&limit=2".to_owned();
    loop {
        let reply = log.query(admin, &parameters).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let page = labels(&reply.body);
        if page.is_empty() {
            assert_eq!(reply.body["last_seq"], Value::Null);
            break;
        }
        pages.push(page);
        let before = reply.body["last_seq"].as_i64().unwrap();
        parameters = format!("order=desc&limit=2&before={before}");
    }
    assert_eq!(
        pages,
        [vec!["e5", "e4"], vec!["e3", "e2"], vec!["e1"]],
        "newest first, two at a time"
    );

    // Oldest first, as `deputy audit tail` reads: `last_seq` is the next `after`.
    let first = log.query(admin, "limit=2").await;
    assert_eq!(labels(&first.body), ["e1", "e2"]);
    let after = first.body["last_seq"].as_i64().unwrap();
    let path = format!("/api/2.0/deputy/audit?after={after}&limit=2&order=asc");
    let second = log.h.call(Method::GET, &path, Some(admin), None).await;
    assert_eq!(labels(&second.body), ["e3", "e4"]);

    // Filters hold across pages.
    assert_eq!(
        log.labels(admin, "order=desc&allowed=true&limit=1").await,
        ["e4"]
    );
}

#[tokio::test]
async fn everyone_reads_their_own_events_and_only_admins_read_others() {
    let log = log().await;
    assert_eq!(log.labels(&log.alice, "").await, ["e1", "e2", "e4"]);
    assert_eq!(log.labels(&log.bob, "order=desc").await, ["e5", "e3"]);
    // Naming oneself (in any case) is the same as naming no one.
    assert_eq!(
        log.labels(&log.alice, "user_name=Alice@Example.com").await,
        ["e1", "e2", "e4"]
    );
    // Filters that would select only someone else's events find nothing.
    for parameters in ["endpoint=rag", "request_id=req-b", "contains=vector-search"] {
        assert!(
            log.labels(&log.alice, parameters).await.is_empty(),
            "{parameters}"
        );
    }
    let refused = log.query(&log.alice, "user_name=bob@example.com").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error_code"], "PERMISSION_DENIED");
    assert!(!refused.body.to_string().contains("e3"), "{}", refused.body);
    // Admins read everyone's, or one user's.
    let admin = &log.h.admin_token;
    assert_eq!(
        log.labels(admin, "user_name=alice@example.com").await,
        ["e1", "e2", "e4"]
    );
}

#[tokio::test]
async fn parameters_that_do_not_parse_are_refused() {
    let log = log().await;
    for token in [&log.h.admin_token, &log.alice] {
        for parameters in [
            "allowed=yes",
            "allowed=TRUE",
            "order=newest",
            "order=",
            "since_ms=yesterday",
            "until_ms=1.5",
            "before=last",
            "limit=-1",
        ] {
            let reply = log.query(token, parameters).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{parameters}: {}",
                reply.body
            );
            assert_eq!(
                reply.body["error_code"], "INVALID_PARAMETER_VALUE",
                "{parameters}"
            );
        }
    }
}
