//! `GET`/`PUT /api/2.0/deputy/audit/retention` through the router: admins set and clear the retention, anyone else
//! and bad values are refused with the Databricks error, changes and refusals are audited, and a purge (the one a
//! server runs when it starts and every hour) deletes exactly the expired events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use deputy_core::ScopeSet;
use deputy_store::AuditEvent;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Harness, Reply, harness};

const RETENTION: &str = "/api/2.0/deputy/audit/retention";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn get(h: &Harness, token: &str) -> Reply {
    h.call(Method::GET, RETENTION, Some(token), None).await
}

async fn put(h: &Harness, token: &str, body: Value) -> Reply {
    h.call(Method::PUT, RETENTION, Some(token), Some(body))
        .await
}

fn now_ms() -> i64 {
    support::now() * 1000
}

/// An event of `request_id`, `age_ms` before `now`.
fn event(request_id: &str, now: i64, age_ms: i64) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time_ms: now - age_ms,
        request_id: request_id.into(),
        user_name: "alice@example.com".into(),
        actors: vec!["agent-orders".into()],
        endpoint: Some("orders".into()),
        api: "POST /api/2.0/sql/statements".into(),
        scope: None,
        securable: Some("main.sales.orders".into()),
        allowed: true,
        reason: "SELECT on main.sales.orders granted".into(),
    }
}

/// The request ids of the events of `request_ids` still in the log.
async fn remaining(h: &Harness, request_ids: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for request_id in request_ids {
        let path = format!("/api/2.0/deputy/audit?request_id={request_id}");
        let reply = h.call(Method::GET, &path, Some(&h.admin_token), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        for event in reply.body["events"].as_array().unwrap() {
            found.push(event["request_id"].as_str().unwrap().to_owned());
        }
    }
    found
}

#[tokio::test]
async fn an_admin_sets_and_clears_the_retention_and_each_change_is_audited() {
    let h = harness().await;
    let admin = &h.admin_token;
    let unset = get(&h, admin).await;
    assert_eq!(unset.status, StatusCode::OK, "{}", unset.body);
    assert_eq!(unset.body, json!({}));

    let set = put(&h, admin, json!({ "retention_days": 30 })).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body, json!({ "retention_days": 30 }));
    assert_eq!(get(&h, admin).await.body, json!({ "retention_days": 30 }));

    // The longest period is accepted; null keeps events forever again.
    let longest = put(&h, admin, json!({ "retention_days": 36_500 })).await;
    assert_eq!(longest.body, json!({ "retention_days": 36_500 }));
    let cleared = put(&h, admin, json!({ "retention_days": null })).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert_eq!(cleared.body, json!({}));
    assert_eq!(get(&h, admin).await.body, json!({}));

    let changes = h.audited("audit.retention").await;
    let expected = [
        "audit events are kept for 30 days",
        "audit events are kept for 36500 days",
        "audit events are kept forever",
    ];
    assert_eq!(changes.len(), expected.len(), "{changes:?}");
    for ((user, allowed, reason), expected) in changes.iter().zip(expected) {
        assert_eq!((user.as_str(), *allowed), ("admin", true));
        assert_eq!(reason, expected);
    }
}

#[tokio::test]
async fn anyone_but_an_admin_is_refused_and_the_attempt_is_audited() {
    let h = harness().await;
    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    put(&h, &h.admin_token, json!({ "retention_days": 90 })).await;

    let read = get(&h, &alice).await;
    assert_eq!(read.status, StatusCode::FORBIDDEN, "{}", read.body);
    assert_eq!(read.body["error_code"], "PERMISSION_DENIED");
    // Refused before the value is checked: a value out of range from a non-admin is still a 403.
    for body in [
        json!({ "retention_days": 1 }),
        json!({ "retention_days": 0 }),
    ] {
        let change = put(&h, &alice, body).await;
        assert_eq!(change.status, StatusCode::FORBIDDEN, "{}", change.body);
        assert_eq!(change.body["error_code"], "PERMISSION_DENIED");
        assert!(change.body["message"].as_str().unwrap().contains("admins"));
    }
    assert_eq!(
        get(&h, &h.admin_token).await.body,
        json!({ "retention_days": 90 })
    );
    let attempts: Vec<_> = h
        .audited("audit.retention")
        .await
        .into_iter()
        .filter(|(user, _, _)| user == "alice@example.com")
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts.iter().all(|(_, allowed, _)| !allowed));

    // Changing it takes the workspace-settings scope, reading it the audit scope.
    let audit_only = h.sign(&h.claims_for("admin", ScopeSet::parse("audit").unwrap()));
    assert_eq!(get(&h, &audit_only).await.status, StatusCode::OK);
    let change = put(&h, &audit_only, json!({ "retention_days": 1 })).await;
    assert_eq!(change.status, StatusCode::FORBIDDEN, "{}", change.body);
    assert!(
        change.body["message"]
            .as_str()
            .unwrap()
            .contains("settings.workspace-conf"),
        "{}",
        change.body
    );
}

#[tokio::test]
async fn bad_values_are_refused_as_invalid_parameters() {
    let h = harness().await;
    let admin = &h.admin_token;
    put(&h, admin, json!({ "retention_days": 7 })).await;
    for body in [
        json!({ "retention_days": 0 }),
        json!({ "retention_days": -1 }),
        json!({ "retention_days": 36_501 }),
        json!({ "retention_days": 1.5 }),
        json!({ "retention_days": "30" }),
        json!({ "retention_days": true }),
        json!({ "retention_days": 1e30 }),
        json!({ "retention_days": [30] }),
        json!({}),
        json!({ "retention_days": 30, "purge_now": true }),
        json!([30]),
    ] {
        let reply = put(&h, admin, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["error_code"], "INVALID_PARAMETER_VALUE",
            "{body}"
        );
        assert!(
            !reply.body["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
    assert_eq!(get(&h, admin).await.body, json!({ "retention_days": 7 }));
    // Only the one accepted change was audited as a change.
    let changes = h.audited("audit.retention").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
}

#[tokio::test]
async fn a_purge_deletes_the_expired_events_and_keeps_the_rest() {
    let h = harness().await;
    let now = now_ms();
    let events = [
        event("old-40-days", now, 40 * DAY_MS),
        event("old-31-days", now, 31 * DAY_MS),
        event("kept-29-days", now, 29 * DAY_MS),
        event("kept-1-hour", now, 60 * 60 * 1000),
        // Appended last, yet older than the ones before it (a clock set back): it expires all the same.
        event("old-35-days", now, 35 * DAY_MS),
    ];
    h.state
        .access()
        .store()
        .append_audit_events(&events)
        .await
        .unwrap();
    let all: Vec<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    let kept = ["kept-29-days", "kept-1-hour"];

    // Kept forever by default: a purge deletes nothing.
    let access = h.state.access();
    assert_eq!(access.purge_expired_audit_events(now).await.unwrap(), 0);
    assert_eq!(remaining(&h, &all).await, all);

    put(&h, &h.admin_token, json!({ "retention_days": 30 })).await;
    assert_eq!(access.purge_expired_audit_events(now).await.unwrap(), 3);
    assert_eq!(remaining(&h, &all).await, kept);
    // Purging again (another replica, the next hour) finds nothing more.
    assert_eq!(access.purge_expired_audit_events(now).await.unwrap(), 0);
    assert_eq!(remaining(&h, &all).await, kept);
    // Kept forever again: nothing more is deleted, however old.
    put(&h, &h.admin_token, json!({ "retention_days": null })).await;
    let much_later = now + 365 * DAY_MS;
    assert_eq!(
        access.purge_expired_audit_events(much_later).await.unwrap(),
        0
    );
    assert_eq!(remaining(&h, &all).await, kept);
}

/// A server purges when it starts: here a second server (a replica) started on the same database.
#[tokio::test]
async fn a_starting_server_purges_expired_events() {
    let h = harness().await;
    let now = now_ms();
    let events = [
        event("old-3-days", now, 3 * DAY_MS),
        event("kept-1-hour", now, 60 * 60 * 1000),
    ];
    h.state
        .access()
        .store()
        .append_audit_events(&events)
        .await
        .unwrap();
    put(&h, &h.admin_token, json!({ "retention_days": 2 })).await;

    let config = deputy_server::ServerConfig {
        data_dir: h.dir.path().to_owned(),
        database_url: h.database.clone(),
        storage_dir: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
    };
    let server = deputy_server::bind(&config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let all = ["old-3-days", "kept-1-hour"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while remaining(&h, &all).await != ["kept-1-hour"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired event was not purged: {:?}",
            remaining(&h, &all).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
