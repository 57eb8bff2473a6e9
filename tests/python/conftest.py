"""Starts one `deputy serve` for the whole test session and hands its address and admin token to the tests.

The binary comes from `DEPUTY_BIN` (default `target/debug/deputy` under the repository root). The server gets a
fresh data directory and a free loopback port; on teardown it is sent SIGTERM and must exit 0 within 10 s, which
tests graceful shutdown. Its metadata is in SQLite in the data directory or, when `DEPUTY_TEST_POSTGRES_URL` names a
PostgreSQL server (the Rust tests' switch), in a database of its own there.
"""

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 10


def _isolate_environment() -> None:
    """Keeps a developer's Databricks configuration (profiles, tokens, hosts) out of the tests."""
    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            del os.environ[name]
    os.environ["DATABRICKS_CONFIG_FILE"] = "/nonexistent"
    # Clients that trace with MLflow (ai-bridge's Genie) get a throwaway file store: MLflow's default is a SQLite
    # database in the working directory when SQLAlchemy is installed (the RAG agent's lock brings it), which needs
    # alembic and leaves an mlflow.db behind.
    os.environ["MLFLOW_TRACKING_URI"] = "file://" + tempfile.mkdtemp(prefix="deputy-tests-mlruns-")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    # Loopback must never go through a proxy.
    for name in ("NO_PROXY", "no_proxy"):
        existing = os.environ.get(name, "")
        os.environ[name] = ",".join(filter(None, [existing, "127.0.0.1", "localhost"]))


_isolate_environment()


@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    admin_token: str
    data_dir: Path
    log_path: Path

    def url(self, path: str) -> str:
        return f"{self.host}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _deputy_binary() -> Path:
    binary = Path(os.environ.get("DEPUTY_BIN", "target/debug/deputy"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.is_file():
        pytest.exit(f"deputy binary not found at {binary}; build it or set DEPUTY_BIN", returncode=2)
    return binary


def _database_arguments() -> list[str]:
    """`--database` with a database no one has used on the PostgreSQL server that `DEPUTY_TEST_POSTGRES_URL` names
    (`deputy` creates it); nothing when the switch is off, for SQLite in the data directory."""
    server = os.environ.get("DEPUTY_TEST_POSTGRES_URL")
    if not server:
        return []
    return ["--database", urllib.parse.urlsplit(server)._replace(path=f"/deputy_test_py_{uuid.uuid4().hex}").geturl()]


def _server_environment() -> dict:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DEPUTY_") and not name.startswith("DATABRICKS_")
    }
    # Deployed Python agents run on this interpreter, whose venv has the agent runtime's requirements.
    environment["DEPUTY_AGENT_PYTHON"] = sys.executable
    return environment


@contextlib.contextmanager
def running_deputy(tmp_path_factory, port=None, extra_env=None):
    """A `deputy serve` on a fresh data directory and a loopback port (`port`, or a free one), for a `with` block.
    The session's `server` is one; tests that change workspace-wide sign-in settings start their own. `extra_env`
    is added to the server's environment (after the `DEPUTY_*` variables of the test run are left out)."""
    binary = _deputy_binary()
    data_dir = tmp_path_factory.mktemp("deputy-data")
    log_path = tmp_path_factory.mktemp("deputy-log") / "server.log"
    port = port or free_loopback_port()
    host = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
             *_database_arguments()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**_server_environment(), **(extra_env or {})},
        )
    yielded = False
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"deputy exited with {process.returncode} during startup:\n{log_path.read_text()}")
            try:
                if requests.get(f"{host}/healthz", timeout=1).status_code == 200:
                    break
            # The port listens before the store is ready (longer on PostgreSQL, whose database a first start creates
            # and migrates): a connection may be accepted and not answered for a while.
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"deputy did not answer /healthz within {STARTUP_TIMEOUT_SECONDS}s:\n{log_path.read_text()}")
            time.sleep(0.1)
        admin_token = (data_dir / "admin-token").read_text().strip()
        assert admin_token, "admin-token file is empty"
        yielded = True
        yield Server(host=host, admin_token=admin_token, data_dir=data_dir, log_path=log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"deputy did not exit within {SHUTDOWN_TIMEOUT_SECONDS}s of SIGTERM:\n{log_path.read_text()}")
            assert code == 0, f"deputy exited with {code} after SIGTERM:\n{log_path.read_text()}"
        elif yielded:
            pytest.fail(f"deputy died during the tests with {process.returncode}:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with running_deputy(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="session")
def admin(server):
    """A WorkspaceClient authenticated as the bootstrap `admin` user with its personal access token."""
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(host=server.host, token=server.admin_token, auth_type="pat")
