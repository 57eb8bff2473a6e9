"""HTTP connections through the real SDK: `w.serving_endpoints.http_request(conn, method, path, ...)` posts to
`/api/2.0/external-function`, and Deputy calls the connection's upstream with the connection's credential, for users
holding USE_CONNECTION only, never leaving the connection's host.

The upstream is a test double: a threaded HTTP server on 127.0.0.1 that records every request it receives.
"""

import http.server
import json
import threading
import uuid

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, PermissionDenied
from databricks.sdk.service import catalog
from databricks.sdk.service.serving import ExternalFunctionRequestHttpMethod as Method


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        payload = json.dumps({"echo": self.path, "method": self.command}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def upstream():
    """Test double for an upstream HTTP API: answers every request with an echo and records it."""
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, _Recorder.seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def setup(server, admin, upstream):
    httpd, _ = upstream
    name = f"conn_{uuid.uuid4().hex[:8]}"
    secret = "bearer-" + uuid.uuid4().hex
    admin.connections.create(
        name=name,
        connection_type=catalog.ConnectionType.HTTP,
        options={"host": f"http://127.0.0.1:{httpd.server_port}", "base_path": "/api", "bearer_token": secret},
    )
    clients = {}
    for who in ["allowed", "refused"]:
        user = admin.users.create(user_name=f"conn-{who}-{uuid.uuid4().hex[:6]}@example.com")
        token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
        clients[who] = (user.user_name, WorkspaceClient(host=server.host, token=token, auth_type="pat"))
    admin.grants.update(
        "connection",
        name,
        changes=[catalog.PermissionsChange(principal=clients["allowed"][0], add=[catalog.Privilege.USE_CONNECTION])],
    )
    return {"name": name, "secret": secret, "allowed": clients["allowed"][1], "refused": clients["refused"][1]}


def test_http_request_reaches_the_upstream_with_the_connections_credential(setup, upstream):
    _, seen = upstream
    before = len(seen)
    response = setup["allowed"].serving_endpoints.http_request(
        setup["name"], Method.POST, "/v1/issues", headers={"X-Trace": "t-1"}, json={"title": "hello"}, params={"q": "a b"}
    )
    assert response.status_code == 200
    assert response.json() == {"echo": "/api/v1/issues?q=a+b", "method": "POST"}
    assert len(seen) == before + 1
    request = seen[-1]
    assert request["path"] == "/api/v1/issues?q=a+b"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {setup['secret']}"
    assert headers["x-trace"] == "t-1"
    assert json.loads(request["body"]) == {"title": "hello"}


def test_a_user_without_use_connection_gets_403_with_the_reason(setup, upstream):
    _, seen = upstream
    before = len(seen)
    with pytest.raises(PermissionDenied) as refused:
        setup["refused"].serving_endpoints.http_request(setup["name"], Method.GET, "/v1/issues")
    assert f"USE_CONNECTION on {setup['name']}" in str(refused.value)
    assert len(seen) == before, "the refused call reached the upstream"


@pytest.mark.parametrize(
    "path",
    ["//evil.example/x", "http://evil.example/x", "https://evil.example/x", "/../x", "%2e%2e/x", "@evil.example/x"],
)
def test_a_path_cannot_leave_the_connections_host(setup, upstream, path):
    _, seen = upstream
    before = len(seen)
    with pytest.raises(BadRequest) as refused:
        setup["allowed"].serving_endpoints.http_request(setup["name"], Method.GET, path)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "`path`" in str(refused.value)
    assert len(seen) == before


def test_the_credential_cannot_be_replaced_through_headers(setup, upstream):
    _, seen = upstream
    before = len(seen)
    with pytest.raises(BadRequest) as refused:
        setup["allowed"].serving_endpoints.http_request(
            setup["name"], Method.GET, "/v1/x", headers={"Authorization": "Bearer attacker"}
        )
    assert "Authorization" in str(refused.value)
    assert len(seen) == before
