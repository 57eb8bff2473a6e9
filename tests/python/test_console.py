"""The web console (`/console/`) in a real browser: headless Chromium driven by Selenium (console_helpers.py).

People sign in through the console the real way: the console's Sign in link, Deputy's authorization endpoint, the
test identity provider's login form (tests/idp), and back. The provider's `groups` claim puts alice in `engineering`
and bob in `sales` (groups Deputy creates and syncs as provider-managed), so the seed's RAG scenario
(agent_helpers.rag_scenario: a documents table whose row filter shows each reader the public documents and their
department's) gives them different sources. dana is an admin: a user added to `admins` with SCIM before she signs in.
On-behalf-of access is on and each user must consent to the agent before it may act for them.

Each person has their own browser (own profile, own cookies) for the whole module. The tests run in order and build on
one another's data (alice's answer and refusal are what the Activity test looks for), but each puts the consent it
needs in place itself. Screenshots of each page go to `DEPUTY_CONSOLE_SCREENSHOTS` (e.g. docs/console, relative to
the repository root) if set, else to a temporary directory.
"""

import http.server
import os
import threading
from pathlib import Path

import pytest
import requests
from agent_helpers import RAG_INDEX, RAG_QUESTION, rag_scenario
from conftest import REPO_ROOT, free_loopback_port, running_deputy
from console_helpers import Browser, form_action_selector, query
from databricks.sdk import WorkspaceClient
from idp import TestIdentityProvider
from selenium.webdriver.common.by import By

AGENT = "rag-agent"
ANSWER_TIMEOUT_SECONDS = 300
ALICE = {"sub": "alice-0001", "email": "alice@example.com", "email_verified": True, "name": "Alice Example",
         "groups": ["engineering"], "password": "alice-password"}
BOB = {"sub": "bob-0002", "email": "bob@example.com", "email_verified": True, "name": "Bob Example",
       "groups": ["sales"], "password": "bob-password"}
DANA = {"sub": "dana-0003", "email": "dana@example.com", "email_verified": True, "name": "Dana Admin",
        "groups": [], "password": "dana-password"}
PUBLIC_DOCUMENTS = {"Holiday calendar"}
ENGINEERING_DOCUMENTS = {"Falcon launch plan", "Falcon architecture"}
SALES_DOCUMENTS = {"Acme renewal", "Pricing change"}
SCIM = "/api/2.0/preview/scim/v2"

APPROVE = f"/console/access/agents/{AGENT}/approve"
WITHDRAW = f"/console/access/agents/{AGENT}/withdraw"


class Console:
    def __init__(self, server, idp):
        self.server = server
        self.idp = idp
        self.host = server.host

    def admin(self, method, path, **kwargs):
        response = requests.request(method, self.server.url(path), timeout=30,
                                    headers={"Authorization": f"Bearer {self.server.admin_token}"}, **kwargs)
        assert response.status_code in (200, 201), f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else {}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    port = free_loopback_port()
    callback = f"http://127.0.0.1:{port}/oidc/v1/callback"
    clients = [{"client_id": "deputy", "client_secret": "deputy-secret", "redirect_uris": [callback]}]
    with TestIdentityProvider(clients=clients, accounts=[ALICE, BOB, DANA]) as idp:
        with running_deputy(tmp_path_factory, port) as server:
            ws = Console(server, idp)
            ws.admin("POST", "/api/2.0/deputy/identity-providers", json={
                "issuer": idp.issuer, "client_id": "deputy", "client_secret": "deputy-secret",
                "groups_claim": "groups"})
            # dana is an admin before she ever signs in: her sign-in maps to this user by email.
            dana = ws.admin("POST", f"{SCIM}/Users", json={"userName": DANA["email"], "displayName": DANA["name"]})
            admins = ws.admin("GET", f"{SCIM}/Groups", params={"filter": 'displayName eq "admins"'})["Resources"][0]
            ws.admin("PATCH", f"{SCIM}/Groups/{admins['id']}", json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": dana["id"]}]}]})
            # Everyone may query the index: the table's row filter decides which documents each reader gets.
            admin = WorkspaceClient(host=server.host, token=server.admin_token, auth_type="pat")
            rag_scenario(server, admin, tmp_path_factory.mktemp("rag") / "model", ["users"], endpoint=AGENT)
            settings = ws.admin("PATCH", "/api/2.0/deputy/settings",
                                json={"obo-enabled": True, "consent-required": True})
            assert settings["obo-enabled"] is True and settings["consent-required"] is True, settings
            yield ws


class People:
    """Each person's own browser, opened on first use and kept for the module."""

    def __init__(self, host):
        self.host = host
        self.browsers = {}
        self.signed_in = set()

    def open(self, person) -> Browser:
        """A new browser for `person`, not signed in (it replaces any they had)."""
        old = self.browsers.pop(person["email"], None)
        if old is not None:
            old.quit()
        self.signed_in.discard(person["email"])
        browser = Browser(self.host, person["email"].split("@")[0])
        self.browsers[person["email"]] = browser
        return browser

    def browser(self, person) -> Browser:
        """`person`'s browser, signed in."""
        browser = self.browsers.get(person["email"]) or self.open(person)
        if person["email"] not in self.signed_in:
            browser.sign_in(person["email"], person["password"])
            self.signed_in.add(person["email"])
        return browser

    def close(self):
        for browser in self.browsers.values():
            browser.quit()


@pytest.fixture(scope="module")
def people(console):
    opened = People(console.host)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    configured = os.environ.get("DEPUTY_CONSOLE_SCREENSHOTS")
    if configured:
        directory = Path(configured)
        return directory if directory.is_absolute() else REPO_ROOT / directory
    return tmp_path_factory.mktemp("console-screenshots")


# What a person does in the console.

def consented_row(browser):
    rows = browser.all(f'#agent-consents tr[data-endpoint="{AGENT}"]')
    return rows[0] if rows else None


def approve_form(browser):
    forms = browser.all(form_action_selector("approve", APPROVE))
    return forms[0] if forms else None


def open_access(browser):
    browser.get("/console/access")
    browser.wait_for("#agent-consents, #pending-consents", "the Access page's tables")


def ensure_consent(browser):
    """Approves the agent on the Access page unless it is approved already."""
    open_access(browser)
    if consented_row(browser) is not None:
        return
    assert approve_form(browser) is not None, f"no Approve form for {AGENT}: {browser.describe()}"
    browser.submit(form_action_selector("approve", APPROVE))
    browser.wait(lambda _: consented_row(browser) is not None, f"{AGENT} among the agents consented to")


def ask_agent(browser, question):
    """Asks the agent in its playground; returns once the page shows the conversation or an error."""
    browser.get(f"/console/agents/{AGENT}")
    browser.wait_for(f'form#ask[action$="/console/agents/{AGENT}/conversations"]', "the playground's Ask form")
    browser.fill("form#ask", "question", question)
    browser.submit("form#ask")
    browser.wait(
        lambda driver: browser.path.startswith("/console/conversations/")
        or driver.find_elements(By.CSS_SELECTOR, 'p.error[role="alert"]'),
        "the agent's answer (a conversation page) or an error",
        ANSWER_TIMEOUT_SECONDS,
    )


def sources_of(browser, message):
    return [browser.text_of(item) for item in message.find_elements(By.CSS_SELECTOR, "ul.sources li")]


def open_runs(browser):
    """Opens the <details class="run"> of each answer, as a person clicking on them would."""
    for summary in browser.all("details.run:not([open]) > summary"):
        summary.click()


def activity_rows(browser, **filters):
    browser.get(query("/console/activity", **filters) if filters else "/console/activity")
    browser.wait_for("table#activity", "the Activity table")
    return [
        {
            "request_id": row.get_attribute("data-request-id"),
            "decision": row.get_attribute("data-decision"),
            "text": browser.text_of(row),
        }
        for row in browser.all("table#activity tbody tr")
    ]


def nav_links(browser):
    return {browser.text_of(link): link.get_attribute("href") for link in browser.all("nav#nav a")}


def csrf_token_of(browser, form_css):
    return browser.wait_for(f'{form_css} input[name="csrf_token"]').get_attribute("value")


# The tests.

def test_alice_signs_in_approves_the_agent_and_gets_an_answer_from_her_documents(console, people, screenshots):
    alice = people.open(ALICE)
    # Signed out, a page sends the browser to the console's front page, which offers the sign-in.
    alice.get("/console/agents")
    alice.wait(lambda _: alice.path in ("/console/", "/console"), "the console's front page")
    sign_in_link = alice.wait_for("a#sign-in", "the Sign in link")
    assert sign_in_link.get_attribute("href").endswith("/console/login")
    # A session cookie planted before sign-in is never adopted.
    alice.driver.add_cookie({"name": "deputy_console", "value": "planted-by-someone-else", "path": "/"})

    sign_in_link.click()
    alice.wait_for("input[name=login]", "the identity provider's login form")
    assert alice.driver.current_url.startswith(console.idp.issuer), alice.describe()
    alice.fill("form:has(input[name=password])", "login", ALICE["email"])
    alice.fill("form:has(input[name=password])", "password", ALICE["password"])
    alice.submit("form:has(input[name=password])")
    alice.wait_for_path("/console/agents")
    people.signed_in.add(ALICE["email"])

    session = alice.cookies().get("deputy_console")
    assert session is not None, alice.cookies()
    assert session["value"] != "planted-by-someone-else"
    assert session["httpOnly"] is True and session.get("sameSite") == "Lax" and session["path"] == "/", session
    whoami = alice.text_of(alice.wait_for("span#whoami"))
    assert ALICE["email"] in whoami or ALICE["name"] in whoami, whoami
    links = nav_links(alice)
    for name, path in [("Agents", "/console/agents"), ("Access", "/console/access"), ("Activity", "/console/activity")]:
        assert links.get(name, "").endswith(path), links
    assert alice.all('form#sign-out[method="post"][action$="/console/logout"]'), alice.describe()

    # Signed in, the front page sends her on to the agents.
    alice.get("/console/")
    alice.wait_for_path("/console/agents")
    row = alice.wait_for(f'table#agents tr[data-endpoint="{AGENT}"]', "the RAG agent among the agents")
    link = row.find_element(By.CSS_SELECTOR, f'a[href$="/console/agents/{AGENT}"]')
    assert alice.text_of(link) == AGENT
    alice.screenshot(screenshots, "agents")

    # Consent is required: the agent waits on the Access page until alice approves it.
    alice.driver.find_element(By.CSS_SELECTOR, 'nav#nav a[href$="/console/access"]').click()
    alice.wait_for_path("/console/access")
    if consented_row(alice) is None:
        alice.wait_for(f"#pending-consents {form_action_selector('approve', APPROVE)}", "the agent's pending consent")
        alice.submit(form_action_selector("approve", APPROVE))
    row = alice.wait(lambda _: consented_row(alice), f"{AGENT} among the agents alice consented to")
    scopes = [alice.text_of(item) for item in row.find_elements(By.CSS_SELECTOR, "ul.scopes li")]
    assert scopes and all(scopes), alice.describe()
    assert row.find_elements(By.CSS_SELECTOR, form_action_selector("withdraw", WITHDRAW)), alice.describe()
    assert approve_form(alice) is None, "the agent is still pending after its approval"
    alice.screenshot(screenshots, "access")

    ask_agent(alice, RAG_QUESTION)
    assert alice.path.startswith("/console/conversations/"), f"the agent did not answer: {alice.describe()}"
    conversation = alice.path
    messages = alice.wait_for("ol#messages", "the conversation's messages")
    asked = messages.find_elements(By.CSS_SELECTOR, "li.message.user")
    assert asked and RAG_QUESTION in alice.text_of(asked[0]), alice.describe()
    answers = messages.find_elements(By.CSS_SELECTOR, "li.message.assistant")
    assert answers, alice.describe()
    answer = answers[-1]
    assert alice.text_of(answer.find_element(By.CSS_SELECTOR, "div.answer")), "an empty answer"
    open_runs(alice)
    sources = set(sources_of(alice, answer))
    # Her row filter gives her the public documents and engineering's, never sales'.
    assert "Falcon launch plan" in sources, sources
    assert sources <= PUBLIC_DOCUMENTS | ENGINEERING_DOCUMENTS, sources
    assert not sources & SALES_DOCUMENTS, sources
    tools = [alice.text_of(row) for row in answer.find_elements(By.CSS_SELECTOR, "details.run table.tools tr")
             if row.find_elements(By.TAG_NAME, "td")]
    assert tools, f"no audited calls shown for the answer: {alice.describe()}"
    assert any(RAG_INDEX in tool for tool in tools), tools
    assert alice.all(f'form#ask[action$="{conversation}/messages"] textarea[name="question"]'), alice.describe()
    alice.screenshot(screenshots, "conversation")

    # The playground lists the conversation.
    alice.get(f"/console/agents/{AGENT}")
    listed = alice.wait_for("ul#conversations", "alice's earlier conversations")
    hrefs = [link.get_attribute("href") for link in listed.find_elements(By.TAG_NAME, "a")]
    assert any(href.endswith(conversation) for href in hrefs), (conversation, hrefs)
    alice.screenshot(screenshots, "playground")


def test_after_alice_withdraws_her_consent_the_agent_is_refused(console, people, screenshots):
    alice = people.browser(ALICE)
    ensure_consent(alice)
    alice.submit(form_action_selector("withdraw", WITHDRAW))
    alice.wait(lambda _: consented_row(alice) is None, f"{AGENT} gone from the agents alice consented to")
    alice.wait(lambda _: approve_form(alice), f"{AGENT} pending again")

    ask_agent(alice, RAG_QUESTION)
    assert not alice.path.startswith("/console/conversations/"), f"the agent answered: {alice.describe()}"
    error = alice.text_of(alice.find('p.error[role="alert"]'))
    assert "consent" in error.lower(), error
    assert alice.all("form#ask"), "the playground is not shown again with the error"
    alice.screenshot(screenshots, "refused")


def test_activity_shows_alice_her_answer_and_refusal_and_bob_none_of_it(console, people, screenshots):
    alice = people.browser(ALICE)
    rows = activity_rows(alice)
    assert rows, alice.describe()
    assert all(ALICE["email"] in row["text"] for row in rows), [row["text"] for row in rows]
    denied = [row for row in rows if row["decision"] == "denied"]
    assert any("consent" in row["text"].lower() for row in denied), rows
    allowed = [row for row in rows if row["decision"] == "allowed"]
    # The answered question: the agent's on-behalf-of token, then its search of the index as alice.
    assert any(RAG_INDEX in row["text"] for row in allowed), rows
    assert any(AGENT in row["text"] for row in allowed), rows
    alice.screenshot(screenshots, "activity")
    alice_ids = {row["request_id"] for row in rows if row["request_id"]}
    assert alice_ids, rows

    only_denied = activity_rows(alice, decision="denied")
    assert only_denied and all(row["decision"] == "denied" for row in only_denied), only_denied
    for_agent = activity_rows(alice, agent=AGENT)
    assert for_agent and {row["request_id"] for row in for_agent} <= alice_ids, for_agent

    alice.get(f"/console/agents/{AGENT}")
    conversations = [link.get_attribute("href")
                     for link in alice.wait_for("ul#conversations").find_elements(By.TAG_NAME, "a")]
    assert conversations, alice.describe()

    # bob, in his own browser, gets his own documents and sees none of alice's activity or conversations.
    bob = people.browser(BOB)
    assert "alice" not in str(bob.cookies()).lower()
    ensure_consent(bob)
    ask_agent(bob, RAG_QUESTION)
    assert bob.path.startswith("/console/conversations/"), f"the agent did not answer bob: {bob.describe()}"
    open_runs(bob)
    sources = set(sources_of(bob, bob.all("li.message.assistant")[-1]))
    assert "Acme renewal" in sources and sources <= PUBLIC_DOCUMENTS | SALES_DOCUMENTS, sources
    bob_rows = activity_rows(bob)
    assert bob_rows, f"bob sees none of his own activity: {bob.describe()}"
    assert not [row for row in bob_rows if ALICE["email"] in row["text"]], bob_rows
    assert not {row["request_id"] for row in bob_rows} & alice_ids, bob_rows
    assert not activity_rows(bob, q=ALICE["email"]), "bob finds alice's activity by searching for her"
    page = bob.requests_session().get(conversations[0], timeout=30, allow_redirects=False)
    assert page.status_code == 404, (page.status_code, page.text[:500])
    assert "text/html" in page.headers.get("Content-Type", ""), page.headers


def test_only_admins_get_the_admin_page(console, people, screenshots):
    alice = people.browser(ALICE)
    alice.get("/console/agents")
    alice.wait_for("nav#nav")
    assert not alice.all('nav#nav a[href$="/console/admin"]'), nav_links(alice)
    alice.get("/console/admin")
    alice.wait_for("main.error", "the refusal of the admin page")
    refused = alice.requests_session().get(console.server.url("/console/admin"), timeout=30, allow_redirects=False)
    assert refused.status_code == 403, (refused.status_code, refused.text[:500])

    dana = people.browser(DANA)
    dana.driver.find_element(By.CSS_SELECTOR, 'nav#nav a[href$="/console/admin"]').click()
    dana.wait_for_path("/console/admin")
    for section in ["settings", "identity-providers", "federation-policies", "users", "groups", "endpoints", "why"]:
        assert dana.all(f"#{section}"), f"no #{section} on the admin page: {dana.describe()}"
    settings = dana.find('#settings form[method="post"][action$="/console/admin/settings"]')
    for name in ["obo-enabled", "consent-required"]:
        box = settings.find_element(By.CSS_SELECTOR, f'input[type="checkbox"][name="{name}"]')
        assert box.is_selected(), f"{name} is on but its box is not checked"
    assert console.idp.issuer in dana.text_of(dana.find("#identity-providers"))
    users = dana.text_of(dana.find("#users"))
    # alice signed in with the provider's groups: her row shows the group it created for her.
    alice_row = [dana.text_of(row) for row in dana.all("#users tr") if ALICE["email"] in dana.text_of(row)]
    assert alice_row and "engineering" in alice_row[0], users
    assert AGENT in dana.text_of(dana.find("#endpoints"))

    why = "#why form"
    dana.fill(why, "principal", ALICE["email"])
    dana.fill(why, "action", "select")
    dana.fill(why, "securable_type", "table")
    dana.fill(why, "securable", "demo.docs.documents")
    dana.submit(why)
    answer = dana.text_of(dana.wait_for("pre#why-answer", "the why answer"))
    assert answer and ("allow" in answer.lower() or "den" in answer.lower()), answer
    dana.screenshot(screenshots, "admin")

    # An admin's Activity shows everyone's events.
    assert any(ALICE["email"] in row["text"] for row in activity_rows(dana)), dana.describe()


class _ForgingSite(http.server.BaseHTTPRequestHandler):
    """Another origin's page that posts a form to the console as soon as it is opened (no CSRF token)."""

    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        page = (f'<!doctype html><form id="f" method="post" action="{self.target}">'
                '<input name="note" value="forged"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_a_forged_post_without_the_csrf_token_is_refused_and_changes_nothing(console, people):
    alice = people.browser(ALICE)
    ensure_consent(alice)
    withdraw_url = console.server.url(WITHDRAW)

    # A page of another origin (same host, another port: alice's cookie goes along) submits the withdrawal.
    handler = type("ForgingSite", (_ForgingSite,), {"target": withdraw_url})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        alice.driver.get(f"http://127.0.0.1:{site.server_port}/")
        alice.wait(lambda _: alice.path == WITHDRAW, "the forged form's post to the console")
        alice.wait_for("main.error", "the console's refusal of the forged post")
    finally:
        site.shutdown()
        site.server_close()
        thread.join(timeout=10)

    # The same post with alice's own cookie: no token, a wrong one, and bob's (valid for bob's session only).
    bob = people.browser(BOB)
    open_access(bob)
    bob_token = csrf_token_of(bob, "form")
    session = alice.requests_session()
    for fields in [{}, {"csrf_token": ""}, {"csrf_token": "not-the-token"}, {"csrf_token": bob_token}]:
        forged = session.post(withdraw_url, data=fields, headers={"Origin": console.host}, timeout=30,
                              allow_redirects=False)
        assert forged.status_code == 403, (fields, forged.status_code, forged.text[:500])
        assert 'class="error"' in forged.text and "<main" in forged.text, forged.text[:500]
    # Alice's real token from another origin is refused too.
    open_access(alice)
    token = csrf_token_of(alice, form_action_selector("withdraw", WITHDRAW))
    cross = session.post(withdraw_url, data={"csrf_token": token}, timeout=30, allow_redirects=False,
                         headers={"Origin": "http://127.0.0.1:9"})
    assert cross.status_code == 403, (cross.status_code, cross.text[:500])
    # Signed out: refused.
    anonymous = requests.post(withdraw_url, data={"csrf_token": token}, timeout=30, allow_redirects=False)
    assert anonymous.status_code == 403, (anonymous.status_code, anonymous.text[:500])

    open_access(alice)
    assert consented_row(alice) is not None, f"a forged post withdrew the consent: {alice.describe()}"


def test_console_responses_carry_the_security_headers(console, people):
    front = requests.get(console.server.url("/"), timeout=30, allow_redirects=False)
    assert front.is_redirect and front.headers["Location"].rstrip("/").endswith("/console"), front.headers
    alice = people.browser(ALICE)
    signed_in = alice.requests_session()
    for response in [
        requests.get(console.server.url("/console/"), timeout=30, allow_redirects=False),
        requests.get(console.server.url("/console/agents"), timeout=30, allow_redirects=False),
        signed_in.get(console.server.url("/console/access"), timeout=30, allow_redirects=False),
    ]:
        headers = response.headers
        policy = headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, (response.url, policy)
        assert "form-action 'self'" in policy, (response.url, policy)
        assert headers.get("X-Content-Type-Options") == "nosniff", (response.url, headers)
        assert headers.get("Referrer-Policy") == "same-origin", (response.url, headers)
        assert "no-store" in headers.get("Cache-Control", ""), (response.url, headers)
    signed_out = requests.get(console.server.url("/console/agents"), timeout=30, allow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["Location"].rstrip("/").endswith("/console")


def test_signing_out_ends_the_session_on_the_server(console, people):
    bob = people.browser(BOB)
    bob.get("/console/agents")
    before = bob.requests_session()
    assert before.get(bob.url("/console/access"), timeout=30, allow_redirects=False).status_code == 200
    bob.submit("form#sign-out")
    bob.wait(lambda _: bob.path in ("/console/", "/console"), "the console's front page after signing out")
    people.signed_in.discard(BOB["email"])
    assert bob.all("a#sign-in"), bob.describe()
    # The old cookie, replayed, is worth nothing: the session is gone on the server, not only in the browser.
    replayed = before.get(bob.url("/console/access"), timeout=30, allow_redirects=False)
    assert replayed.status_code == 303 and replayed.headers["Location"].rstrip("/").endswith("/console"), (
        replayed.status_code, replayed.headers)
