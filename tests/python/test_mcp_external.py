"""External MCP servers behind Unity Catalog HTTP connections, proxied at `/api/2.0/mcp/external/{connection}`.

The upstream is a real MCP server built with the `mcp` SDK's FastMCP (streamable HTTP, its defaults: sessions and
server-sent events), in a subprocess on a loopback port. It offers three tools: `echo_headers` (the headers it
received), `add`, and `wipe` (which must stay out of reach: the connection allows only the other two). An ASGI
wrapper records the Authorization header of every request it gets, and `wipe` leaves a marker file if it ever runs.

A user holding USE_CONNECTION lists only the allowed tools and calls them; the upstream sees the connection's bearer
credential, never the caller's token; a tool outside `mcp_allowed_tools` is refused without reaching the upstream; a
user without USE_CONNECTION is refused; a connection not marked `is_mcp_connection` is not an MCP server (404).
"""

import json
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import catalog

from conftest import free_loopback_port
from mcp_helpers import assert_refused, audit_events, call, in_session, in_thread, raw_post, text_of, tools

STARTUP_TIMEOUT_SECONDS = 30
TIMEOUT_SECONDS = 60
ALLOWED_TOOLS = {"echo_headers", "add"}

UPSTREAM = r'''
import json
import sys

import uvicorn
from mcp.server.fastmcp import Context, FastMCP

port, record_path, wiped_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = FastMCP("deputy-test-upstream", host="127.0.0.1", port=port)


@server.tool()
def echo_headers(ctx: Context) -> str:
    """Returns the HTTP headers this request reached the server with."""
    return json.dumps(dict(ctx.request_context.request.headers))


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def wipe() -> str:
    """Deletes everything (never allowed through the connection)."""
    with open(wiped_path, "w") as marker:
        marker.write("wiped")
    return "wiped"


app = server.streamable_http_app()


def write(entry):
    with open(record_path, "a") as record:
        record.write(json.dumps(entry) + "\n")


async def recording(scope, receive, send):
    """Records the method, path and Authorization header of every HTTP request, and the JSON-RPC method (and tool)
    of every message posted, then hands the request to FastMCP."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    write({"method": scope["method"], "path": scope["path"], "authorization": headers.get("authorization")})
    body = bytearray()

    async def reading():
        message = await receive()
        if message["type"] == "http.request":
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                try:
                    rpc = json.loads(body)
                except ValueError:
                    rpc = {}
                if isinstance(rpc, dict):
                    write({"rpc": rpc.get("method"), "tool": (rpc.get("params") or {}).get("name")})
        return message

    await app(scope, reading, send)


uvicorn.run(recording, host="127.0.0.1", port=port, log_level="warning")
'''


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The FastMCP server in a subprocess; yields its port, the request record and the `wipe` marker's path."""
    directory = tmp_path_factory.mktemp("mcp-upstream")
    record, wiped, log = directory / "requests.jsonl", directory / "wiped", directory / "server.log"
    port = free_loopback_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(port), str(record), str(wiped)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, f"the upstream exited with {process.returncode}:\n{log.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"the upstream did not listen within {STARTUP_TIMEOUT_SECONDS}s"
                time.sleep(0.1)
        yield {"port": port, "record": record, "wiped": wiped}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def recorded(upstream):
    """Everything the upstream recorded: a line per HTTP request, and one per JSON-RPC message posted."""
    if not upstream["record"].exists():
        return []
    return [json.loads(line) for line in upstream["record"].read_text().splitlines() if line.strip()]


def http_requests(entries):
    return [entry for entry in entries if "path" in entry]


def rpc_messages(entries):
    return [entry for entry in entries if "rpc" in entry]


@pytest.fixture(scope="module")
def world(server, admin, upstream):
    """An MCP connection exposing two of the upstream's tools, the same upstream as a plain HTTP connection, and two
    users: one holding USE_CONNECTION on both, one holding nothing."""
    suffix = uuid.uuid4().hex[:8]
    secret = "upstream-secret-" + uuid.uuid4().hex
    options = {"host": "http://127.0.0.1", "port": str(upstream["port"]), "base_path": "/mcp", "bearer_token": secret}
    names = {"mcp": f"mcpx_tools_{suffix}", "plain": f"mcpx_plain_{suffix}", "open": f"mcpx_open_{suffix}"}
    connections = {
        "mcp": {**options, "is_mcp_connection": "true", "mcp_allowed_tools": " echo_headers, add "},
        "plain": dict(options),
        "open": {**options, "is_mcp_connection": "true"},  # every upstream tool
    }
    for key, name in names.items():
        response = requests.post(
            server.url("/api/2.1/unity-catalog/connections"),
            headers={"Authorization": f"Bearer {server.admin_token}"},
            json={"name": name, "connection_type": "HTTP", "options": connections[key]},
            timeout=10,
        )
        assert response.status_code == 200, response.text
    users = {}
    for who in ("allowed", "refused"):
        user = admin.users.create(user_name=f"mcpx-{who}-{suffix}@example.com")
        token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
        users[who] = {"name": user.user_name, "token": token}
    for name in names.values():
        admin.grants.update(
            "connection", name,
            changes=[catalog.PermissionsChange(principal=users["allowed"]["name"], add=[catalog.Privilege.USE_CONNECTION])],
        )
    return {"names": names, "secret": secret, "users": users}


def external_url(server, connection):
    return server.url(f"/api/2.0/mcp/external/{connection}")


def test_a_user_with_use_connection_lists_only_the_allowed_tools(server, world):
    listed = tools(external_url(server, world["names"]["mcp"]), world["users"]["allowed"]["token"])
    assert set(listed) == ALLOWED_TOOLS, listed
    schema = listed["add"].inputSchema
    assert set(schema["properties"]) == {"a", "b"} and set(schema.get("required", [])) == {"a", "b"}, schema
    assert listed["add"].description == "Adds two integers.", listed["add"]
    # Without `mcp_allowed_tools`, every upstream tool is offered.
    everything = tools(external_url(server, world["names"]["open"]), world["users"]["allowed"]["token"])
    assert set(everything) == ALLOWED_TOOLS | {"wipe"}, everything


def test_a_call_reaches_the_upstream_with_the_connections_credential_only(server, world, upstream):
    url = external_url(server, world["names"]["mcp"])
    caller = world["users"]["allowed"]["token"]
    before = len(recorded(upstream))
    result, error = call(url, caller, "add", {"a": 2, "b": 40})
    assert error is None and not result.isError, (error, result)
    assert text_of(result) == "42", result
    result, error = call(url, caller, "echo_headers", {})
    assert error is None and not result.isError, (error, result)
    headers = {name.lower(): value for name, value in json.loads(text_of(result)).items()}
    assert headers["authorization"] == f"Bearer {world['secret']}", headers
    assert caller not in json.dumps(headers), "the caller's token reached the upstream"
    entries = recorded(upstream)[before:]
    assert ("tools/call", "add") in [(entry["rpc"], entry["tool"]) for entry in rpc_messages(entries)], entries
    seen = http_requests(entries)
    assert seen, "the upstream saw no request"
    assert all(request["method"] == "POST" and request["path"] == "/mcp" for request in seen), seen
    assert all(request["authorization"] == f"Bearer {world['secret']}" for request in seen), seen
    assert caller not in json.dumps(seen)


def test_a_tool_outside_the_allowed_list_is_refused_and_never_runs(server, world, upstream):
    url = external_url(server, world["names"]["mcp"])
    before = len(recorded(upstream))
    refusal = assert_refused(url, world["users"]["allowed"]["token"], "wipe", {})
    assert "wipe" in refusal, refusal
    assert not upstream["wiped"].exists(), "the refused tool ran upstream"
    called = [entry["tool"] for entry in rpc_messages(recorded(upstream)[before:]) if entry["rpc"] == "tools/call"]
    assert called == [], f"a refused call reached the upstream: {called}"


def test_a_user_without_use_connection_is_refused(server, world, upstream):
    url = external_url(server, world["names"]["mcp"])
    token = world["users"]["refused"]["token"]
    before = len(recorded(upstream))
    listed = raw_post(url, token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      headers={"MCP-Protocol-Version": "2025-06-18"})
    assert listed.status_code == 403, (listed.status_code, listed.text)
    assert "USE_CONNECTION" in listed.text, listed.text
    with pytest.raises(Exception) as refused:
        in_session(url, lambda session: session.call_tool("add", {"a": 1, "b": 2}), token=token, timeout=TIMEOUT_SECONDS)
    assert "403" in str(refused.value), refused.value
    assert len(recorded(upstream)) == before, "a refused user's request reached the upstream"


def test_a_connection_not_marked_as_mcp_is_not_an_mcp_server(server, world, upstream):
    before = len(recorded(upstream))
    for name in (world["names"]["plain"], f"no_such_connection_{uuid.uuid4().hex[:6]}"):
        answer = raw_post(external_url(server, name), world["users"]["allowed"]["token"])
        assert answer.status_code == 404, (name, answer.status_code, answer.text)
    assert len(recorded(upstream)) == before


def test_databricks_mcp_client_lists_and_calls_the_external_server(server, world):
    from databricks_mcp import DatabricksMCPClient

    allowed = WorkspaceClient(host=server.host, token=world["users"]["allowed"]["token"], auth_type="pat")
    client = DatabricksMCPClient(external_url(server, world["names"]["mcp"]), allowed)
    assert {tool.name for tool in in_thread(client.list_tools, TIMEOUT_SECONDS)} == ALLOWED_TOOLS
    result = in_thread(lambda: client.call_tool("add", {"a": 20, "b": 22}), TIMEOUT_SECONDS)
    assert not result.isError and text_of(result) == "42", result
    resources = in_thread(client.get_databricks_resources, TIMEOUT_SECONDS)
    assert [resource.name for resource in resources] == [world["names"]["mcp"]], resources


def test_external_tool_calls_are_audited(server, world):
    before = audit_events(server)
    after = before[-1]["seq"] if before else 0
    name = world["names"]["mcp"]
    url = external_url(server, name)
    token = world["users"]["allowed"]["token"]
    result, _ = call(url, token, "add", {"a": 1, "b": 1})
    assert result is not None and not result.isError
    assert_refused(url, token, "wipe", {})
    calls = [event for event in audit_events(server, after)
             if event["api"] == "mcp tools/call" and event["user_name"] == world["users"]["allowed"]["name"]]
    allowed = [event for event in calls if event["securable"] == f"mcp/external/{name} tool:add"]
    assert allowed and allowed[0]["allowed"] and allowed[0]["actors"] == [], calls
    refused = [event for event in calls if event["securable"] == f"mcp/external/{name} tool:wipe"]
    assert refused and not refused[0]["allowed"], calls
