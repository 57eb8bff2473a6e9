//! The real binary: `deputy serve` answers health checks, exits 0 on SIGTERM, and a restart on the same data
//! directory keeps the workspace and the admin token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn start(data_dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(http_get(port, "/healthz", None), Ok((200, _))) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("deputy serve did not become healthy within 30 s");
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("deputy serve did not exit within 10 s of SIGTERM");
}

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

#[test]
fn demo_walkthrough_runs_end_to_end() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("scope = serving.serving-endpoints vectorsearch.vector-search-indexes"),
        "{stdout}"
    );
    assert!(stdout.contains("PERMISSION_DENIED"), "{stdout}");
    assert!(stdout.contains("access token has been revoked"), "{stdout}");
}
