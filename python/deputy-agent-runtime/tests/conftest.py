import json
import os
import queue
import subprocess
import sys
import threading

import pytest

RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENTS_DIR = os.path.join(RUNTIME_DIR, "tests", "agents")
TOKEN_FILE = "model-dependencies-oauth-token"


def write_system_token(creds_dir: str, token: str) -> None:
    """Atomically, as the supervisor does."""
    tmp = os.path.join(creds_dir, f".{TOKEN_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump({"OAUTH_TOKEN": [{"oauthTokenValue": token}]}, f)
    os.replace(tmp, os.path.join(creds_dir, TOKEN_FILE))


class Worker:
    """The worker as the Rust supervisor sees it: JSON lines on its stdin and stdout."""

    def __init__(self, model: str, creds_dir: str, extra_args=(), timeout: float = 60.0):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": creds_dir,  # no ~/.databrickscfg
            "PYTHONPATH": RUNTIME_DIR,
            "IS_IN_DB_MODEL_SERVING_ENV": "true",
            "DATABRICKS_MODEL_SERVING_HOST_URL": "http://127.0.0.1:9",
            "SERVING_CREDENTIALS_DIR": creds_dir,
        }
        self.stderr_path = os.path.join(creds_dir, f"worker-{os.getpid()}-{id(self)}.stderr")
        self.stderr = open(self.stderr_path, "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deputy_agent_runtime", "--model", model, *extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=creds_dir,
        )
        self.timeout = timeout
        self.lines: "queue.Queue[bytes]" = queue.Queue()
        self.raw: list = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.hello = self.read()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def read(self) -> dict:
        line = self.lines.get(timeout=self.timeout)
        assert line, f"worker closed its stdout; stderr:\n{self.stderr_text()}"
        self.raw.append(line)
        return json.loads(line)  # every protocol line must be one JSON object

    def send_line(self, line: bytes) -> None:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def send(self, request: dict) -> None:
        self.send_line(json.dumps(request).encode() + b"\n")

    def call(self, payload, user_token=None, user_id=None, request_id="r", stream=False):
        self.send(
            {"id": request_id, "stream": stream, "payload": payload, "user_token": user_token, "user_id": user_id}
        )
        if not stream:
            return self.read()
        out = []
        while True:
            message = self.read()
            out.append(message)
            if message["type"] in ("done", "error"):
                return out

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=self.timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.stderr.close()

    def stderr_text(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@pytest.fixture
def creds_dir(tmp_path):
    d = tmp_path / "creds"
    d.mkdir()
    write_system_token(str(d), "system-token-generation-1")
    return str(d)


@pytest.fixture
def start_worker(creds_dir):
    workers = []

    def start(model, *extra_args):
        w = Worker(model, creds_dir, extra_args)
        workers.append(w)
        return w

    yield start
    for w in workers:
        if w.proc.poll() is None:
            w.close()


@pytest.fixture(scope="module")
def shared_obo_worker(tmp_path_factory):
    """One OBO ChatAgent worker for the tests of a module (starting one costs seconds); that requests share a
    process is what the token isolation tests want anyway."""
    d = tmp_path_factory.mktemp("shared-creds")
    write_system_token(str(d), "system-token-generation-1")
    w = Worker(os.path.join(AGENTS_DIR, "obo_chat_agent.py"), str(d))
    yield w
    if w.proc.poll() is None:
        assert w.close() == 0
