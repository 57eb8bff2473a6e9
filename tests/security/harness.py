"""Shared by the attack suite (`run.py`) and the crash-safety test (`crash.py`): starting a real `deputy serve`,
talking to it, and forging tokens.

The server is started the way `tests/python/conftest.py` starts it: the binary from `DEPUTY_BIN`, a fresh data
directory, a free loopback port, no inherited `DEPUTY_*`/`DATABRICKS_*` variables, SIGTERM at the end (which must
exit 0 within 10 s). Its metadata is in SQLite in the data directory or, when `DEPUTY_TEST_POSTGRES_URL` names a
PostgreSQL server (the Rust tests' switch), in a database of its own there.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 60
SHUTDOWN_TIMEOUT_SECONDS = 10

# Loopback must never go through a proxy.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))


def deputy_binary() -> Path:
    binary = Path(os.environ.get("DEPUTY_BIN", "target/debug/deputy"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    # A binary being rebuilt may be missing for a moment.
    for _ in range(60):
        if binary.is_file():
            return binary
        time.sleep(1)
    raise SystemExit(f"deputy binary not found at {binary}; build it or set DEPUTY_BIN")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_database_url() -> str | None:
    """A database no one has used on the PostgreSQL server that `DEPUTY_TEST_POSTGRES_URL` names (`deputy serve`
    creates it); `None` when the switch is off, for SQLite in the data directory."""
    server = os.environ.get("DEPUTY_TEST_POSTGRES_URL")
    if not server:
        return None
    return urllib.parse.urlsplit(server)._replace(path=f"/deputy_test_py_{uuid.uuid4().hex}").geturl()


def server_environment() -> dict:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DEPUTY_") and not name.startswith("DATABRICKS_")
    }


class Server:
    """One `deputy serve` process on a data directory; can be stopped, killed and started again on the same
    directory (a new port each time, since the old one may linger in TIME_WAIT)."""

    def __init__(self, data_dir: Path | None = None, log_dir: Path | None = None, extra_args=()):
        self._tmp = None
        # More `deputy serve` flags (e.g. `--public-url`), passed at every start.
        self.extra_args = list(extra_args)
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="deputy-security-")
            data_dir = Path(self._tmp.name) / "data"
        self.data_dir = Path(data_dir)
        # Chosen once: every start on this data directory finds its state in the same database.
        self.database_url = fresh_database_url()
        self.log_path = (log_dir or self.data_dir.parent) / "server.log"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.host = ""
        self.starts = 0

    def start(self, same_port: bool = False) -> "Server":
        """Starts the server; `same_port` keeps the previous port, so that the issuer (derived from the listen
        address) and with it every JWT stays valid across the restart."""
        binary = deputy_binary()
        if not (same_port and self.port):
            self.port = free_loopback_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start {self.starts} on port {self.port} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
             *(["--database", self.database_url] if self.database_url else []), *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"deputy exited with {self.process.returncode} during startup:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.host}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"deputy did not answer /healthz within {STARTUP_TIMEOUT_SECONDS}s")
            time.sleep(0.05)
        return self

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def sql(self, statement: str, params=()) -> list[tuple]:
        """Runs one statement on the server's metadata database behind its back, committed at once, and returns its
        rows (none for a statement without any; `RETURNING` tells what an UPDATE changed). Placeholders are SQLite's
        `?`. Like a plain sqlite3 connection, the PostgreSQL one enforces no foreign keys, so that a case can leave
        a dangling row as a damaged store would."""
        if self.database_url is None:
            db = sqlite3.connect(self.data_dir / "metadata.db", timeout=30)
            try:
                with db:
                    return db.execute(statement, params).fetchall()
            finally:
                db.close()
        with psycopg.connect(self.database_url, autocommit=True,
                             options="-c session_replication_role=replica") as db:
            cursor = db.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        try:
            return self.alive() and requests.get(f"{self.host}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> int:
        """SIGTERM; returns the exit code (0 expected)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -999
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to flush or drain."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class Reply:
    """An HTTP answer: status, parsed JSON body (or None), raw text, headers."""

    def __init__(self, response: requests.Response):
        self.status = response.status_code
        self.text = response.text
        self.headers = response.headers
        try:
            self.body = response.json()
        except ValueError:
            self.body = None

    def __repr__(self) -> str:
        return f"<{self.status} {self.text[:300]!r}>"

    def get(self, key, default=None):
        return self.body.get(key, default) if isinstance(self.body, dict) else default


class Api:
    def __init__(self, host: str, session: requests.Session | None = None):
        self.host = host
        self.session = session or requests.Session()

    def call(self, method: str, path: str, token: str | None = None, *, json_body=None, data=None,
             headers: dict | None = None, params=None, timeout: float = 60) -> Reply:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        response = self.session.request(method, self.host + path, data=data, headers=all_headers,
                                        params=params, timeout=timeout)
        return Reply(response)

    def get(self, path, token=None, **kw):
        return self.call("GET", path, token, **kw)

    def post(self, path, token=None, body=None, **kw):
        return self.call("POST", path, token, json_body=body, **kw)

    def patch(self, path, token=None, body=None, **kw):
        return self.call("PATCH", path, token, json_body=body, **kw)

    def put(self, path, token=None, body=None, **kw):
        return self.call("PUT", path, token, json_body=body, **kw)

    def delete(self, path, token=None, **kw):
        return self.call("DELETE", path, token, **kw)

    def form(self, path, fields: dict, headers: dict | None = None) -> Reply:
        response = self.session.post(self.host + path, data=fields, headers=headers or {}, timeout=60)
        return Reply(response)

    def sql(self, token: str, warehouse_id: str, statement: str, parameters=None, wait="50s") -> Reply:
        body = {"statement": statement, "warehouse_id": warehouse_id, "wait_timeout": wait}
        if parameters is not None:
            body["parameters"] = parameters
        return self.post("/api/2.0/sql/statements", token, body)


# ---- JWT helpers ------------------------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64json(value) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def split_jwt(token: str):
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def current_signing_key(server: Server):
    """The server's current Ed25519 signing key, read from its store. Used only to show that every claim is checked
    even when the signature is genuine (expired, wrong issuer, ...); the attacker model never holds this key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    [(kid, seed)] = server.sql(
        "SELECT kid, seed FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1")
    return kid, Ed25519PrivateKey.from_private_bytes(bytes(seed))


def sign_eddsa(key, header: dict, claims: dict) -> str:
    message = f"{b64json(header)}.{b64json(claims)}"
    return f"{message}.{b64url(key.sign(message.encode()))}"


def serve_json_on_loopback(answer):
    """Serves JSON from a daemon thread on 127.0.0.1 (a free port); returns the server (to shut down) and its base
    URL. `answer(method, path,
    body)` gives `(status, object)` for each request; the request body is read whole first. For the suite's test
    doubles of things outside the project (an identity provider, a model provider)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            request_body = self.rfile.read(length) if length else b""
            status, document = answer(self.command, self.path, request_body)
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
