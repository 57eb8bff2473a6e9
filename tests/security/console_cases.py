"""The `console` category of the attack suite (loaded by `run.py`): the web console at `/console/`, driven the way a
browser would (cookies, forms, redirects) with `requests`, and attacked the way a hostile site or another user would.

Cross-site form posts (no CSRF token, another session's, a foreign `Origin`, `Sec-Fetch-Site: cross-site`), session
fixation and session ids presented under other names, the cookies' flags over http and behind an https public URL
(a second server, `--public-url https://...`, spoken to over plain http on loopback as a TLS-terminating proxy
would), the sign-in callback's `state` binding, another user's conversations and audit events, markup stored or
reflected where the console shows it, signed-out and non-admin requests, sign-out, and sessions whose person lost
their rights or whose sign-in was revoked.

People sign in as a browser does: `GET /console/login` follows to Deputy's own password form (no identity provider
may be configured: the category runs before `sign-in`, whose cases add and remove providers), the form is posted,
and `/console/callback` sets the session cookie. Passwords are given through `PUT /api/2.0/deputy/local-password`.

Two things make the order matter. Wrong local passwords are counted for the whole server (ten in 15 minutes lock
every password sign-in), so no case here ever posts a wrong password, and the category is registered before
`sign-in` (run.py imports it before mcp_cases, which imports sign_in_cases), whose last cases set off that lock. And `sign-in` expects the bootstrap admin's to be the only local password: the last
case here removes every password, user, setting and consent the category added.
"""

from __future__ import annotations

import html
import re
import types
import urllib.parse
import uuid
from html.parser import HTMLParser

import requests

from harness import Server, free_loopback_port, serve_json_on_loopback
from run import Fail, case, check, expect_api_error, expect_ok

CONSOLE = "console"
TIMEOUT = 10
# Asking the agent goes through a declarative agent's loop and the loopback model.
ASK_TIMEOUT = 60
PASSWORD = "console-attack-" + uuid.uuid4().hex
MODEL = "console-llm"
AGENT = "console-agent"
ADMIN_USER = "console-admin@example.com"
# Markup in every context it could break out of: an attribute value, element text, a tag, an event handler.
PAYLOAD = '"><b class="pwned">bold</b><script>alert(1)</script><img src=x onerror=alert(2)>'
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
MALLORY = "mallory" + PAYLOAD
APP_NAME = "app " + PAYLOAD
APP_REDIRECT = "http://127.0.0.1:9/"
CONSOLE_SCRIPT = "/console/assets/console.js"
SESSION = "deputy_console"
LOGIN = "deputy_console_login"
EVIL_ORIGIN = "https://evil.example"
CSRF_PHRASE = "csrf token is missing or not this session's"
CROSS_SITE_PHRASE = "this form was not sent from the console"
SIGNED_OUT_PHRASE = "you are not signed in"
CALLBACK_PHRASE = "this sign-in was not started in this browser, was already used, or took too long"
ADMIN_PHRASE = "only workspace admins see the admin pages"


# ---- a browser -------------------------------------------------------------------------------------------------------

class Browser:
    """A browser for one server: its own cookie jar by name (no Secure or Domain logic, so that a server behind an
    https public URL can be spoken to over http on loopback), redirects followed by the cases themselves, and every
    `Set-Cookie` line it was sent kept in `seen`. URLs are rewritten to plain http on the server's own address; a
    redirect anywhere else is a failure."""

    def __init__(self, host: str, session_cookie: str = SESSION):
        self.host = host
        self.session_cookie = session_cookie
        self.cookies: dict[str, str] = {}
        self.seen: list[str] = []
        self.csrf_token = ""
        self.user = ""

    def url(self, target: str) -> str:
        if not target.startswith(("http://", "https://")):
            return self.host + target
        parts = urllib.parse.urlsplit(target)
        check(parts.netloc == urllib.parse.urlsplit(self.host).netloc, f"sent away from the server to {target}")
        return urllib.parse.urlunsplit(("http", parts.netloc, parts.path, parts.query, ""))

    def send(self, method: str, target: str, data=None, headers=None, cookies=None, timeout=TIMEOUT):
        """One request; `cookies` replaces the jar for this request only (and the answer's cookies are then not
        kept)."""
        jar = self.cookies if cookies is None else cookies
        sent = dict(headers or {})
        if jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
        response = requests.request(method, self.url(target), data=data, headers=sent, allow_redirects=False,
                                    timeout=timeout)
        lines = response.raw.headers.getlist("Set-Cookie")
        response.cookie_lines = lines
        self.seen.extend(lines)
        if cookies is None:
            for line in lines:
                name, _, value = line.split(";", 1)[0].partition("=")
                cleared = not value or re.search(r";\s*max-age=0\b", line, re.I)
                if cleared:
                    self.cookies.pop(name.strip(), None)
                else:
                    self.cookies[name.strip()] = value
        return response

    def get(self, target, **kw):
        return self.send("GET", target, **kw)

    def post(self, target, data=None, **kw):
        return self.send("POST", target, data=data, **kw)

    @property
    def session(self) -> str | None:
        return self.cookies.get(self.session_cookie)

    def page(self, target: str, what: str = ""):
        """A console page that must answer 200; remembers its CSRF token."""
        response = self.get(target)
        check(response.status_code == 200, f"{what or target}: expected 200, got {_show(response)}")
        token = _csrf_of(response.text)
        if token:
            self.csrf_token = token
        return response


def _show(response) -> str:
    return (f"{response.status_code} Location={response.headers.get('Location')!r} "
            f"Set-Cookie={getattr(response, 'cookie_lines', None)!r} body={response.text[:300]!r}")


def _csrf_of(text: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf_token" value="([^"]*)"', text)
    return html.unescape(found.group(1)) if found else ""


def _to_callback(browser: Browser, user: str, password: str = PASSWORD) -> str:
    """Starts a console sign-in in `browser` and posts the password form; returns the URL the browser is then sent
    to (the console's callback with `code`, `state` and `iss`), not yet visited."""
    started = browser.get("/console/login")
    location = started.headers.get("Location", "")
    check(started.status_code == 303 and location.startswith("/oidc/v1/authorize?"),
          f"/console/login: expected a 303 to /oidc/v1/authorize, got {_show(started)}")
    form = browser.get(location)
    check(form.status_code == 200 and 'name="password"' in form.text,
          f"expected Deputy's password form (is an identity provider configured?), got {_show(form)}")
    request_id = html.unescape(re.search(r'name="request" value="([^"]+)"', form.text).group(1))
    posted = browser.post("/oidc/v1/login", {"request": request_id, "user_name": user, "password": password})
    callback = posted.headers.get("Location", "")
    check(posted.status_code == 303 and "/console/callback?" in callback,
          f"{user}: expected a 303 to the console's callback, got {_show(posted)}")
    return callback


def _sign_in(host: str, user: str, session_cookie: str = SESSION, password: str = PASSWORD) -> Browser:
    """A browser signed in to the console as `user`, on the agents page; its CSRF token read from that page."""
    browser = Browser(host, session_cookie)
    _land(browser, browser.get(_to_callback(browser, user, password)), user)
    return browser


def _land(browser: Browser, landed, user: str) -> None:
    check(landed.status_code == 303 and landed.headers.get("Location") == "/console/agents" and browser.session,
          f"{user}: the callback should set {browser.session_cookie} and go to /console/agents, got {_show(landed)}")
    agents = browser.page("/console/agents", f"{user}'s agents page")
    whoami = re.search(r'<span id="whoami">(.*?)</span>', agents.text, re.S)
    check(whoami is not None and html.unescape(whoami.group(1)) == user,
          f"signed in as someone else: whoami {whoami and whoami.group(1)!r}, expected {user!r}")
    check(browser.csrf_token, "the page has no CSRF token")
    browser.user = user


def _session_lines(lines: list[str], name: str = SESSION) -> list[str]:
    """The `Set-Cookie` lines that give `name` a value (not the ones clearing it)."""
    return [line for line in lines
            if line.split(";", 1)[0].partition("=")[0].strip() == name
            and line.split(";", 1)[0].partition("=")[2]
            and not re.search(r";\s*max-age=0\b", line, re.I)]


def _expect_error_page(response, status: int, phrase: str, where: str = "") -> None:
    """The console's HTML error page: the status, `<main class="error">`, the phrase (unescaped), no redirect."""
    text = html.unescape(response.text)
    check(response.status_code == status
          and response.headers.get("Content-Type", "").startswith("text/html")
          and '<main class="error">' in response.text
          and "location" not in {k.lower() for k in response.headers}
          and phrase.lower() in text.lower(),
          f"{where}: expected a {status} error page containing {phrase!r}, got {_show(response)}")


def _expect_to_start(response, where: str = "") -> None:
    check(response.status_code == 303 and response.headers.get("Location") == "/console/",
          f"{where}: expected a 303 to /console/ (signed out), got {_show(response)}")


# ---- the world of the category -------------------------------------------------------------------------------------

class FakeModel:
    """Test double for a chat model (OpenAI-style `chat/completions` on loopback): every answer is markup, and every
    call is counted, so that a refused question can be shown never to have reached the model."""

    ANSWER = "the model says " + PAYLOAD

    def __init__(self):
        self.calls = 0
        self.httpd, base = serve_json_on_loopback(self._answer)
        self.url = f"{base}/v1"

    def _answer(self, _method, _path, _body):
        self.calls += 1
        return 200, {"id": "chatcmpl-console", "object": "chat.completion", "created": 0, "model": "m",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": FakeModel.ANSWER}}]}


SCIM = "/api/2.0/preview/scim/v2"


def _world(ctx):
    """Made once: fresh PATs for alice and bob, local passwords for them and for `console-admin` (an admin) and
    mallory (whose user name is markup), a declarative agent `console-agent` over a loopback model that every user may
    query, alice's consent to it, and on-behalf-of access on. What was there before is recorded for the last case."""
    world = getattr(ctx, "_console_world", None)
    if world is not None:
        return world
    api, admin = ctx.api, ctx.admin
    users = ctx.fresh_users(CONSOLE)
    settings = expect_ok(api.get("/api/2.0/deputy/settings", admin, timeout=TIMEOUT), "settings")
    world = types.SimpleNamespace(alice=users.alice, bob=users.bob, settings_before={
        key: settings[key] for key in ("obo-enabled", "consent-required")}, passwords=[], created=[], app=None,
        browsers={})
    ctx._console_world = world  # before anything is changed, so that the last case can undo a half-made world
    for name in [ADMIN_USER, MALLORY]:
        created = expect_ok(api.post(f"{SCIM}/Users", admin, {"userName": name, "displayName": (
            "Mallory " + PAYLOAD if name == MALLORY else name)}, timeout=TIMEOUT), f"create {name}")
        world.created.append(created["id"])
    world.admin_id = world.created[0]
    admins = expect_ok(api.get(f"{SCIM}/Groups", admin, params={"filter": 'displayName eq "admins"'},
                               timeout=TIMEOUT), "the admins group")["Resources"][0]["id"]
    expect_ok(api.patch(f"{SCIM}/Groups/{admins}", admin, {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": world.admin_id}]}]}, timeout=TIMEOUT),
              "console-admin joins admins")
    group = expect_ok(api.post(f"{SCIM}/Groups", admin, {"displayName": "group" + PAYLOAD}, timeout=TIMEOUT),
                      "a group named with markup")
    world.created_groups = [group["id"]]
    for name in ["alice@example.com", "bob@example.com", ADMIN_USER, MALLORY]:
        world.passwords.append(name)
        expect_ok(api.put("/api/2.0/deputy/local-password", admin, {"user_name": name, "password": PASSWORD},
                          timeout=TIMEOUT), f"a local password for {name}")
    world.model = FakeModel()
    expect_ok(api.post("/api/2.0/serving-endpoints", admin, {"name": MODEL, "config": {"served_entities": [{
        "name": "m", "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {
            "openai_api_base": world.model.url, "openai_api_key_plaintext": "sk-console-test"}}}]}}, timeout=TIMEOUT),
              "the model endpoint")
    definition = ctx.server.data_dir.parent / "console-agent.yaml"
    definition.write_text(f"model: {MODEL}\ninstructions: Answer.\nuser_scopes: [serving.serving-endpoints]\n")
    deployed = expect_ok(api.post("/api/2.0/deputy/agents", admin, {"name": AGENT, "source_path": str(definition)},
                                  timeout=ASK_TIMEOUT), "deploy the console agent")
    expect_ok(api.patch(f"/api/2.0/permissions/serving-endpoints/{deployed['id']}", admin, {
        "access_control_list": [{"group_name": "users", "permission_level": "CAN_QUERY"}]}, timeout=TIMEOUT),
              "CAN_QUERY on the agent for every user")
    expect_ok(api.patch("/api/2.0/deputy/settings", admin, {"obo-enabled": True, "consent-required": False},
                        timeout=TIMEOUT), "on-behalf-of access on")
    world.settings = {"obo-enabled": True, "consent-required": False}
    expect_ok(api.post("/api/2.0/deputy/consents", world.alice, {"endpoint_name": AGENT}, timeout=TIMEOUT),
              "alice consents to the agent")
    return world


def _browser(ctx, user: str) -> Browser:
    """One signed-in browser per user, kept for the category (cases that sign out make their own)."""
    world = _world(ctx)
    browser = world.browsers.get(user)
    if browser is None or browser.get("/console/agents").status_code != 200:
        browser = world.browsers[user] = _sign_in(ctx.server.host, user)
    return browser


def _alice(ctx) -> Browser:
    return _browser(ctx, "alice@example.com")


def _bob(ctx) -> Browser:
    return _browser(ctx, "bob@example.com")


def _admin(ctx) -> Browser:
    return _browser(ctx, ADMIN_USER)


def _settings(ctx) -> dict:
    settings = expect_ok(ctx.api.get("/api/2.0/deputy/settings", ctx.admin, timeout=TIMEOUT), "settings")
    return {key: settings[key] for key in ("obo-enabled", "consent-required")}


def _consents(ctx, token) -> list[str]:
    listed = expect_ok(ctx.api.get("/api/2.0/deputy/consents", token, timeout=TIMEOUT), "consents")
    return [consent["endpoint_name"] for consent in listed["consents"]]


def _conversations(ctx, token) -> list[dict]:
    return expect_ok(ctx.api.get("/api/2.0/deputy/conversations", token, timeout=TIMEOUT), "conversations")[
        "conversations"]


def _conversation(ctx, token, conversation_id) -> dict:
    return expect_ok(ctx.api.get(f"/api/2.0/deputy/conversations/{conversation_id}", token, timeout=TIMEOUT),
                     "a conversation")


def _alice_asked(ctx):
    """Alice asks the agent through the console (the form, with her CSRF token): the conversation's id, its secret
    question, and the request id of the answer."""
    world = _world(ctx)
    if getattr(world, "asked", None):
        return world.asked
    alice = _alice(ctx)
    alice.page(f"/console/agents/{AGENT}", "the playground")
    secret = "alice-secret-" + uuid.uuid4().hex[:10]
    asked = alice.post(f"/console/agents/{AGENT}/conversations", {"csrf_token": alice.csrf_token,
                                                                    "question": secret}, timeout=ASK_TIMEOUT)
    location = asked.headers.get("Location", "")
    check(asked.status_code == 303 and location.startswith("/console/conversations/"),
          f"alice's question through the console: expected a 303 to the conversation, got {_show(asked)}")
    conversation_id = urllib.parse.unquote(location.rsplit("/", 1)[1])
    stored = _conversation(ctx, world.alice, conversation_id)
    roles = [message["role"] for message in stored["messages"]]
    check(roles == ["user", "assistant"] and stored["messages"][0]["content"] == secret
          and stored["messages"][1].get("request_id"),
          f"the conversation holds the question and an answer with its request id: {stored}")
    world.asked = types.SimpleNamespace(id=conversation_id, secret=secret,
                                        request_id=stored["messages"][1]["request_id"])
    return world.asked


def _app_consent(ctx):
    """An OAuth app named with markup that alice approved at sign-in (its consent page) and redeemed a code of:
    her app consents list it, and the audit says a token was issued to it for her."""
    world = _world(ctx)
    if world.app:
        return world.app
    import base64
    import hashlib
    import secrets

    account = expect_ok(ctx.api.get("/.well-known/databricks-config", timeout=TIMEOUT), "config")["workspace_id"]
    app = expect_ok(ctx.api.post(f"/api/2.0/accounts/{account}/oauth2/custom-app-integrations", ctx.admin, {
        "name": APP_NAME, "redirect_urls": [APP_REDIRECT], "confidential": False, "scopes": ["sql"]},
        timeout=TIMEOUT), "register an app named with markup")["client_id"]
    world.app = app
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({"response_type": "code", "client_id": app, "redirect_uri": APP_REDIRECT,
                                    "scope": "sql", "state": "console-app", "code_challenge": challenge,
                                    "code_challenge_method": "S256"})
    browser = Browser(ctx.server.host)
    form = browser.get(f"/oidc/v1/authorize?{query}")
    check(form.status_code == 200 and 'name="password"' in form.text, f"the password form: {_show(form)}")
    request_id = html.unescape(re.search(r'name="request" value="([^"]+)"', form.text).group(1))
    consent = browser.post("/oidc/v1/login", {"request": request_id, "user_name": "alice@example.com",
                                              "password": PASSWORD})
    check(consent.status_code == 200 and 'name="decision"' in consent.text, f"the consent page: {_show(consent)}")
    approved = browser.post("/oidc/v1/consent", {"request": request_id, "decision": "approve"})
    location = approved.headers.get("Location", "")
    check(approved.status_code == 303 and location.startswith(APP_REDIRECT), f"approved: {_show(approved)}")
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query)).get("code")
    redeemed = requests.post(f"{ctx.server.host}/oidc/v1/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT, "client_id": app,
        "code_verifier": verifier}, timeout=TIMEOUT)
    check(redeemed.status_code == 200 and "access_token" in redeemed.json(), f"redeem: {redeemed.text[:300]}")
    return app


def _app_consents(ctx, token) -> list[str]:
    listed = expect_ok(ctx.api.get("/api/2.0/deputy/app-consents", token, timeout=TIMEOUT), "app consents")
    return [consent["client_id"] for consent in listed["app_consents"]]


# ---- markup on a page ------------------------------------------------------------------------------------------------

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def _injected(text: str) -> list[str]:
    """What on the page is markup from the payload: an `img`, the `pwned` element, an event-handler attribute, or
    any script but the console's own."""
    parser = _Tags()
    parser.feed(text)
    found = []
    for tag, attrs in parser.tags:
        handlers = [name for name in attrs if name.startswith("on")]
        if (tag == "img" or "pwned" in (attrs.get("class") or "") or handlers
                or (tag == "script" and attrs.get("src") != CONSOLE_SCRIPT)):
            found.append(f"<{tag} {attrs}>")
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    if len(scripts) > 1:
        found.append(f"{len(scripts)} script elements")
    for raw in ["<script>alert", "<img src=x", '<b class="pwned"']:
        if raw in text:
            found.append(f"the raw text {raw!r}")
    return found


def _expect_escaped(response, where: str, expect_text: bool = True) -> None:
    """The payload is on the page as text (escaped), never as markup."""
    found = _injected(response.text)
    check(not found, f"{where}: markup from stored or reflected text became part of the page: {found}")
    if expect_text:
        check(ESCAPED_SCRIPT in response.text,
              f"{where}: the payload should be shown escaped ({ESCAPED_SCRIPT}), got {_show(response)}")


# ---- 1. cross-site form posts ----------------------------------------------------------------------------------------

def _forged_posts(ctx, victim: Browser, path: str, fields: dict, unchanged, timeout=TIMEOUT) -> None:
    """Posts `fields` to `path` with the victim's cookie every way a hostile page could, or without what only the
    console's own page has; each must be a 403 error page, and `unchanged()` must hold after each."""
    other = _bob(ctx) if victim.user != "bob@example.com" else _alice(ctx)
    token = victim.csrf_token
    check(token and other.csrf_token and token != other.csrf_token, "two sessions share a CSRF token")
    attempts = [
        ("no csrf_token", dict(fields), {}, CSRF_PHRASE),
        ("an empty csrf_token", {**fields, "csrf_token": ""}, {}, CSRF_PHRASE),
        ("another session's csrf_token", {**fields, "csrf_token": other.csrf_token}, {}, CSRF_PHRASE),
        ("the token changed in one character", {**fields, "csrf_token": token[:-1] + ("A" if token[-1] != "A"
                                                                                       else "B")}, {}, CSRF_PHRASE),
        ("the right token with Origin https://evil.example", {**fields, "csrf_token": token},
         {"Origin": EVIL_ORIGIN}, CROSS_SITE_PHRASE),
        ("the right token with Origin null", {**fields, "csrf_token": token}, {"Origin": "null"}, CROSS_SITE_PHRASE),
        ("the right token with Sec-Fetch-Site: cross-site", {**fields, "csrf_token": token},
         {"Sec-Fetch-Site": "cross-site"}, CROSS_SITE_PHRASE),
    ]
    for label, data, headers, phrase in attempts:
        response = victim.post(path, data, headers=headers, timeout=timeout)
        _expect_error_page(response, 403, phrase, f"POST {path} with {label}")
        check(not _session_lines(response.cookie_lines), f"{label}: a refused form set a session cookie")
        unchanged(label)
    # The token in the query string instead of the form.
    response = victim.post(f"{path}?csrf_token={urllib.parse.quote(token)}", dict(fields), timeout=timeout)
    _expect_error_page(response, 403, CSRF_PHRASE, f"POST {path} with the token in the query string")
    unchanged("the token in the query string")


@case(CONSOLE, "CSRF: withdrawing an agent consent without the token, with another session's, from a foreign Origin "
               "or cross-site -> 403 page; the consent is still there (the real form withdraws it)")
def _(ctx):
    world = _world(ctx)
    alice = _alice(ctx)
    access = alice.page("/console/access", "alice's access page")
    path = f"/console/access/agents/{AGENT}/withdraw"
    check(f'action="{path}"' in access.text and AGENT in _consents(ctx, world.alice),
          "control: alice's consent is listed with a withdraw form")

    def unchanged(label):
        check(AGENT in _consents(ctx, world.alice), f"{label}: alice's consent was withdrawn")

    _forged_posts(ctx, alice, path, {}, unchanged)
    done = alice.post(path, {"csrf_token": alice.csrf_token}, headers={"Origin": ctx.server.host})
    check(done.status_code == 303 and done.headers.get("Location") == "/console/access", f"control: {_show(done)}")
    check(AGENT not in _consents(ctx, world.alice), "control: the console's own form did not withdraw the consent")
    expect_ok(ctx.api.post("/api/2.0/deputy/consents", world.alice, {"endpoint_name": AGENT}, timeout=TIMEOUT),
              "alice consents again")


@case(CONSOLE, "CSRF: the admin's settings form (would turn on-behalf-of off) forged -> 403 page; settings unchanged")
def _(ctx):
    world = _world(ctx)
    admin = _admin(ctx)
    page = admin.page("/console/admin", "the admin page")
    check('action="/console/admin/settings"' in page.text, "control: the admin page has the settings form")
    before = _settings(ctx)
    check(before == world.settings, f"settings before: {before}")

    def unchanged(label):
        check(_settings(ctx) == before, f"{label}: the settings changed to {_settings(ctx)}")

    # No checkbox: a form that went through would turn both switches off.
    _forged_posts(ctx, admin, "/console/admin/settings", {}, unchanged)
    _forged_posts(ctx, admin, "/console/admin/settings", {"consent-required": "true"}, unchanged)
    done = admin.post("/console/admin/settings", {"csrf_token": admin.csrf_token, "obo-enabled": "true",
                                                  "consent-required": "true"}, headers={"Origin": ctx.server.host})
    check(done.status_code == 303, f"control: the admin's own form: {_show(done)}")
    try:
        check(_settings(ctx) == {"obo-enabled": True, "consent-required": True},
              f"control: the admin's own form did not change the settings: {_settings(ctx)}")
    finally:
        expect_ok(ctx.api.patch("/api/2.0/deputy/settings", ctx.admin, world.settings, timeout=TIMEOUT),
                  "restore the settings")


@case(CONSOLE, "CSRF: asking an agent (a new conversation or a follow-up) forged -> 403 page; nothing stored, the "
               "model is never called")
def _(ctx):
    world = _world(ctx)
    asked = _alice_asked(ctx)
    alice = _alice(ctx)
    before = _conversations(ctx, world.alice)
    messages = len(_conversation(ctx, world.alice, asked.id)["messages"])
    calls = world.model.calls

    def unchanged(label):
        check(_conversations(ctx, world.alice) == before, f"{label}: a conversation was started")
        check(len(_conversation(ctx, world.alice, asked.id)["messages"]) == messages,
              f"{label}: a message was appended")
        check(world.model.calls == calls, f"{label}: the agent was asked (the model was called)")

    question = {"question": "forged question " + uuid.uuid4().hex[:6]}
    for path in [f"/console/agents/{AGENT}/conversations", f"/console/agents/{AGENT}/stream",
                 f"/console/conversations/{asked.id}/messages", f"/console/conversations/{asked.id}/stream"]:
        _forged_posts(ctx, alice, path, question, unchanged, timeout=ASK_TIMEOUT)


@case(CONSOLE, "CSRF: withdrawing an app's approval forged -> 403 page; the app is still approved")
def _(ctx):
    world = _world(ctx)
    app = _app_consent(ctx)
    alice = _alice(ctx)
    path = f"/console/access/apps/{app}/withdraw"
    check(f'action="{path}"' in alice.page("/console/access").text, "control: the app is listed with a form")

    def unchanged(label):
        check(app in _app_consents(ctx, world.alice), f"{label}: the app's approval was withdrawn")

    _forged_posts(ctx, alice, path, {}, unchanged)


@case(CONSOLE, "CSRF: sign-out forged (or a GET /console/logout) -> refused; the session still works")
def _(ctx):
    victim = _sign_in(ctx.server.host, "bob@example.com")

    def unchanged(label):
        check(victim.get("/console/agents").status_code == 200, f"{label}: the session was ended")

    _forged_posts(ctx, victim, "/console/logout", {}, unchanged)
    fetched = victim.get("/console/logout")
    check(fetched.status_code in (404, 405) and not fetched.cookie_lines, f"GET /console/logout: {_show(fetched)}")
    unchanged("GET /console/logout")


# ---- 2. session fixation and session ids under other names ---------------------------------------------------------

@case(CONSOLE, "session fixation: a session cookie planted before sign-in (made up, or the attacker's own live "
               "session) is never adopted")
def _(ctx):
    _world(ctx)
    planted = "attacker-chosen-" + uuid.uuid4().hex
    victim = Browser(ctx.server.host)
    victim.cookies = {SESSION: planted, LOGIN: "attacker-login-" + uuid.uuid4().hex}
    _land(victim, victim.get(_to_callback(victim, "alice@example.com")), "alice@example.com")
    check(victim.session != planted, "the planted session id was adopted at sign-in")
    attacker = Browser(ctx.server.host)
    attacker.cookies = {SESSION: planted}
    _expect_to_start(attacker.get("/console/agents"), "the planted value after alice signed in")
    start = attacker.get("/console/")
    check(start.status_code == 200 and 'id="sign-in"' in start.text,
          f"/console/ with the planted value: {_show(start)}")
    # The attacker's own live session planted in alice's browser: her sign-in makes a new one; his stays his.
    bob = _sign_in(ctx.server.host, "bob@example.com")
    victim = Browser(ctx.server.host)
    victim.cookies = {SESSION: bob.session}
    _land(victim, victim.get(_to_callback(victim, "alice@example.com")), "alice@example.com")
    check(victim.session != bob.session, "alice's sign-in kept the attacker's session id")
    mine = bob.page("/console/agents")
    check('<span id="whoami">bob@example.com</span>' in mine.text, "the attacker's session now names alice")


@case(CONSOLE, "a session id works only as the session cookie: not as the login cookie, another name, a bearer "
               "token, a query parameter, nor the CSRF token as a session id")
def _(ctx):
    alice = _sign_in(ctx.server.host, "alice@example.com")
    session, token = alice.session, alice.csrf_token
    probe = Browser(ctx.server.host)
    for label, cookies, headers, query in [
        ("the login cookie", {LOGIN: session}, {}, ""),
        ("__Host-deputy_console over http", {"__Host-" + SESSION: session}, {}, ""),
        ("another case", {"Deputy_Console": session}, {}, ""),
        ("a longer name", {SESSION + "x": session}, {}, ""),
        ("a prefix", {"x" + SESSION: session}, {}, ""),
        ("a bearer token", {}, {"Authorization": f"Bearer {session}"}, ""),
        ("a query parameter", {}, {}, f"?{SESSION}={session}"),
        ("the CSRF token as the session id", {SESSION: token}, {}, ""),
        ("the session id with a suffix", {SESSION: session + "A"}, {}, ""),
    ]:
        _expect_to_start(probe.get(f"/console/agents{query}", cookies=cookies, headers=headers), label)
    check(alice.get("/console/agents").status_code == 200, "control: the session works as the session cookie")


# ---- 3. cookies and the callback -----------------------------------------------------------------------------------

def _attributes(line: str) -> dict:
    parts = [part.strip() for part in line.split(";")]
    found = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        found[key.lower()] = value
    return found


def _expect_flags(lines: list[str], name: str, secure: bool) -> None:
    """Every `Set-Cookie` for `name`: HttpOnly, SameSite=Lax, Path=/, no Domain, Secure iff `secure`."""
    mine = [line for line in lines if line.split("=", 1)[0].strip() == name]
    check(mine, f"no Set-Cookie for {name} among {lines}")
    for line in mine:
        flags = _attributes(line)
        check("httponly" in flags and flags.get("samesite", "").lower() == "lax" and flags.get("path") == "/"
              and "domain" not in flags and ("secure" in flags) == secure,
              f"{name}: expected HttpOnly; SameSite=Lax; Path=/; no Domain; "
              f"{'Secure' if secure else 'no Secure'}, got {line!r}")


@case(CONSOLE, "cookies over http: deputy_console and deputy_console_login are HttpOnly; SameSite=Lax; Path=/, "
               "never a Domain; sign-out clears the session cookie")
def _(ctx):
    _world(ctx)
    browser = _sign_in(ctx.server.host, "bob@example.com")
    done = browser.post("/console/logout", {"csrf_token": browser.csrf_token})
    check(done.status_code == 303 and done.headers.get("Location") == "/console/", f"sign-out: {_show(done)}")
    for name in [SESSION, LOGIN]:
        _expect_flags(browser.seen, name, secure=False)
    names = {line.split("=", 1)[0].strip() for line in browser.seen}
    check(not any(name.startswith("__Host-") or name.startswith("__Secure-") for name in names if "console" in name),
          f"https-only cookie names over http: {names}")
    check(not browser.session, "sign-out did not clear the session cookie")


@case(CONSOLE, "cookies behind an https public URL: __Host-deputy_console(_login), Secure; HttpOnly; SameSite=Lax; "
               "Path=/, no Domain; the plain name and an http:// Origin are refused")
def _(ctx):
    port = free_loopback_port()
    server = Server(extra_args=["--public-url", f"https://127.0.0.1:{port}"])
    server.port = port
    try:
        server.start(same_port=True)
        password = "console-https-" + uuid.uuid4().hex
        reply = requests.put(f"{server.host}/api/2.0/deputy/local-password", json={"password": password},
                             headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=TIMEOUT)
        check(reply.status_code == 200, f"the https server's admin password: {reply.text[:300]}")
        browser = Browser(server.host, session_cookie="__Host-" + SESSION)
        callback = _to_callback(browser, "admin", password)
        check(callback.startswith(f"https://127.0.0.1:{port}/console/callback?"),
              f"the callback is not the https public URL's: {callback}")
        _land(browser, browser.get(callback), "admin")
        for name in ["__Host-" + SESSION, "__Host-" + LOGIN]:
            _expect_flags(browser.seen, name, secure=True)
        plain = [line for line in browser.seen if line.split("=", 1)[0].strip() in (SESSION, LOGIN)]
        check(not plain, f"plain-named cookies behind an https URL: {plain}")
        session = browser.session
        _expect_to_start(browser.get("/console/agents", cookies={SESSION: session}),
                         "the session id under the plain (non-__Host-) name")
        for origin in [f"http://127.0.0.1:{port}", EVIL_ORIGIN, f"https://127.0.0.1:{port + 1}"]:
            refused = browser.post("/console/logout", {"csrf_token": browser.csrf_token}, headers={"Origin": origin})
            _expect_error_page(refused, 403, CROSS_SITE_PHRASE, f"sign-out with Origin {origin}")
        done = browser.post("/console/logout", {"csrf_token": browser.csrf_token},
                            headers={"Origin": f"https://127.0.0.1:{port}"})
        check(done.status_code == 303, f"control: sign-out from the console's own https origin: {_show(done)}")
        _expect_flags(done.cookie_lines, "__Host-" + SESSION, secure=True)
        _expect_to_start(browser.get("/console/agents", cookies={"__Host-" + SESSION: session}), "after sign-out")
    finally:
        code = server.stop() if server.alive() else None
        server.cleanup()
    check(code in (0, None), f"the https server's SIGTERM exit code {code}")


def _with_query(url: str, **changes) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(changes)
    query = {k: v for k, v in query.items() if v is not None}
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _expect_no_session(response, where: str) -> None:
    _expect_error_page(response, 400, CALLBACK_PHRASE, where)
    check(not _session_lines(response.cookie_lines), f"{where}: a session cookie was set: {response.cookie_lines}")


@case(CONSOLE, "callback with a wrong state -> 400 page, no session; that sign-in cannot be finished afterwards")
def _(ctx):
    _world(ctx)
    browser = Browser(ctx.server.host)
    callback = _to_callback(browser, "alice@example.com")
    for state in ["wrong-" + uuid.uuid4().hex, ""]:
        _expect_no_session(browser.get(_with_query(callback, state=state)), f"state {state!r}")
        check(not browser.session, "a refused callback signed the browser in")
    stateless = _with_query(callback, state=None)
    _expect_no_session(browser.get(stateless), "no state")
    # The wrong state consumed the sign-in (and cleared the login cookie): the right one cannot finish it now.
    login = [line for line in browser.seen if line.startswith(LOGIN + "=")][0].split(";")[0].split("=", 1)[1]
    _expect_no_session(browser.get(callback, cookies={LOGIN: login}), "the right state after a wrong one")


@case(CONSOLE, "callback without the login cookie, or with another browser's (login CSRF) -> 400 page, no session; "
               "the browser that started it still can")
def _(ctx):
    _world(ctx)
    victim = Browser(ctx.server.host)
    callback = _to_callback(victim, "alice@example.com")
    attacker = Browser(ctx.server.host)
    _expect_no_session(attacker.get(callback), "no login cookie")
    started = attacker.get("/console/login")
    check(started.status_code == 303 and attacker.cookies.get(LOGIN), f"attacker's /console/login: {_show(started)}")
    _expect_no_session(attacker.get(callback), "another browser's login cookie")
    check(not attacker.session, "the attacker's browser was signed in")
    _land(victim, victim.get(callback), "alice@example.com")


@case(CONSOLE, "callback replayed after a successful sign-in (with or without the old login cookie) -> 400 page, "
               "no second session")
def _(ctx):
    _world(ctx)
    browser = Browser(ctx.server.host)
    callback = _to_callback(browser, "alice@example.com")
    login = browser.cookies[LOGIN]
    _land(browser, browser.get(callback), "alice@example.com")
    for label, cookies in [("the old login cookie", {LOGIN: login}), ("no cookie", {}),
                           ("the old login cookie and the session", {LOGIN: login, SESSION: browser.session})]:
        _expect_no_session(browser.get(callback, cookies=cookies), f"replay with {label}")


# ---- 4 and 5. another user's conversation and audit events --------------------------------------------------------

@case(CONSOLE, "another user's conversation by id: bob's console page is a 404 without her text, his follow-up a 404 "
               "that appends nothing, his API call 404 RESOURCE_DOES_NOT_EXIST")
def _(ctx):
    world = _world(ctx)
    asked = _alice_asked(ctx)
    mine = _alice(ctx).page(f"/console/conversations/{asked.id}", "alice's own conversation")
    check(asked.secret in mine.text, "control: alice sees her conversation")
    bob = _bob(ctx)
    before = _conversation(ctx, world.alice, asked.id)
    calls = world.model.calls
    page = bob.get(f"/console/conversations/{asked.id}")
    _expect_error_page(page, 404, "does not exist", "bob opens alice's conversation")
    check(asked.secret not in page.text and "the model says" not in page.text, "alice's text is on bob's 404 page")
    for plain_or_stream in ["messages", "stream"]:
        follow_up = bob.post(f"/console/conversations/{asked.id}/{plain_or_stream}",
                             {"csrf_token": bob.csrf_token, "question": "bob was here"}, timeout=ASK_TIMEOUT)
        check(follow_up.status_code == 404 and '<main class="error">' in follow_up.text
              and asked.secret not in follow_up.text,
              f"bob's follow-up ({plain_or_stream}) to alice's conversation: {_show(follow_up)}")
    check(_conversation(ctx, world.alice, asked.id) == before, "bob's follow-up changed alice's conversation")
    check(world.model.calls == calls, "bob's follow-up asked the agent")
    check(all(c["id"] != asked.id for c in _conversations(ctx, world.bob)), "alice's conversation is listed for bob")
    for method, path, body in [("GET", f"/api/2.0/deputy/conversations/{asked.id}", None),
                               ("POST", f"/api/2.0/deputy/conversations/{asked.id}/messages",
                                {"role": "user", "content": "bob was here"}),
                               ("DELETE", f"/api/2.0/deputy/conversations/{asked.id}", None)]:
        expect_api_error(ctx.api.call(method, path, world.bob, json_body=body, timeout=TIMEOUT), 404,
                         "RESOURCE_DOES_NOT_EXIST", f"conversation `{asked.id}` does not exist")
    check(_conversation(ctx, world.alice, asked.id) == before, "bob's API calls changed alice's conversation")


def _activity_rows(text: str) -> list[dict]:
    rows = []
    for tag, attrs in _parsed(text):
        if tag == "tr" and "data-request-id" in attrs:
            rows.append(attrs)
    return rows


def _parsed(text: str):
    parser = _Tags()
    parser.feed(text)
    return parser.tags


@case(CONSOLE, "another user's audit events: bob's activity page and its filters show none of alice's; the API "
               "refuses user_name=alice (403) and narrows request_id to his own")
def _(ctx):
    world = _world(ctx)
    asked = _alice_asked(ctx)
    theirs = expect_ok(ctx.api.get("/api/2.0/deputy/audit", ctx.admin, params={
        "user_name": "alice@example.com", "limit": 1000}, timeout=TIMEOUT), "alice's events (admin)")["events"]
    alice_ids = {event["request_id"] for event in theirs}
    check(asked.request_id in alice_ids and len(alice_ids) >= 3, f"control: alice has events: {len(alice_ids)}")
    own = _alice(ctx).page("/console/activity", "alice's activity")
    check(asked.request_id in own.text, "control: alice sees her own events on her activity page")
    bob = _bob(ctx)
    rows_seen = 0
    for query in ["", "?q=alice", "?q=alice%40example.com", f"?q={asked.request_id}", f"?agent={AGENT}",
                  "?decision=allowed", "?decision=denied", f"?q={asked.secret}", "?since=2000-01-01&until=2100-01-01"]:
        page = bob.page(f"/console/activity{query}", f"bob's activity{query}")
        rows = _activity_rows(page.text)
        rows_seen += len(rows)
        strangers = [row for row in rows if row.get("data-user") != "bob@example.com"]
        check(not strangers, f"bob's activity{query} shows others' events: {strangers[:3]}")
        # The table only: the filter form shows back what bob searched for.
        table = re.search(r'<div id="activity-wrap">(.*?)</div>', page.text, re.S)
        check(table is not None, f"bob's activity{query} has no activity table")
        leaked = [request_id for request_id in alice_ids if request_id in table.group(1)]
        check(not leaked and "alice@example.com" not in table.group(1) and asked.secret not in table.group(1),
              f"bob's activity{query} shows alice's events: {leaked[:3]}")
    check(rows_seen > 0, "control: bob's activity page shows his own events")
    for name in ["alice@example.com", "ALICE@example.com", "admin"]:
        expect_api_error(ctx.api.get("/api/2.0/deputy/audit", world.bob, params={"user_name": name},
                                     timeout=TIMEOUT), 403, "PERMISSION_DENIED", f"read the audit events of `{name}`")
    narrowed = expect_ok(ctx.api.get("/api/2.0/deputy/audit", world.bob, params={"request_id": asked.request_id},
                                     timeout=TIMEOUT), "bob's audit query by alice's request id")
    check(narrowed["events"] == [], f"bob reads alice's event by its request id: {narrowed['events'][:2]}")
    # Bob's own conversation naming alice's request id: the "what ran" table is read as bob, so it stays empty.
    created = expect_ok(ctx.api.post("/api/2.0/deputy/conversations", world.bob, {"endpoint_name": AGENT,
                                                                                 "title": "bob's probe"},
                                     timeout=TIMEOUT), "bob's conversation")
    expect_ok(ctx.api.post(f"/api/2.0/deputy/conversations/{created['id']}/messages", world.bob, {
        "role": "assistant", "content": "probe", "request_id": asked.request_id}, timeout=TIMEOUT), "bob's message")
    page = bob.page(f"/console/conversations/{created['id']}", "bob's probe conversation")
    check(not _activity_rows(page.text) and "alice@example.com" not in page.text,
          "bob's conversation shows alice's audited calls through her request id")


# ---- 6. HTML injection -----------------------------------------------------------------------------------------------

@case(CONSOLE, "HTML injection: a conversation's title, messages and sources, and an agent's answer, are escaped on "
               "the playground and the conversation page")
def _(ctx):
    world = _world(ctx)
    asked = _alice_asked(ctx)
    alice = _alice(ctx)
    _expect_escaped(alice.page(f"/console/conversations/{asked.id}"), "the agent's answer (from the model)")
    created = expect_ok(ctx.api.post("/api/2.0/deputy/conversations", world.alice, {
        "endpoint_name": AGENT, "title": "title " + PAYLOAD}, timeout=TIMEOUT), "a conversation titled with markup")
    path = f"/api/2.0/deputy/conversations/{created['id']}/messages"
    expect_ok(ctx.api.post(path, world.alice, {"role": "user", "content": "question " + PAYLOAD}, timeout=TIMEOUT),
              "a question with markup")
    expect_ok(ctx.api.post(path, world.alice, {"role": "assistant", "content": "answer " + PAYLOAD,
                                               "sources": ["source " + PAYLOAD, "javascript:alert(3)"],
                                               "request_id": PAYLOAD}, timeout=TIMEOUT), "an answer with markup")
    page = alice.page(f"/console/conversations/{created['id']}")
    _expect_escaped(page, "the stored conversation")
    check(page.text.count(ESCAPED_SCRIPT) >= 4, "title, question, answer and source are not all on the page")
    check('href="javascript:' not in page.text, "a source became a javascript: link")
    _expect_escaped(alice.page(f"/console/agents/{AGENT}"), "the playground's list of conversations")


@case(CONSOLE, "HTML injection: a user name, display name, group and app name with markup are escaped (whoami, "
               "admin, access, activity)")
def _(ctx):
    _world(ctx)
    _app_consent(ctx)
    mallory = _sign_in(ctx.server.host, MALLORY)
    for path in ["/console/agents", "/console/access", "/console/activity", f"/console/agents/{AGENT}"]:
        _expect_escaped(mallory.page(path), f"{path} for a user whose name is markup")
    admin = _admin(ctx)
    page = admin.page("/console/admin")
    _expect_escaped(page, "the admin page (users and groups)")
    for shown in [MALLORY, "Mallory " + PAYLOAD, "group" + PAYLOAD]:
        check(html.escape(shown) in page.text, f"{shown!r} is not on the admin page (escaped)")
    _expect_escaped(admin.page("/console/activity", "the admin's activity"), "the admin's activity (mallory's rows)")
    _expect_escaped(_alice(ctx).page("/console/access"), "alice's access page (the app's name)")
    _expect_escaped(_alice(ctx).page("/console/activity"), "alice's activity (a reason naming the app)")


@case(CONSOLE, "HTML injection: text reflected from the query or the path (activity filters, the why form, an "
               "unknown agent or conversation) is escaped")
def _(ctx):
    _world(ctx)
    alice, admin = _alice(ctx), _admin(ctx)
    quoted = urllib.parse.quote(PAYLOAD, safe="")
    for label, browser, path, status in [
        ("a bad `since`", alice, f"/console/activity?since={quoted}", 400),
        ("a bad `decision`", alice, f"/console/activity?decision={quoted}", 400),
        ("the text and agent filters", alice, f"/console/activity?q={quoted}&agent={quoted}", 200),
        ("an unknown agent", alice, f"/console/agents/{quoted}", 404),
        ("an unknown conversation", alice, f"/console/conversations/{quoted}", 404),
        ("the why form", admin, f"/console/admin?principal={quoted}&action={quoted}&securable_type={quoted}"
                                f"&securable={quoted}", 200),
    ]:
        response = browser.get(path)
        check(response.status_code == status, f"{label}: expected {status}, got {_show(response)}")
        _expect_escaped(response, label)
    # A provider's refusal is shown on the callback's page: its description is the provider's (or anyone's) text.
    browser = Browser(ctx.server.host)
    started = browser.get("/console/login")
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(started.headers.get("Location", "")).query))["state"]
    refused = browser.get(f"/console/callback?state={state}&error=access_denied&error_description={quoted}")
    check(refused.status_code == 403 and not _session_lines(refused.cookie_lines),
          f"a refused sign-in's callback: {_show(refused)}")
    _expect_escaped(refused, "the callback's error_description")


@case(CONSOLE, "security headers on every console answer: CSP default-src 'none', script-src 'self', no "
               "unsafe-inline/eval, frame-ancestors 'none'; nosniff; same-origin referrers; pages no-store")
def _(ctx):
    _world(ctx)
    alice = _alice(ctx)
    signed_out = Browser(ctx.server.host)
    assets = {"the script", "the style sheet"}
    answers = [
        ("the start page", signed_out.get("/console/")),
        ("/console/login", signed_out.get("/console/login")),
        ("a signed-out page", signed_out.get("/console/agents")),
        ("a signed-out form", signed_out.post("/console/logout", {})),
        ("a page", alice.get("/console/agents")),
        ("the activity page", alice.get("/console/activity")),
        ("an error page", alice.get("/console/admin")),
        ("a forged form", alice.post("/console/logout", {})),
        ("a bad callback", signed_out.get("/console/callback?code=x&state=y")),
        ("the script", signed_out.get(CONSOLE_SCRIPT)),
        ("the style sheet", signed_out.get("/console/assets/console.css")),
    ]
    # A form that went through: its redirect is a console answer too.
    admin = _admin(ctx)
    admin.page("/console/admin")
    world = _world(ctx)
    settings_form = {"csrf_token": admin.csrf_token, **{k: "true" for k, v in world.settings.items() if v}}
    answers += [
        ("an approved consent's redirect", alice.post(f"/console/access/agents/{AGENT}/approve",
                                                      {"csrf_token": alice.csrf_token})),
        ("saved settings' redirect", admin.post("/console/admin/settings", settings_form)),
        ("an answered question's redirect", alice.post(f"/console/agents/{AGENT}/conversations", {
            "csrf_token": alice.csrf_token, "question": "headers?"}, timeout=ASK_TIMEOUT)),
    ]
    check(_settings(ctx) == world.settings, f"saving the same settings changed them: {_settings(ctx)}")
    problems = []
    for label, response in answers:
        policy = response.headers.get("Content-Security-Policy", "")
        directives = {part.strip().split(" ", 1)[0]: part.strip() for part in policy.split(";") if part.strip()}
        if not (directives.get("default-src") == "default-src 'none'"
                and directives.get("script-src") == "script-src 'self'"
                and directives.get("frame-ancestors") == "frame-ancestors 'none'"
                and directives.get("form-action") == "form-action 'self'"
                and "unsafe-inline" not in policy and "unsafe-eval" not in policy and "*" not in policy
                and "data:" not in policy):
            problems.append(f"{label} ({response.status_code}): Content-Security-Policy {policy!r}")
        if not (response.headers.get("X-Content-Type-Options") == "nosniff"
                and response.headers.get("Referrer-Policy") == "same-origin"
                and response.headers.get("X-Frame-Options") == "DENY"):
            problems.append(f"{label}: nosniff / same-origin referrers / X-Frame-Options missing")
        if label not in assets and response.headers.get("Cache-Control") != "no-store":
            problems.append(f"{label}: Cache-Control {response.headers.get('Cache-Control')!r}")
    check(not problems, "; ".join(problems))
    script = signed_out.get(CONSOLE_SCRIPT)
    check(script.headers.get("Content-Type", "").startswith("text/javascript"), "the script's content type")
    # The CSRF token never goes into a URL: no GET form carries it.
    for path, browser in [("/console/activity", alice), ("/console/admin", _admin(ctx))]:
        text = browser.page(path).text
        for form in re.findall(r'<form[^>]*method="get"[^>]*>.*?</form>', text, re.S):
            check("csrf_token" not in form, f"{path}: a GET form carries the CSRF token")


# ---- 7. signed out, non-admin, sign-out ------------------------------------------------------------------------------

PAGES = ["/console/agents", f"/console/agents/{AGENT}", "/console/conversations/anything", "/console/access",
         "/console/activity", "/console/activity?q=x", "/console/admin"]
FORMS = ["/console/logout", f"/console/agents/{AGENT}/conversations", "/console/conversations/anything/messages",
         f"/console/agents/{AGENT}/stream", "/console/conversations/anything/stream",
         f"/console/access/agents/{AGENT}/approve", f"/console/access/agents/{AGENT}/withdraw",
         "/console/access/apps/deputy-console/withdraw", "/console/admin/settings"]


@case(CONSOLE, "signed out (no cookie, a made-up one, an empty one): every console page -> 303 to /console/, every "
               "console form -> 403 page; nothing changes")
def _(ctx):
    world = _world(ctx)
    before = (_settings(ctx), _consents(ctx, world.alice), len(_conversations(ctx, world.alice)),
              world.model.calls)
    browser = Browser(ctx.server.host)
    for label, cookies in [("no cookie", {}), ("a made-up session", {SESSION: "made-up-" + uuid.uuid4().hex}),
                           ("an empty session", {SESSION: ""})]:
        for path in PAGES:
            _expect_to_start(browser.get(path, cookies=cookies), f"GET {path} with {label}")
        for path in FORMS:
            response = browser.post(path, {"csrf_token": "", "question": "hi", "obo-enabled": "true"},
                                    cookies=cookies, timeout=ASK_TIMEOUT)
            _expect_error_page(response, 403, SIGNED_OUT_PHRASE, f"POST {path} with {label}")
    after = (_settings(ctx), _consents(ctx, world.alice), len(_conversations(ctx, world.alice)), world.model.calls)
    check(after == before, f"a signed-out form changed something: {before} -> {after}")
    start = browser.get("/console/")
    check(start.status_code == 200 and 'id="sign-in"' in start.text and 'href="/console/login"' in start.text,
          f"the signed-out start page: {_show(start)}")


@case(CONSOLE, "a non-admin: no Admin link; GET /console/admin and POST /console/admin/settings (with his own CSRF "
               "token) -> 403 page; settings unchanged")
def _(ctx):
    world = _world(ctx)
    bob = _bob(ctx)
    page = bob.page("/console/agents")
    check('href="/console/admin"' not in page.text, "bob's navigation links to the admin pages")
    admin_nav = _admin(ctx).page("/console/agents")
    check('href="/console/admin"' in admin_nav.text, "control: the admin's navigation links to the admin pages")
    before = _settings(ctx)
    for query in ["", "?principal=alice%40example.com&action=SELECT&securable=sec.hr.staff"]:
        _expect_error_page(bob.get(f"/console/admin{query}"), 403, ADMIN_PHRASE, f"bob's GET /console/admin{query}")
    for fields in [{}, {"obo-enabled": "true", "consent-required": "true"}]:
        response = bob.post("/console/admin/settings", {**fields, "csrf_token": bob.csrf_token},
                            headers={"Origin": ctx.server.host})
        check(response.status_code == 403 and '<main class="error">' in response.text,
              f"bob's settings form: {_show(response)}")
        check(_settings(ctx) == before, f"bob changed the settings: {_settings(ctx)}")
    expect_api_error(ctx.api.patch("/api/2.0/deputy/settings", world.bob, {"obo-enabled": False}, timeout=TIMEOUT),
                     403, "PERMISSION_DENIED", "only members of the `admins` group")


@case(CONSOLE, "sign-out revokes: after POST /console/logout with the CSRF token the old session cookie goes back "
               "to /console/ for pages and 403 for forms; signing in again gives a new session")
def _(ctx):
    _world(ctx)
    browser = _sign_in(ctx.server.host, "alice@example.com")
    old, token = browser.session, browser.csrf_token
    done = browser.post("/console/logout", {"csrf_token": token}, headers={"Origin": ctx.server.host})
    check(done.status_code == 303 and done.headers.get("Location") == "/console/", f"sign-out: {_show(done)}")
    check(any(line.startswith(f"{SESSION}=;") for line in done.cookie_lines), f"not cleared: {done.cookie_lines}")
    for path in PAGES[:-1]:
        _expect_to_start(browser.get(path, cookies={SESSION: old}), f"GET {path} with the signed-out session")
    _expect_error_page(browser.post("/console/logout", {"csrf_token": token}, cookies={SESSION: old}), 403,
                       SIGNED_OUT_PHRASE, "signing out again with the old session")
    start = browser.get("/console/", cookies={SESSION: old})
    check(start.status_code == 200 and 'id="sign-in"' in start.text, f"/console/ after sign-out: {_show(start)}")
    again = _sign_in(ctx.server.host, "alice@example.com")
    check(again.session != old and again.csrf_token != token, "a new sign-in reused the old session or CSRF token")


@case(CONSOLE, "rights follow the person at once: removed from admins, the admin page and form are 403 on the next "
               "request; deactivated, the session is signed out (pages 303, forms 403)")
def _(ctx):
    world = _world(ctx)
    api, admin = ctx.api, ctx.admin
    mallory_id = world.created[1]
    admins = expect_ok(api.get(f"{SCIM}/Groups", admin, params={"filter": 'displayName eq "admins"'},
                               timeout=TIMEOUT), "the admins group")["Resources"][0]["id"]
    patch = lambda op, value: api.patch(f"{SCIM}/Groups/{admins}", admin, {  # noqa: E731
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": op, "path": "members", "value": value}]}, timeout=TIMEOUT)
    expect_ok(patch("add", [{"value": mallory_id}]), "mallory joins admins")
    try:
        browser = _sign_in(ctx.server.host, MALLORY)
        check('href="/console/admin"' in browser.page("/console/agents").text, "control: mallory is shown as admin")
        browser.page("/console/admin", "control: mallory's admin page")
        expect_ok(patch("remove", [{"value": mallory_id}]), "mallory leaves admins")
        _expect_error_page(browser.get("/console/admin"), 403, ADMIN_PHRASE, "the admin page after leaving admins")
        before = _settings(ctx)
        refused = browser.post("/console/admin/settings", {"csrf_token": browser.csrf_token})
        check(refused.status_code == 403 and _settings(ctx) == before,
              f"the settings form after leaving admins: {_show(refused)}; settings {_settings(ctx)}")
        check('href="/console/admin"' not in browser.page("/console/agents").text, "still shown as an admin")
    finally:
        patch("remove", [{"value": mallory_id}])
    expect_ok(api.patch(f"{SCIM}/Users/{mallory_id}", admin, {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}]}, timeout=TIMEOUT), "deactivate mallory")
    world.deactivated = browser
    _expect_to_start(browser.get("/console/agents"), "a page after mallory was deactivated")
    _expect_error_page(browser.post("/console/logout", {"csrf_token": browser.csrf_token}), 403, SIGNED_OUT_PHRASE,
                       "a form after mallory was deactivated")


def _expect_sign_in_page(browser: Browser, where: str) -> None:
    """`/console/` with a session the API no longer accepts: the sign-in page, not a redirect to the agents page
    (which sends the browser straight back here: a redirect loop with no way to sign in)."""
    start = browser.get("/console/")
    check(start.status_code == 200 and 'id="sign-in"' in start.text,
          f"{where}: /console/ should show the sign-in page, got {_show(start)} (and /console/agents sends it back "
          f"to /console/: a redirect loop)")


@case(CONSOLE, "a session the API no longer accepts (its user deactivated) ends: pages go to /console/, which shows "
               "the sign-in page (no redirect loop); withdrawing the never-approved console app ends nothing")
def _(ctx):
    world = _world(ctx)
    browser = _sign_in(ctx.server.host, "bob@example.com")
    # The console is a trusted app with no stored approval: there is nothing to withdraw, the API says so (404), and
    # it revokes nothing on the way.
    withdrawn = ctx.api.delete("/api/2.0/deputy/app-consents/deputy-console", world.bob, timeout=TIMEOUT)
    check(withdrawn.status == 404, f"withdrawing the console app: {withdrawn}")
    still = browser.get("/console/agents")
    check(still.status_code == 200, f"bob's session after a 404 withdrawal: {_show(still)}")
    # Mallory's session from the case before, made before she was deactivated.
    mallory = getattr(world, "deactivated", None)
    check(mallory is not None, "the case before left no session of a deactivated user")
    _expect_to_start(mallory.get("/console/agents"), "a page of a deactivated user's session")
    _expect_sign_in_page(mallory, "a deactivated user's session")


# ---- leaving the server as the category found it ----------------------------------------------------------------

@case(CONSOLE, "the category leaves no local password, user, group, setting or consent of its own behind")
def _(ctx):
    world = getattr(ctx, "_console_world", None)
    if world is None:
        raise Fail("the category's world was never made")
    api, admin = ctx.api, ctx.admin
    problems = []
    reply = api.patch("/api/2.0/deputy/settings", admin, world.settings_before, timeout=TIMEOUT)
    if reply.status != 200:
        problems.append(f"restore settings: {reply!r}")
    if world.app:
        reply = api.delete(f"/api/2.0/deputy/app-consents/{world.app}", world.alice, timeout=TIMEOUT)
        if reply.status not in (200, 404):
            problems.append(f"withdraw alice's app consent: {reply!r}")
    api.delete(f"/api/2.0/deputy/consents/{AGENT}", world.alice, timeout=TIMEOUT)
    for user_id in world.created:
        reply = api.delete(f"{SCIM}/Users/{user_id}", admin, timeout=TIMEOUT)
        if reply.status not in (200, 204):
            problems.append(f"delete user {user_id}: {reply!r}")
    for group_id in getattr(world, "created_groups", []):
        reply = api.delete(f"{SCIM}/Groups/{group_id}", admin, timeout=TIMEOUT)
        if reply.status not in (200, 204):
            problems.append(f"delete group {group_id}: {reply!r}")
    # No API removes a local password: alice's and bob's go from the store (read at every sign-in) directly.
    ids = [int(i) for i in [ctx.users[name]["id"] for name in ("alice@example.com", "bob@example.com")]
           + list(world.created)]
    among = f"user_id IN ({','.join('?' * len(ids))})"
    ctx.server.sql(f"DELETE FROM local_passwords WHERE {among}", ids)
    [(left,)] = ctx.server.sql(f"SELECT count(*) FROM local_passwords WHERE {among}", ids)
    if left:
        problems.append(f"{left} local passwords of the category are left")
    settings = _settings(ctx)
    if settings != world.settings_before:
        problems.append(f"settings {settings} != {world.settings_before}")
    world.model.httpd.shutdown()
    world.model.httpd.server_close()
    check(not problems, "; ".join(problems))
