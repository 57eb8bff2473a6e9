"""The `mcp` category of the attack suite (loaded by `run.py`): the managed MCP servers under `/api/2.0/mcp/`.

Attacks on the MCP authorization profile (a token bound to one MCP server used at another, at the REST API, as an
exchange subject, at introspection; RFC 8707 `resource` naming something that is not an MCP server of this one;
tokens missing some of a server's scopes), on the MCP paths (dot segments, encoded slashes, extra segments), on the
tools (calls by name without the grants, a grant revoked between listing and calling, writes fed to the read-only
SQL tool), on the 2026-07-28 envelope (headers that disagree with the body), on the external MCP proxy (connections
not marked as MCP, callers without USE_CONNECTION, tools outside `mcp_allowed_tools`, the connection's credential),
on dynamic client registration, and on a stored function spec that does not parse.

Every case is bounded (HTTP timeouts of `TIMEOUT` seconds) and talks to loopback only: the external MCP upstream is a
tiny JSON-RPC server on 127.0.0.1 started by the case that needs it and stopped on the way out.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
import uuid

import requests

from harness import Api, Reply, split_jwt
from run import (
    GRANT_EXCHANGE, TT_ACCESS, Fail, StoredSpec, case, check, expect_oauth_error, expect_ok,
)

MCP = "mcp"
TIMEOUT = 15
SQL_SCOPES = {"mcp.sql", "sql.statement-execution", "sql.warehouses"}
FUNCTION_SCOPES = {"mcp.functions", "catalog.functions", "sql.statement-execution"}
SQL_TOOL = "execute_sql_read_only"
CATALOG, SCHEMA, FUNCTION = "mcpsec", "fn", "secret_fn"
FUNCTION_TOOL = f"{CATALOG}__{SCHEMA}__{FUNCTION}"
FUNCTION_MARK = "FN-SECRET-" + uuid.uuid4().hex[:8]
UPSTREAM_SECRET = "mcp-upstream-secret-" + uuid.uuid4().hex
UPSTREAM_MARK = "UPSTREAM-RAN-" + uuid.uuid4().hex[:8]
VICTIM_MARK = "victim-row-" + uuid.uuid4().hex[:8]


# ---- helpers ---------------------------------------------------------------------------------------------------------

def _rpc(ctx, path, token, method, params=None, headers=None, rpc_id=1) -> Reply:
    body = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not None:
        body["params"] = params
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    # A connection of its own: a refusal answered before the body was read may close it, and the shared session
    # would then fail its next request.
    return Reply(requests.post(ctx.server.host + path, data=json.dumps(body), headers=sent, timeout=TIMEOUT))


def _initialize(ctx, path, token) -> Reply:
    return _rpc(ctx, path, token, "initialize",
                {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attack", "version": "0"}})


def _fresh(ctx) -> Api:
    """A client on new connections, for requests the server refuses (see `_rpc`)."""
    return Api(ctx.server.host, requests.Session())


def _tools(ctx, path, token) -> list[str]:
    reply = _rpc(ctx, path, token, "tools/list", {})
    check(reply.status == 200 and isinstance(reply.get("result"), dict), f"tools/list at {path}: {reply!r}")
    return [tool["name"] for tool in reply.body["result"]["tools"]]


def _call(ctx, path, token, name, arguments, headers=None) -> Reply:
    return _rpc(ctx, path, token, "tools/call", {"name": name, "arguments": arguments}, headers=headers)


def _expect_tool_refused(reply: Reply, *secrets: str) -> str:
    """A refused tool call: HTTP 200 with a JSON-RPC error or an `isError` result, and none of `secrets` in it."""
    check(reply.status == 200 and isinstance(reply.body, dict), f"expected a JSON-RPC answer, got {reply!r}")
    if "error" in reply.body:
        said = str(reply.body["error"].get("message", ""))
        check(isinstance(reply.body["error"].get("code"), int), f"JSON-RPC error without a code: {reply!r}")
    else:
        result = reply.body.get("result") or {}
        check(result.get("isError") is True, f"the call answered data instead of a refusal: {reply!r}")
        said = " ".join(item.get("text", "") for item in result.get("content", []))
    for secret in secrets:
        check(secret not in reply.text, f"the refusal leaks {secret!r}: {reply!r}")
    return said


def _expect_rpc_error(reply: Reply, status: int, code: int, phrase: str) -> None:
    error = reply.get("error") or {}
    check(reply.status == status and error.get("code") == code and phrase.lower() in str(error.get("message", "")).lower()
          and "result" not in (reply.body or {}),
          f"expected HTTP {status} JSON-RPC {code} containing {phrase!r}, got {reply!r}")


def _expect_mcp_unauthenticated(reply: Reply, path: str, host: str) -> None:
    challenge = reply.headers.get("WWW-Authenticate", "")
    check(reply.status == 401 and challenge.startswith("Bearer")
          and f'resource_metadata="{host}/.well-known/oauth-protected-resource{path}"' in challenge
          and "result" not in (reply.body or {}),
          f"expected 401 naming the protected resource metadata of {path}, got {reply!r} {challenge!r}")


def _raw(ctx, method: str, path: str, token: str | None, body: bytes | None = None, headers=None):
    """One request with the path sent byte for byte (no client-side dot-segment removal or re-encoding)."""
    host = urllib.parse.urlparse(ctx.server.host)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=TIMEOUT)
    try:
        sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace"), dict(response.getheaders())
    finally:
        connection.close()


def _users(ctx):
    return ctx.fresh_users("mcp")


def _world(ctx):
    """`mcpsec.fn.secret_fn`, a function bob may EXECUTE and carol may not (both may use the catalog and schema)."""
    if getattr(ctx, "_mcp_world", False):
        return
    for statement in [
        f"CREATE CATALOG {CATALOG}",
        f"CREATE SCHEMA {CATALOG}.{SCHEMA}",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.{FUNCTION}(x STRING) RETURNS STRING "
        f"RETURN concat('{FUNCTION_MARK}:', x)",
        f"CREATE TABLE {CATALOG}.{SCHEMA}.victim (id INT, note STRING)",
        f"INSERT INTO {CATALOG}.{SCHEMA}.victim VALUES (1, '{VICTIM_MARK}'), (2, 'two')",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `bob@example.com`",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `carol@example.com`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `bob@example.com`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `carol@example.com`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.{FUNCTION} TO `bob@example.com`",
        f"GRANT SELECT ON TABLE {CATALOG}.{SCHEMA}.victim TO `bob@example.com`",
    ]:
        ctx.sql_ok(ctx.admin, statement)
    ctx._mcp_world = True


FUNCTIONS_PATH = f"/api/2.0/mcp/functions/{CATALOG}/{SCHEMA}"


def _bound_token(ctx, path="/api/2.0/mcp/sql", scopes=SQL_SCOPES) -> str:
    """A real sign-in (the bootstrap admin's password) whose access token is bound to the MCP server at `path`."""
    key = f"_mcp_bound_{path}"
    if not hasattr(ctx, key):
        resource = ctx.server.host + path
        tokens = _local_tokens(ctx, scope=" ".join(sorted(scopes)), resource=resource)
        claims = split_jwt(tokens["access_token"])[1]
        check(claims["aud"] in (resource, [resource]), f"the sign-in token is not bound to {resource}: {claims}")
        setattr(ctx, key, tokens["access_token"])
    return getattr(ctx, key)


def _without_host(ctx, text: str) -> str:
    """The text without the server's address, whose random port may hold the secret's digits (42)."""
    return text.replace(ctx.server.host, "")


# ---- tokens bound to one MCP server -----------------------------------------------------------------------------

@case(MCP, "control: a token bound to the SQL server lists and calls its tool there")
def _(ctx):
    token = _bound_token(ctx)
    check(SQL_TOOL in _tools(ctx, "/api/2.0/mcp/sql", token), "the SQL tool is not listed")
    reply = _call(ctx, "/api/2.0/mcp/sql", token, SQL_TOOL, {"query": "SELECT 41 + 1 AS n"})
    check(reply.status == 200 and not reply.body["result"].get("isError") and "42" in reply.text, f"{reply!r}")


@case(MCP, "a token bound to the SQL server is refused (401) at every other MCP server")
def _(ctx):
    _world(ctx)
    token = _bound_token(ctx)
    for path in ["/api/2.0/mcp/functions/mcpsec/fn", "/api/2.0/mcp/vector-search/vsec/docs",
                 "/api/2.0/mcp/genie/01f0c0ffee0000000000000000000000", "/api/2.0/mcp/external/sec_http",
                 "/api/2.0/mcp/sql/extra", "/api/2.0/mcp/functions/mcpsec/fn/secret_fn"]:
        reply = _call(ctx, path, token, FUNCTION_TOOL, {"x": "a"})
        if path == "/api/2.0/mcp/sql/extra":
            check(reply.status in (401, 404) and FUNCTION_MARK not in reply.text, f"{path}: {reply!r}")
            continue
        try:
            _expect_mcp_unauthenticated(reply, path, ctx.server.host)
        except Fail as failure:
            raise Fail(f"{path}: {failure}") from None
        check(FUNCTION_MARK not in reply.text, f"{path}: data in the refusal")


@case(MCP, "a token bound to the SQL server is refused (401) at the REST API: SCIM Me, sql/statements, warehouses")
def _(ctx):
    token = _bound_token(ctx)
    for reply in [_fresh(ctx).get("/api/2.0/preview/scim/v2/Me", token, timeout=TIMEOUT),
                  _fresh(ctx).get("/api/2.0/sql/warehouses", token, timeout=TIMEOUT),
                  _fresh(ctx).sql(token, ctx.warehouse, "SELECT count(*) FROM sec.hr.secret", wait="5s")]:
        check(reply.status == 401 and reply.get("error_code") == "UNAUTHENTICATED" and "admin" not in reply.text
              and "42" not in _without_host(ctx, reply.text), f"expected 401 UNAUTHENTICATED, got {reply!r}")


@case(MCP, "a token bound to the SQL server cannot be exchanged (subject_token) nor used to introspect")
def _(ctx):
    token = _bound_token(ctx)
    for subject_type in [TT_ACCESS, "urn:ietf:params:oauth:token-type:jwt"]:
        reply = _fresh(ctx).form("/oidc/v1/token", {"grant_type": GRANT_EXCHANGE, "subject_token": token,
                                                     "subject_token_type": subject_type})
        check(reply.status in (400, 401) and reply.get("error") in ("invalid_grant", "invalid_request", "invalid_target")
              and "access_token" not in reply.text, f"exchange of a bound token ({subject_type}): {reply!r}")
    reply = _fresh(ctx).form("/oidc/v1/token", {"grant_type": GRANT_EXCHANGE, "subject_token": token,
                                                 "subject_token_type": TT_ACCESS, "resource": ctx.server.host})
    check(reply.status in (400, 401) and "access_token" not in reply.text, f"exchange to the workspace: {reply!r}")
    introspected = requests.post(f"{ctx.server.host}/oidc/v1/introspect", data={"token": _users(ctx).alice},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    check(introspected.status_code == 401 and "alice" not in introspected.text,
          f"introspection with a bound token: {introspected.status_code} {introspected.text[:300]}")


@case(MCP, "authorize: `resource` that is not an MCP server of this one -> invalid_target back to the app, no code")
def _(ctx):
    host = ctx.server.host
    port = int(host.rsplit(":", 1)[1])
    failures = []
    for resource in [
        f"{host}/api/2.0/preview/scim/v2/Me",
        f"{host}/api/2.0/sql/statements",
        f"{host}/api/2.0/mcpx/sql",
        f"{host}/api/2.0/mcp/../preview/scim/v2/Me",
        f"{host}/api/2.0/mcp/%2e%2e/preview/scim/v2/Me",
        f"http://localhost:{port}/api/2.0/mcp/sql",
        f"http://127.0.0.1:{port + 1}/api/2.0/mcp/sql",
        "https://evil.example/api/2.0/mcp/sql",
        f"{host}/api/2.0/mcp/sql?x=1",
        f"{host}/api/2.0/mcp/sql#frag",
        "not a url",
    ]:
        _, challenge = _pkce()
        browser = requests.Session()
        response = _get(browser, _authorize_url(ctx, challenge, scope="mcp.sql", resource=resource))
        try:
            _expect_app_error(ctx, response, "invalid_target", "is not a resource of this server")
        except Fail as failure:
            failures.append(f"{resource}: {failure}")
    check(not failures, "\n".join(failures))


@case(MCP, "token endpoint: a code redeemed for another resource than authorized -> invalid_target, nothing issued")
def _(ctx):
    resource = ctx.server.host + "/api/2.0/mcp/sql"
    code, verifier = _local_code(ctx, scope="mcp.sql", resource=resource)
    reply = _token(ctx, {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/",
                         "client_id": "databricks-cli", "code_verifier": verifier,
                         "resource": ctx.server.host + "/api/2.0/mcp/functions/mcpsec/fn"})
    expect_oauth_error(reply, 400, "invalid_target", "not the one of the authorization request")
    check("access_token" not in reply.text, f"tokens issued: {reply!r}")


@case(MCP, "a token holding only some of a server's scopes: 403 insufficient_scope naming them all; no tool runs")
def _(ctx):
    _world(ctx)
    partial = ctx.jwt(_users(ctx).bob, scope="mcp.functions catalog.functions")
    for method, params in [("tools/list", {}), ("tools/call", {"name": FUNCTION_TOOL, "arguments": {"x": "p"}})]:
        reply = _rpc(ctx, FUNCTIONS_PATH, partial, method, params)
        challenge = reply.headers.get("WWW-Authenticate", "")
        named = challenge.split('scope="', 1)[1].split('"', 1)[0].split() if 'scope="' in challenge else []
        check(reply.status == 403 and challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge
              and set(named) == FUNCTION_SCOPES and FUNCTION_MARK not in reply.text and FUNCTION_TOOL not in reply.text,
              f"{method}: expected 403 insufficient_scope naming {FUNCTION_SCOPES}, got {reply!r} {challenge!r}")
    # A sign-in bound to the SQL server with mcp.sql only.
    narrow = _local_tokens(ctx, scope="mcp.sql", resource=ctx.server.host + "/api/2.0/mcp/sql")["access_token"]
    check(split_jwt(narrow)[1].get("scope", "").split() == ["mcp.sql"], "the narrow sign-in holds more scopes")
    reply = _call(ctx, "/api/2.0/mcp/sql", narrow, SQL_TOOL, {"query": "SELECT x FROM sec.hr.secret"})
    challenge = reply.headers.get("WWW-Authenticate", "")
    check(reply.status == 403 and 'error="insufficient_scope"' in challenge
          and "42" not in _without_host(ctx, reply.text),
          f"mcp.sql only at the SQL server: {reply!r} {challenge!r}")


@case(MCP, "percent-encoded server paths do not skip the server's scope check (403 insufficient_scope, nothing runs)")
def _(ctx):
    _world(ctx)
    failures = []
    victim = f"SELECT note FROM {CATALOG}.{SCHEMA}.victim"
    for scope, path, body, mark in [
        # No mcp.sql: the SQL server must refuse, whatever spelling of its path.
        ("sql.statement-execution sql.warehouses", "/api/2.0/mcp/%73ql",
         {"name": SQL_TOOL, "arguments": {"query": victim}}, VICTIM_MARK),
        ("sql.statement-execution sql.warehouses", "/api/2.0/mcp/sq%6C",
         {"name": SQL_TOOL, "arguments": {"query": victim}}, VICTIM_MARK),
        # No mcp.functions: the functions server must refuse.
        ("catalog.functions sql.statement-execution sql.warehouses", "/api/2.0/mcp/functions/mcpsec%2Ffn",
         {"name": FUNCTION_TOOL, "arguments": {"x": "enc"}}, FUNCTION_MARK),
        ("catalog.functions sql.statement-execution sql.warehouses", "/api/2.0/mcp/functions%2Fmcpsec%2Ffn",
         {"name": FUNCTION_TOOL, "arguments": {"x": "enc"}}, FUNCTION_MARK),
    ]:
        token = ctx.jwt(_users(ctx).bob, scope=scope)
        data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": body}).encode()
        status, text, headers = _raw(ctx, "POST", path, token, data)
        challenge = {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "")
        if not (status in (403, 404) and mark not in text and '"result"' not in text):
            failures.append(f"POST {path} with scope `{scope}`: {status} {text[:300]!r} challenge={challenge!r}")
        elif status == 403 and 'error="insufficient_scope"' not in challenge:
            failures.append(f"POST {path}: 403 without an insufficient_scope challenge: {challenge!r}")
    check(not failures, "\n".join(failures))


# ---- paths --------------------------------------------------------------------------------------------------------

@case(MCP, "path tricks at MCP paths (dot segments, encoded slashes, extra segments) -> 404, never data")
def _(ctx):
    _world(ctx)
    bound = _bound_token(ctx)
    initialize = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                             "params": {"name": FUNCTION_TOOL, "arguments": {"x": "t"}}}).encode()
    failures = []
    for path, token in [
        ("/api/2.0/mcp/sql/../preview/scim/v2/Me", bound),
        ("/api/2.0/mcp/sql/../../2.0/preview/scim/v2/Me", bound),
        ("/api/2.0/mcp/sql/%2e%2e/preview/scim/v2/Me", bound),
        ("/api/2.0/mcp/sql%2F..%2Fpreview%2Fscim%2Fv2%2FMe", bound),
        ("/api/2.0/mcp/functions/mcpsec%2Ffn", _users(ctx).bob),
        ("/api/2.0/mcp/functions/mcpsec/fn%2Fsecret_fn", _users(ctx).bob),
        ("/api/2.0/mcp/functions/a/b/c/d", _users(ctx).bob),
        ("/api/2.0/mcp/functions/mcpsec/fn/secret_fn/extra", _users(ctx).bob),
        ("/api/2.0/mcp/functions/mcpsec/../mcpsec/fn", _users(ctx).carol),
        ("/api/2.0/mcp/vector-search/vsec/docs/idx/more", _users(ctx).alice),
        ("/api/2.0/mcp/genie/a/b", _users(ctx).alice),
        ("/api/2.0/mcp/nosuchserver", _users(ctx).alice),
        ("/api/2.0/mcp/external/sec_http/extra", _users(ctx).alice),
    ]:
        for method, body in [("POST", initialize), ("GET", None)]:
            status, text, _ = _raw(ctx, method, path, token, body)
            # A token bound to the SQL server may also be refused as bound elsewhere (401); never served.
            refused = status == 404 or (token is bound and status == 401)
            if not (refused and FUNCTION_MARK not in text and "userName" not in text and '"result"' not in text):
                failures.append(f"{method} {path}: {status} {text[:200]!r}")
    check(not failures, "\n".join(failures))


# ---- tools without grants ----------------------------------------------------------------------------------------

@case(MCP, "functions: a user without EXECUTE calling the tool by name is refused; the function does not run")
def _(ctx):
    _world(ctx)
    check(FUNCTION_TOOL in _tools(ctx, FUNCTIONS_PATH, _users(ctx).bob), "control: bob may execute the function")
    check(_tools(ctx, FUNCTIONS_PATH, _users(ctx).carol) == [], "carol is offered tools she may not execute")
    for path in [FUNCTIONS_PATH, f"{FUNCTIONS_PATH}/{FUNCTION}"]:
        _expect_tool_refused(_call(ctx, path, _users(ctx).carol, FUNCTION_TOOL, {"x": "c"}), FUNCTION_MARK)
    # A function of a schema carol cannot even use, and the policy functions of sec.hr (EXECUTE for nobody).
    for path, name in [("/api/2.0/mcp/functions/sec/hr", "sec__hr__mask_ssn"),
                       ("/api/2.0/mcp/functions/sec/hr/eng_only", "sec__hr__eng_only"),
                       (FUNCTIONS_PATH, "sec__hr__mask_ssn")]:
        _expect_tool_refused(_call(ctx, path, _users(ctx).bob, name, {"s": "ssn-111", "d": "eng"}), "ssn-111")


@case(MCP, "vector search: a user without SELECT on the index calling it by name gets no rows")
def _(ctx):
    ctx.vector_index()
    path, name = "/api/2.0/mcp/vector-search/vsec/docs", "vsec__docs__idx"
    check(name in _tools(ctx, path, _users(ctx).alice), "control: alice may read the index")
    for token in [_users(ctx).bob, _users(ctx).carol]:
        check(name not in _tools(ctx, path, token), "a user without SELECT is offered the index")
        for where in [path, f"{path}/idx"]:
            _expect_tool_refused(_call(ctx, where, token, name, {"query": "alpha", "num_results": 5}),
                                 "alpha", "bravo", "charlie")


@case(MCP, "genie: a user without CAN_RUN calling the space's tools by name is refused")
def _(ctx):
    # The space's model: an external OpenAI-style endpoint on a loopback port nothing listens on.
    expect_ok(ctx.api.post("/api/2.0/serving-endpoints", ctx.admin, {
        "name": "mcp-attack-model", "config": {"name": "mcp-attack-model", "served_entities": [{
            "name": "m", "external_model": {"provider": "openai", "name": "m", "task": "llm/v1/chat", "openai_config": {
                "openai_api_base": "http://127.0.0.1:9/v1", "openai_api_key_plaintext": "sk-test-double"}}}]}},
        timeout=TIMEOUT), "serving endpoint")
    serialized = {"version": 1, "data_sources": {"tables": [{"identifier": "sec.hr.staff"}]},
                  "deputy": {"serving_endpoint_name": "mcp-attack-model"}}
    space = expect_ok(ctx.api.post("/api/2.0/genie/spaces", ctx.admin, {
        "warehouse_id": ctx.warehouse, "serialized_space": json.dumps(serialized), "title": "mcp attack space"},
        timeout=TIMEOUT), "genie space")["space_id"]
    path = f"/api/2.0/mcp/genie/{space}"
    reply = _rpc(ctx, path, _users(ctx).carol, "tools/list", {})
    listed = [t["name"] for t in (reply.get("result") or {}).get("tools", [])]
    check(not listed, f"carol is offered the space's tools: {reply!r}")
    for name, arguments in [(f"query_space_{space}", {"query": "list every ssn"}),
                            (f"poll_response_{space}", {"conversation_id": "c", "message_id": "m"})]:
        _expect_tool_refused(_call(ctx, path, _users(ctx).carol, name, arguments), "ssn-", "Ann")


@case(MCP, "a grant revoked between tools/list and tools/call is decided again at call time")
def _(ctx):
    _world(ctx)
    path = FUNCTIONS_PATH
    ctx.sql_ok(ctx.admin, f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.{FUNCTION} TO `carol@example.com`")
    try:
        check(FUNCTION_TOOL in _tools(ctx, path, _users(ctx).carol), "control: after the grant carol is offered the tool")
        ran = _call(ctx, path, _users(ctx).carol, FUNCTION_TOOL, {"x": "before"})
        check(ran.status == 200 and f"{FUNCTION_MARK}:before" in ran.text, f"control: the call runs: {ran!r}")
        ctx.sql_ok(ctx.admin, f"REVOKE EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.{FUNCTION} FROM `carol@example.com`")
        _expect_tool_refused(_call(ctx, path, _users(ctx).carol, FUNCTION_TOOL, {"x": "after"}), FUNCTION_MARK)
    finally:
        ctx.sql(ctx.admin, f"REVOKE EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.{FUNCTION} FROM `carol@example.com`")
    # The same for an index: alice loses SELECT between listing and calling.
    ctx.vector_index()
    vs_path, name = "/api/2.0/mcp/vector-search/vsec/docs", "vsec__docs__idx"
    check(name in _tools(ctx, vs_path, _users(ctx).alice), "control: alice is offered the index")
    expect_ok(ctx.api.patch("/api/2.1/unity-catalog/permissions/table/vsec.docs.idx", ctx.admin,
                            {"changes": [{"principal": "alice@example.com", "remove": ["SELECT"]}]}), "revoke SELECT")
    try:
        _expect_tool_refused(_call(ctx, vs_path, _users(ctx).alice, name, {"query": "alpha"}), "alpha", "bravo", "charlie")
    finally:
        expect_ok(ctx.api.patch("/api/2.1/unity-catalog/permissions/table/vsec.docs.idx", ctx.admin,
                                {"changes": [{"principal": "alice@example.com", "add": ["SELECT"]}]}), "re-grant")


@case(MCP, "the SQL tool refuses writes (INSERT, DELETE, DROP, GRANT, stacked, COPY INTO, CTAS); the table is unchanged")
def _(ctx):
    _world(ctx)
    table = f"{CATALOG}.{SCHEMA}.victim"
    before = ctx.sql_ok(ctx.admin, f"SELECT id, note FROM {table} ORDER BY id")
    failures = []
    for token, who in [(ctx.admin, "admin"), (_users(ctx).bob, "bob")]:
        for statement in [
            f"INSERT INTO {table} VALUES (3, 'three')",
            f"DELETE FROM {table}",
            f"UPDATE {table} SET note = 'x'",
            f"DROP TABLE {table}",
            f"GRANT SELECT ON TABLE {table} TO `carol@example.com`",
            f"SELECT 1; DROP TABLE {table}",
            f"SELECT 1; DELETE FROM {table}",
            f"COPY INTO {table} FROM '/etc/passwd' FILEFORMAT = CSV",
            f"CREATE TABLE {CATALOG}.{SCHEMA}.copied AS SELECT * FROM {table}",
            f"TRUNCATE TABLE {table}",
            f"MERGE INTO {table} t USING {table} s ON t.id = s.id WHEN MATCHED THEN DELETE",
            f"WITH x AS (SELECT 1) DELETE FROM {table}",
        ]:
            reply = _call(ctx, "/api/2.0/mcp/sql", token, SQL_TOOL, {"query": statement})
            try:
                _expect_tool_refused(reply, "root:")
            except Fail as failure:
                failures.append(f"{who}: {statement}: {failure}")
    after = ctx.sql_ok(ctx.admin, f"SELECT id, note FROM {table} ORDER BY id")
    check(after == before, f"the table changed: {before} -> {after}")
    grants = _fresh(ctx).sql(_users(ctx).carol, ctx.warehouse, f"SELECT * FROM {table}")
    check(not (grants.status == 200 and grants.body["status"]["state"] == "SUCCEEDED"), "carol was granted SELECT")
    tables = ctx.api.get(f"/api/2.1/unity-catalog/tables/{CATALOG}.{SCHEMA}.copied", ctx.admin, timeout=TIMEOUT)
    check(tables.status == 404, f"a table was created: {tables!r}")
    check(not failures, "\n".join(failures))


# ---- the 2026-07-28 envelope --------------------------------------------------------------------------------------

def _envelope(version="2026-07-28"):
    return {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}


@case(MCP, "2026-07-28: headers disagreeing with the body (version, method, Mcp-Name) -> -32020, nothing runs")
def _(ctx):
    _world(ctx)
    arguments = {"x": "env"}

    def params(version="2026-07-28", name=FUNCTION_TOOL):
        return {"name": name, "arguments": arguments, "_meta": _envelope(version)}

    control = _rpc(ctx, FUNCTIONS_PATH, _users(ctx).bob, "tools/call", params(), headers={
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": FUNCTION_TOOL})
    check(control.status == 200 and f"{FUNCTION_MARK}:env" in control.text
          and control.body["result"].get("resultType") == "complete", f"control: {control!r}")
    failures = []
    for label, body_params, headers, phrase in [
        ("header 2025-06-18, body 2026-07-28", params(),
         {"MCP-Protocol-Version": "2025-06-18", "Mcp-Method": "tools/call", "Mcp-Name": FUNCTION_TOOL},
         "MCP-Protocol-Version"),
        ("no version header", params(), {"Mcp-Method": "tools/call", "Mcp-Name": FUNCTION_TOOL},
         "MCP-Protocol-Version"),
        ("Mcp-Method tools/list", params(),
         {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", "Mcp-Name": FUNCTION_TOOL}, "Mcp-Method"),
        ("Mcp-Name of another tool", params(),
         {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "mcpsec__fn__other"},
         "Mcp-Name"),
        ("no Mcp-Name", params(), {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}, "Mcp-Name"),
        ("Mcp-Name differing in case", params(),
         {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": FUNCTION_TOOL.upper()},
         "Mcp-Name"),
    ]:
        reply = _rpc(ctx, FUNCTIONS_PATH, _users(ctx).bob, "tools/call", body_params, headers=headers)
        try:
            _expect_rpc_error(reply, 400, -32020, phrase)
            check(FUNCTION_MARK not in reply.text, "the tool ran")
        except Fail as failure:
            failures.append(f"{label}: {failure}")
    # A version nobody speaks, header and body agreeing: -32022, nothing runs.
    reply = _rpc(ctx, FUNCTIONS_PATH, _users(ctx).bob, "tools/call", params("2099-01-01"), headers={
        "MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/call", "Mcp-Name": FUNCTION_TOOL})
    try:
        _expect_rpc_error(reply, 400, -32022, "not supported")
        check(FUNCTION_MARK not in reply.text, "the tool ran")
    except Fail as failure:
        failures.append(f"unsupported version: {failure}")
    check(not failures, "\n".join(failures))


# ---- external MCP ---------------------------------------------------------------------------------------------------

class McpUpstream:
    """A loopback JSON-RPC MCP server with tools `echo` (answers the Authorization header it saw) and `wipe`
    (records that it ran); records every request (method, path, Authorization, JSON-RPC method, tool)."""

    def __init__(self):
        import http.server

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    message = json.loads(raw or b"null")
                except ValueError:
                    message = None
                message = message if isinstance(message, dict) else {}
                params = message.get("params") or {}
                seen.append({"method": self.command, "path": self.path,
                             "authorization": self.headers.get("Authorization"),
                             "rpc": message.get("method"), "tool": params.get("name") if isinstance(params, dict) else None})
                if "id" not in message:
                    self.send_response(202)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rpc = message.get("method")
                if rpc == "initialize":
                    result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                              "capabilities": {"tools": {}}, "serverInfo": {"name": "upstream", "version": "1"}}
                elif rpc == "tools/list":
                    schema = {"type": "object", "properties": {}}
                    result = {"tools": [{"name": "echo", "description": "echo", "inputSchema": schema},
                                        {"name": "wipe", "description": "wipe", "inputSchema": schema}]}
                elif rpc == "tools/call":
                    text = f"{UPSTREAM_MARK} {params.get('name')}"
                    result = {"content": [{"type": "text", "text": text}], "isError": False}
                else:
                    result = {}
                body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                seen.append({"method": "GET", "path": self.path, "authorization": self.headers.get("Authorization"),
                             "rpc": None, "tool": None})
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _external(ctx):
    """Connections to one loopback MCP upstream: `mcpx_allowed` (MCP, tools limited to `echo`; alice holds
    USE_CONNECTION), `mcpx_plain` (the same upstream, not marked as MCP; alice holds USE_CONNECTION)."""
    if hasattr(ctx, "_mcp_upstream"):
        return ctx._mcp_upstream
    upstream = McpUpstream()
    options = {"host": "http://127.0.0.1", "port": str(upstream.port), "base_path": "/mcp",
               "bearer_token": UPSTREAM_SECRET}
    for name, extra in [("mcpx_allowed", {"is_mcp_connection": "true", "mcp_allowed_tools": "echo"}),
                        ("mcpx_plain", {}), ("mcpx_false", {"is_mcp_connection": "false"})]:
        expect_ok(ctx.api.post("/api/2.1/unity-catalog/connections", ctx.admin, {
            "name": name, "connection_type": "HTTP", "options": {**options, **extra}}, timeout=TIMEOUT), name)
        expect_ok(ctx.api.patch(f"/api/2.1/unity-catalog/permissions/connection/{name}", ctx.admin,
                                {"changes": [{"principal": "alice@example.com", "add": ["USE_CONNECTION"]}]},
                                timeout=TIMEOUT), f"USE_CONNECTION on {name}")
    ctx._mcp_upstream = upstream
    return upstream


@case(MCP, "external: control: alice lists the allowed tool and calls it; the upstream sees the connection's credential")
def _(ctx):
    upstream = _external(ctx)
    path = "/api/2.0/mcp/external/mcpx_allowed"
    check(_tools(ctx, path, _users(ctx).alice) == ["echo"], "alice is offered more than the allowed tool")
    before = len(upstream.seen)
    reply = _call(ctx, path, _users(ctx).alice, "echo", {})
    check(reply.status == 200 and f"{UPSTREAM_MARK} echo" in reply.text and UPSTREAM_SECRET not in reply.text,
          f"control call: {reply!r}")
    seen = upstream.seen[before:]
    check(seen and all(entry["authorization"] == f"Bearer {UPSTREAM_SECRET}" for entry in seen)
          and ("tools/call", "echo") in [(entry["rpc"], entry["tool"]) for entry in seen],
          f"the upstream did not see the call with the connection's credential only: {seen}")


@case(MCP, "external: a connection not marked as MCP (absent or \"false\"), or unknown, is 404; nothing goes upstream")
def _(ctx):
    upstream = _external(ctx)
    before = len(upstream.seen)
    for name in ["mcpx_plain", "mcpx_false", "no_such_connection", "sec_http"]:
        for method, params in [("initialize", None), ("tools/list", {}), ("tools/call", {"name": "echo", "arguments": {}})]:
            reply = _rpc(ctx, f"/api/2.0/mcp/external/{name}", _users(ctx).alice, method, params)
            check(reply.status == 404 and UPSTREAM_MARK not in reply.text and UPSTREAM_SECRET not in reply.text,
                  f"{name} {method}: {reply!r}")
    check(len(upstream.seen) == before, f"requests reached the upstream: {upstream.seen[before:]}")


@case(MCP, "external: a user without USE_CONNECTION gets 403; the upstream sees no request")
def _(ctx):
    upstream = _external(ctx)
    before = len(upstream.seen)
    path = "/api/2.0/mcp/external/mcpx_allowed"
    for token in [_users(ctx).bob, ctx.delegated(_users(ctx).bob)]:
        for method, params in [("initialize", None), ("tools/list", {}), ("tools/call", {"name": "echo", "arguments": {}})]:
            reply = _rpc(ctx, path, token, method, params)
            check(reply.status == 403 and "USE_CONNECTION" in reply.text and UPSTREAM_MARK not in reply.text
                  and UPSTREAM_SECRET not in reply.text, f"bob {method}: {reply!r}")
    check(len(upstream.seen) == before, f"a refused user's request reached the upstream: {upstream.seen[before:]}")


@case(MCP, "external: a tool outside mcp_allowed_tools is refused and never reaches the upstream")
def _(ctx):
    upstream = _external(ctx)
    path = "/api/2.0/mcp/external/mcpx_allowed"
    before = len(upstream.seen)
    for name in ["wipe", "WIPE", " wipe", "echo,wipe", "echo wipe", "wipe\u0000"]:
        _expect_tool_refused(_call(ctx, path, _users(ctx).alice, name, {}), UPSTREAM_MARK, UPSTREAM_SECRET)
    called = [entry["tool"] for entry in upstream.seen[before:] if entry["rpc"] == "tools/call"]
    check(called == [], f"a refused call reached the upstream: {called}")


@case(MCP, "external: the connection's bearer credential never appears in an answer (connection read, tools, errors)")
def _(ctx):
    upstream = _external(ctx)
    path = "/api/2.0/mcp/external/mcpx_allowed"
    answers = [
        _fresh(ctx).get("/api/2.1/unity-catalog/connections/mcpx_allowed", _users(ctx).alice, timeout=TIMEOUT),
        ctx.api.get("/api/2.1/unity-catalog/connections/mcpx_allowed", ctx.admin, timeout=TIMEOUT),
        ctx.api.get("/api/2.1/unity-catalog/connections", ctx.admin, timeout=TIMEOUT),
        _initialize(ctx, path, _users(ctx).alice),
        _rpc(ctx, path, _users(ctx).alice, "tools/list", {}),
        _call(ctx, path, _users(ctx).alice, "wipe", {}),
        _call(ctx, path, _users(ctx).alice, "echo", {"anything": 1}),
        _rpc(ctx, path, _users(ctx).alice, "resources/list", {}),
        _rpc(ctx, path, _users(ctx).bob, "tools/list", {}),
    ]
    leaked = [repr(reply) for reply in answers if UPSTREAM_SECRET in reply.text]
    check(not leaked, "the connection's credential is in answers:\n" + "\n".join(leaked))
    # Deputy never sends the caller's own token upstream.
    check(all(_users(ctx).alice not in str(entry["authorization"]) for entry in upstream.seen),
          "the caller's token reached the upstream")


# ---- dynamic client registration ----------------------------------------------------------------------------------

def _register(ctx, body) -> Reply:
    return _fresh(ctx).post("/oidc/v1/register", None, body, timeout=TIMEOUT)


@case(MCP, "registration: non-https, script, data, fragment, userinfo redirect URIs -> 400 invalid_redirect_uri")
def _(ctx):
    failures = []
    for uri in ["http://app.example.com/cb", "http://10.0.0.1/cb", "javascript:alert(1)", "data:text/html,hi",
                "https://app.example.com/cb#frag", "http://127.0.0.1:9/cb#x", "https://user:pw@app.example.com/cb",
                "http://evil@127.0.0.1:9/cb", "http://127.0.0.1.evil.example/cb", "file:///etc/passwd",
                "not a url", ""]:
        reply = _register(ctx, {"client_name": "attack", "redirect_uris": [uri], "token_endpoint_auth_method": "none"})
        try:
            check(reply.status == 400 and reply.get("error") == "invalid_redirect_uri" and "client_id" not in reply.text,
                  f"expected 400 invalid_redirect_uri, got {reply!r}")
        except Fail as failure:
            failures.append(f"{uri!r}: {failure}")
    reply = _register(ctx, {"client_name": "attack", "redirect_uris": [], "token_endpoint_auth_method": "none"})
    if not (reply.status == 400 and reply.get("error") == "invalid_redirect_uri"):
        failures.append(f"no redirect URI: {reply!r}")
    check(not failures, "\n".join(failures))


@case(MCP, "registration: unsupported grant types, response types, auth methods -> 400 invalid_client_metadata")
def _(ctx):
    failures = []
    base = {"client_name": "attack", "redirect_uris": ["http://127.0.0.1:9/cb"]}
    for extra in [{"grant_types": ["client_credentials"]}, {"grant_types": ["authorization_code", "password"]},
                  {"grant_types": ["implicit"]}, {"grant_types": [GRANT_EXCHANGE]},
                  {"response_types": ["token"]}, {"token_endpoint_auth_method": "private_key_jwt"},
                  {"grant_types": "authorization_code"}, {"redirect_uris": "http://127.0.0.1:9/cb"}]:
        reply = _register(ctx, {**base, **extra})
        if not (reply.status == 400 and reply.get("error") in ("invalid_client_metadata", "invalid_redirect_uri")
                and "client_id" not in reply.text):
            failures.append(f"{extra}: {reply!r}")
    check(not failures, "\n".join(failures))


@case(MCP, "registration: a huge body, deep nesting, not JSON -> refused without a 500; server still answers")
def _(ctx):
    failures = []
    for label, data in [
        ("20 MiB of redirect URIs", json.dumps({"redirect_uris": ["http://127.0.0.1:9/" + "a" * 1024] * 20000})),
        ("a 1 MiB client name", json.dumps({"client_name": "n" * (1 << 20),
                                            "redirect_uris": ["http://127.0.0.1:9/cb"],
                                            "token_endpoint_auth_method": "none"})),
        ("100 000-deep nesting", "[" * 100000 + "]" * 100000),
        ("not JSON", "redirect_uris=http://127.0.0.1:9/cb"),
        ("invalid UTF-8", b'{"redirect_uris": ["\xff\xfe"]}'),
    ]:
        try:
            response = requests.post(f"{ctx.server.host}/oidc/v1/register", data=data,
                                     headers={"Content-Type": "application/json"}, timeout=60)
            status, text = response.status_code, response.text
        except requests.RequestException as error:
            status, text = None, str(error)
        if label == "a 1 MiB client name":
            # Accepted or refused, but never a 500; when accepted, the consent page must stay bounded (not checked).
            if status is None or status >= 500:
                failures.append(f"{label}: {status} {text[:200]!r}")
            continue
        if status is None or not (400 <= status < 500) or "client_id" in text:
            failures.append(f"{label}: {status} {text[:200]!r}")
    check(ctx.server.healthy(), "the server stopped answering")
    check(not failures, "\n".join(failures))


# ---- stored data that does not parse -------------------------------------------------------------------------------

@case(MCP, "a stored function spec that does not parse: the functions server neither offers nor runs it, no internals")
def _(ctx):
    _world(ctx)
    check(FUNCTION_TOOL in _tools(ctx, FUNCTIONS_PATH, _users(ctx).bob), "control: bob is offered the function")
    failures = []
    for replacement in ["{not json", "[]", '{"routine_definition": 1}']:
        with StoredSpec(ctx, f"{CATALOG}.{SCHEMA}.{FUNCTION}", replacement):
            for path in [FUNCTIONS_PATH, f"{FUNCTIONS_PATH}/{FUNCTION}"]:
                for label, reply in [("tools/list", _rpc(ctx, path, _users(ctx).bob, "tools/list", {})),
                                     ("tools/call", _call(ctx, path, _users(ctx).bob, FUNCTION_TOOL, {"x": "corrupt"}))]:
                    listed = [t.get("name") for t in (reply.get("result") or {}).get("tools", [])] \
                        if label == "tools/list" else []
                    result = reply.get("result") or {}
                    ran = label == "tools/call" and result and not result.get("isError")
                    internals = [word for word in ["line 1 column", "expected value", "invalid type", "serde",
                                                   "panicked", replacement if len(replacement) > 3 else "\x00"]
                                 if word in reply.text]
                    if (reply.status >= 500 or FUNCTION_MARK in reply.text or FUNCTION_TOOL in listed or ran
                            or internals):
                        failures.append(f"{replacement!r} {path} {label}: {reply!r} internals={internals}")
    after = _call(ctx, FUNCTIONS_PATH, _users(ctx).bob, FUNCTION_TOOL, {"x": "restored"})
    check(f"{FUNCTION_MARK}:restored" in after.text, f"the restored spec works again: {after!r}")
    check(not failures, "\n".join(failures))


@case(MCP, "the loopback MCP upstream is stopped")
def _(ctx):
    upstream = getattr(ctx, "_mcp_upstream", None)
    if upstream is not None:
        upstream.stop()
        del ctx._mcp_upstream
    check(ctx.server.healthy(), "server down")


# The sign-in helpers, imported last: this category is registered before `sign-in` (whose last cases lock the
# bootstrap admin's password for the rest of the run), and the names are only looked up when a case runs.
from sign_in_cases import (  # noqa: E402
    _authorize_url, _expect_app_error, _get, _local_code, _local_tokens, _pkce, _token,
)
