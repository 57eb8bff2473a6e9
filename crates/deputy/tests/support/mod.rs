//! Shared by the binary's integration tests: start `deputy serve` on a free loopback port, talk HTTP to it, stop it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // Test code; not every file uses every helper.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
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

/// Starts `deputy serve` on `data_dir`, its metadata in SQLite there or, when the tests run on PostgreSQL, in the
/// directory's own database.
pub fn start(data_dir: &std::path::Path, port: u16) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deputy"));
    command.args(["serve", "--data-dir"]).arg(data_dir);
    if let Some(database) = deputy_store::testing::postgres_database_for(data_dir) {
        command.args(["--database", &database]);
    }
    let mut child = command
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
    let _ = child.kill();
    let _ = child.wait();
    panic!("deputy serve did not become healthy within 30 s");
}

pub fn terminate(mut child: Child) -> std::process::ExitStatus {
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

/// A started server that is stopped with SIGTERM by [`Server::stop`], or killed if the test panics first.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
}

impl Server {
    pub fn start(data_dir: &std::path::Path) -> Server {
        let port = free_port();
        Server {
            child: Some(start(data_dir, port)),
            port,
        }
    }

    /// A server on a fresh temporary data directory (kept as long as the directory is).
    pub fn start_in_temp_dir() -> (tempfile::TempDir, Server) {
        let data_dir = tempfile::tempdir().unwrap();
        let server = Server::start(data_dir.path());
        (data_dir, server)
    }

    pub fn host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(self.child.take().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `deputy` binary as a client of one server, with a scrubbed environment (no developer profile or token).
pub struct Cli {
    pub host: String,
    pub token: String,
}

impl Cli {
    /// The bootstrap admin of `server`, whose token `deputy serve` wrote into `data_dir`.
    pub fn as_admin(server: &Server, data_dir: &std::path::Path) -> Cli {
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Cli {
            host: server.host(),
            token,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, "", &[])
    }

    /// Runs `deputy` with `stdin` on standard input and `env` added to a scrubbed environment.
    pub fn run_with(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deputy"));
        for (name, _) in std::env::vars() {
            if name.starts_with("DATABRICKS_") || name.starts_with("DEPUTY_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("DATABRICKS_HOST", &self.host)
            .env("DATABRICKS_TOKEN", &self.token)
            .env("DATABRICKS_CONFIG_FILE", "/nonexistent")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    pub fn ok_with(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> String {
        let output = self.run_with(args, stdin, env);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "deputy {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "", &[])
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Runs a command that must fail; returns its standard error.
    pub fn fails_with(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> String {
        let output = self.run_with(args, stdin, env);
        assert!(
            !output.status.success(),
            "deputy {args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with(args, "", &[])
    }
}
