"""What the MCP tests share: sessions of the official `mcp` client over streamable HTTP (bounded in time), a token
store and a person's browser for the client's OAuth provider, test doubles for chat models (the one behind a Genie
space, a tool-calling one for declarative agents), and the audit log."""

import contextlib
import http.server
import json
import threading
import urllib.parse
from datetime import timedelta

import anyio
import httpx
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

HTTP_TIMEOUT_SECONDS = 30
SESSION_TIMEOUT_SECONDS = 90


# --- sessions ------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_session(url, token=None, auth=None, responses=None):
    """An initialized `ClientSession` on `url`, with `token` as the bearer or `auth` (an httpx.Auth such as the SDK's
    OAuthClientProvider). Every HTTP response the client gets is appended to `responses` when given (the body of
    an error response is read, so that a failure can say what the server answered)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def record(response):
        if response.status_code >= 400:
            await response.aread()
        if responses is not None:
            responses.append(response)

    async with httpx.AsyncClient(
        headers=headers, auth=auth, timeout=httpx.Timeout(HTTP_TIMEOUT_SECONDS), event_hooks={"response": [record]}
    ) as http_client:
        async with streamable_http_client(url, http_client=http_client) as (read, write, _):
            async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=HTTP_TIMEOUT_SECONDS)) as session:
                await session.initialize()
                yield session


def in_session(url, work, token=None, auth=None, responses=None, timeout=SESSION_TIMEOUT_SECONDS):
    """Runs `await work(session)` in a fresh initialized session and returns its result; fails after `timeout`. When
    the client fails, the failure names the HTTP error responses it got (the client's own message, such as "Session
    terminated" for a 404, hides them)."""
    seen = [] if responses is None else responses

    async def main():
        with anyio.fail_after(timeout):
            async with open_session(url, token=token, auth=auth, responses=seen) as session:
                return await work(session)

    try:
        return anyio.run(main)
    except Exception as error:
        failed = [f"{r.request.method} {r.request.url} -> {r.status_code} {r.headers.get('WWW-Authenticate', '')} "
                  f"{r.text[:500]}" for r in seen if r.status_code >= 400]
        if failed and not isinstance(error, AssertionError):
            raise AssertionError("the MCP client failed; HTTP errors:\n" + "\n".join(failed)) from error
        raise


def tools(url, token):
    """The tools `tools/list` shows the bearer of `token`, by name."""

    async def work(session):
        return {tool.name: tool for tool in (await session.list_tools()).tools}

    return in_session(url, work, token=token)


def call(url, token, name, arguments):
    """`tools/call` as the bearer of `token`: (result, None) for a result (possibly `isError`), or (None, the
    JSON-RPC error) when the server answers with an error."""

    async def work(session):
        try:
            return await session.call_tool(name, arguments), None
        except McpError as error:
            return None, error.error

    return in_session(url, work, token=token)


def text_of(result):
    return "".join(item.text for item in result.content if item.type == "text")


def data_of(url, token, name, arguments):
    """The JSON of a tool call's text, asserting the call succeeded."""
    result, error = call(url, token, name, arguments)
    assert error is None, f"{name} answered a JSON-RPC error: {error}"
    assert not result.isError, f"{name} failed: {text_of(result)}"
    return json.loads(text_of(result))


def assert_refused(url, token, name, arguments):
    """The call is refused: an error result or a JSON-RPC error, never data. Returns what the refusal says."""
    result, error = call(url, token, name, arguments)
    if error is not None:
        return error.message
    assert result.isError, f"{name} answered data instead of a refusal: {text_of(result)}"
    return text_of(result)


def in_thread(function, timeout):
    """`function()` on a daemon thread, failing after `timeout` seconds (for clients that offer no timeout)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no answer within {timeout}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def raw_post(url, token=None, body=None, headers=None):
    """One JSON-RPC POST without a client library (default: `initialize`)."""
    body = body or {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return requests.post(url, json=body, headers=sent, timeout=HTTP_TIMEOUT_SECONDS)


# --- OAuth: token storage and the person's browser -----------------------------------------------------------------


class MemoryTokenStorage:
    """The `mcp.client.auth.TokenStorage` protocol, in memory."""

    def __init__(self, tokens=None, client_info=None):
        self.tokens = tokens
        self.client_info = client_info

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def hidden_field(page, name):
    marker = f'name="{name}" value="'
    assert marker in page, page[:1000]
    return page.split(marker, 1)[1].split('"', 1)[0]


class Browser:
    """Plays the person for `OAuthClientProvider`: `redirect_handler` gets the authorization URL and follows it with
    `requests` (the local password form of the bootstrap admin, then Deputy's consent page, approved) up to the
    redirect to the client's `redirect_uri`, which nothing listens on; `callback_handler` hands back its code and
    state. What it saw is kept: the authorization URLs and the consent pages."""

    def __init__(self, host, user_name, password, redirect_uri):
        self.host = host
        self.user_name = user_name
        self.password = password
        self.redirect_uri = redirect_uri
        self.authorize_urls = []
        self.consent_pages = []
        self.answer = None

    async def redirect_handler(self, url):
        self.authorize_urls.append(url)
        self.answer = await anyio.to_thread.run_sync(self.play, url)

    async def callback_handler(self):
        answer, self.answer = self.answer, None
        assert answer is not None, "the browser never reached the client's redirect URI"
        assert "code" in answer, f"the authorization was refused: {answer}"
        return answer["code"], answer.get("state")

    def play(self, url):
        """Follows `url` to the redirect to `redirect_uri`; returns that redirect's query parameters."""
        session = requests.Session()
        response = session.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT_SECONDS)
        for _ in range(12):
            if response.is_redirect:
                target = urllib.parse.urljoin(response.url, response.headers["Location"])
                if target.startswith(self.redirect_uri):
                    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(target).query))
                response = session.get(target, allow_redirects=False, timeout=HTTP_TIMEOUT_SECONDS)
            elif response.status_code == 200 and 'name="password"' in response.text:
                response = session.post(
                    f"{self.host}/oidc/v1/login",
                    data={"request": hidden_field(response.text, "request"), "user_name": self.user_name,
                          "password": self.password},
                    allow_redirects=False,
                    timeout=HTTP_TIMEOUT_SECONDS,
                )
            elif response.status_code == 200 and 'name="decision"' in response.text:
                self.consent_pages.append(response.text)
                response = session.post(
                    f"{self.host}/oidc/v1/consent",
                    data={"request": hidden_field(response.text, "request"), "decision": "approve"},
                    allow_redirects=False,
                    timeout=HTTP_TIMEOUT_SECONDS,
                )
            else:
                raise AssertionError(f"the browser stopped at {response.status_code} {response.url}: {response.text[:1000]}")
        raise AssertionError(f"too many steps, last at {response.url}")


# --- Genie's model: a test double ----------------------------------------------------------------------------------


class SqlWriter(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat completions server that answers every question with the SQL in `answers` for the
    first question it finds in the last message."""

    answers: dict = {}

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]["content"]
        sql_text = next((sql for question, sql in self.answers.items() if question in last), "SELECT 1")
        self.complete(body, {"role": "assistant", "content": sql_text})

    def complete(self, body, message):
        """Answers the chat completions request `body` with `message`."""
        finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        payload = json.dumps({
            "id": "test-double", "object": "chat.completion", "created": 1, "model": body.get("model", "x"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def sql_writer(answers):
    """The double on a loopback port, answering `answers` ({question: SQL}); yields its OpenAI base URL."""
    with _serving(type("Answers", (SqlWriter,), {"answers": dict(answers)})) as url:
        yield url


# --- a tool-calling model: a test double ---------------------------------------------------------------------------


class ToolCaller(SqlWriter):
    """An OpenAI-compatible chat completions server that plays a tool-calling model for a declarative agent: the
    user's message is the call to make, `{"tool": NAME, "arguments": {...}}`, asked for as an OpenAI tool call; once
    the conversation holds the tool's result, the answer is that result, verbatim."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]
        if last["role"] == "tool":
            message = {"role": "assistant", "content": last["content"]}
        else:
            wanted = json.loads(last["content"])
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call-1", "type": "function",
                "function": {"name": wanted["tool"], "arguments": json.dumps(wanted["arguments"])},
            }]}
        self.complete(body, message)


@contextlib.contextmanager
def tool_caller():
    """The tool-calling double on a loopback port; yields its OpenAI base URL."""
    with _serving(ToolCaller) as url:
        yield url


@contextlib.contextmanager
def _serving(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def audit_events(server, after=0):
    """Every audit event after the sequence number `after`, oldest first (pages of 1000)."""
    events = []
    while True:
        page = requests.get(server.url("/api/2.0/deputy/audit"), params={"after": after, "limit": 1000}, timeout=10,
                            headers={"Authorization": f"Bearer {server.admin_token}"})
        assert page.status_code == 200, page.text
        page = page.json()["events"]
        events += page
        if len(page) < 1000:
            return events
        after = page[-1]["seq"]


def last_seq(server):
    """The sequence number of the newest audit event (0 when there is none)."""
    events = audit_events(server)
    return events[-1]["seq"] if events else 0
