//! The real binary: `deputy serve` answers health checks, exits 0 on SIGTERM, and a restart on the same data
//! directory keeps the workspace and the admin token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use support::{free_port, http_get, start, terminate};

#[test]
fn serve_exits_cleanly_on_sigterm_and_restarts_with_the_same_state() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data_dir.path(), port);
    let token = std::fs::read_to_string(data_dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let (status, body) = http_get(port, "/api/2.0/preview/scim/v2/Me", Some(&token)).unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, config) = http_get(port, "/.well-known/databricks-config", None).unwrap();
    assert!(terminate(server).success());

    let port = free_port();
    let server = start(data_dir.path(), port);
    assert_eq!(
        std::fs::read_to_string(data_dir.path().join("admin-token"))
            .unwrap()
            .trim(),
        token
    );
    let (status, _) = http_get(port, "/api/2.0/preview/scim/v2/Me", Some(&token)).unwrap();
    assert_eq!(status, 200);
    let (_, config_after) = http_get(port, "/.well-known/databricks-config", None).unwrap();
    let workspace_id = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap()["workspace_id"].clone()
    };
    assert_eq!(workspace_id(&config), workspace_id(&config_after));
    assert!(terminate(server).success());
}
