"""People sign in through Deputy's authorization endpoint, which sends them to the organisation's identity provider
(tests/idp: oidc-provider on Node.js, on loopback): the real SDK's `external-browser` login with a test playing the
browser; users created just in time with the provider's groups; disabled users refused; consent for an
admin-registered app, listed and withdrawn; refresh-token rotation with reuse detection; code replay.

These tests run their own Deputy (the identity provider they add is workspace-wide), on a port chosen before the
provider starts so the provider can know Deputy's callback URL.
"""

import base64
import hashlib
import os
import secrets
import sys
import urllib.parse
from pathlib import Path

import pytest
import requests
from databricks.sdk import WorkspaceClient

from conftest import free_loopback_port, running_deputy
from idp import TestIdentityProvider, sign_in

HERE = Path(__file__).resolve().parent
APP_REDIRECT = "http://127.0.0.1:9/"
ALICE = {"sub": "3b1f6c1e-alice", "email": "alice@example.com", "email_verified": True, "name": "Alice Example",
         "groups": ["analysts", "engineers"], "password": "alice-password"}
BOB = {"sub": "9e2d-bob", "email": "bob@example.com", "email_verified": True, "name": "Bob",
       "groups": [], "password": "bob-password"}
CAROL = {"sub": "c4r0l", "email": "carol@example.com", "email_verified": True, "name": "Carol",
         "groups": ["analysts"], "password": "carol-password"}
MALLORY = {"sub": "m4ll", "email": "mallory@example.com", "email_verified": False, "name": "Mallory",
           "groups": [], "password": "mallory-password"}


class Workspace:
    def __init__(self, server, idp):
        self.server = server
        self.idp = idp

    def url(self, path):
        return self.server.url(path)

    def admin(self, method, path, **kwargs):
        return requests.request(method, self.url(path), timeout=10,
                                headers={"Authorization": f"Bearer {self.server.admin_token}"}, **kwargs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    port = free_loopback_port()
    callback = f"http://127.0.0.1:{port}/oidc/v1/callback"
    clients = [{"client_id": "deputy", "client_secret": "deputy-secret", "redirect_uris": [callback]}]
    with TestIdentityProvider(clients=clients, accounts=[ALICE, BOB, CAROL, MALLORY]) as idp:
        with running_deputy(tmp_path_factory, port) as server:
            ws = Workspace(server, idp)
            # A SCIM-managed group the provider also names: sign-in must leave its membership alone.
            assert ws.admin("POST", "/api/2.0/preview/scim/v2/Groups",
                            json={"displayName": "engineers"}).status_code in (200, 201)
            carol = ws.admin("POST", "/api/2.0/preview/scim/v2/Users",
                             json={"userName": CAROL["email"], "active": False})
            assert carol.status_code in (200, 201), carol.text
            added = ws.admin("POST", "/api/2.0/deputy/identity-providers", json={
                "issuer": idp.issuer, "client_id": "deputy", "client_secret": "deputy-secret",
                "groups_claim": "groups"})
            assert added.status_code == 200, added.text
            assert added.json()["redirect_uri"] == callback
            assert "client_secret" not in added.json()
            yield ws


def browser_program(directory):
    """An executable that runs play_browser.py on this interpreter: `BROWSER` names one program, not a command line."""
    program = directory / "browser"
    program.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{HERE / 'play_browser.py'}' \"$@\"\n")
    program.chmod(0o755)
    return program


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(ws, client_id="databricks-cli", redirect_uri=APP_REDIRECT, scope="all-apis offline_access",
                  challenge=None, state="st4te", **extra):
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return ws.url("/oidc/v1/authorize?") + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def answer_of(response):
    """The query of a redirect to the app, as a dict."""
    assert response.is_redirect, f"{response.status_code}: {response.text[-600:]}"
    location = response.headers["Location"]
    assert location.startswith(APP_REDIRECT), location
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(location).query))


def sign_in_as(ws, person, client_id="databricks-cli", scope="all-apis offline_access", session=None):
    """A browser sign-in up to the app's redirect; returns (answer, verifier, session)."""
    verifier, challenge = pkce()
    session = session or requests.Session()
    response = sign_in(session, authorize_url(ws, client_id, scope=scope, challenge=challenge),
                       person["email"], person["password"], stop_at=APP_REDIRECT)
    return response, verifier, session


def redeem(ws, code, verifier, client_id="databricks-cli", redirect_uri=APP_REDIRECT):
    return requests.post(ws.url("/oidc/v1/token"), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": client_id, "code_verifier": verifier})


def refresh(ws, token, client_id="databricks-cli"):
    return requests.post(ws.url("/oidc/v1/token"), timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})


def me(ws, access_token):
    return requests.get(ws.url("/api/2.0/preview/scim/v2/Me"), timeout=10,
                        headers={"Authorization": f"Bearer {access_token}"})


def test_the_sdk_external_browser_login_signs_a_person_in_through_the_provider(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the SDK's token cache
    monkeypatch.setenv("BROWSER", str(browser_program(tmp_path)))
    monkeypatch.setenv("PLAY_BROWSER_LOGIN", ALICE["email"])
    monkeypatch.setenv("PLAY_BROWSER_PASSWORD", ALICE["password"])
    monkeypatch.setenv("PLAY_BROWSER_LOG", str(tmp_path / "browser.log"))
    w = WorkspaceClient(host=workspace.server.host, auth_type="external-browser")
    person = w.current_user.me()
    log = (tmp_path / "browser.log").read_text() if (tmp_path / "browser.log").exists() else ""
    assert person.user_name == ALICE["email"], log
    assert person.display_name == ALICE["name"]
    groups = {group.display for group in person.groups or []}
    # Created just in time in the provider's group; the SCIM-managed `engineers` is left alone.
    assert "analysts" in groups
    assert "engineers" not in groups
    assert "users" in groups
    # The SDK cached a refresh token under the (temporary) home directory.
    assert list((tmp_path / ".config" / "databricks-sdk-py" / "oauth").glob("*.json"))
    audit = workspace.admin("GET", "/api/2.0/deputy/audit", params={"limit": 1000})
    assert audit.status_code == 200, audit.text
    sign_ins = [event for event in audit.json()["events"] if "signed in through" in str(event)]
    assert any(ALICE["email"] in str(event) for event in sign_ins), audit.text


def test_a_second_sign_in_keeps_the_user_and_syncs_groups(workspace):
    response, verifier, _ = sign_in_as(workspace, ALICE)
    answer = answer_of(response)
    assert answer["iss"] == workspace.admin("GET", "/oidc/.well-known/oauth-authorization-server").json()["issuer"]
    assert answer["state"] == "st4te"
    tokens = redeem(workspace, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    found = workspace.admin("GET", "/api/2.0/preview/scim/v2/Users",
                            params={"filter": f'userName eq "{ALICE["email"]}"'}).json()
    assert found["totalResults"] == 1


def test_a_disabled_user_is_refused(workspace):
    response, _, _ = sign_in_as(workspace, CAROL)
    answer = answer_of(response)
    assert answer["error"] == "access_denied"
    assert "disabled" in answer["error_description"]
    assert "code" not in answer


def test_an_unverified_email_is_refused(workspace):
    response, _, _ = sign_in_as(workspace, MALLORY)
    answer = answer_of(response)
    assert answer["error"] == "access_denied"
    assert "verified" in answer["error_description"]


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_sign_in(workspace):
    response, verifier, _ = sign_in_as(workspace, BOB)
    first = redeem(workspace, answer_of(response)["code"], verifier).json()
    assert me(workspace, first["access_token"]).json()["userName"] == BOB["email"]
    # An agent's token exchanged from the signed-in token falls with the sign-in.
    exchanged = requests.post(workspace.url("/oidc/v1/token"), timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": first["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "iam.scim"})
    assert exchanged.status_code == 200, exchanged.text
    second = refresh(workspace, first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert me(workspace, second["access_token"]).status_code == 200
    reused = refresh(workspace, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The whole family is gone: the rotated refresh token, both access tokens and the exchanged token.
    assert refresh(workspace, second["refresh_token"]).json()["error"] == "invalid_grant"
    for token in (first["access_token"], second["access_token"], exchanged.json()["access_token"]):
        assert me(workspace, token).status_code == 401


def test_a_replayed_code_is_refused_and_revokes_what_it_gave(workspace):
    response, verifier, _ = sign_in_as(workspace, BOB)
    code = answer_of(response)["code"]
    first = redeem(workspace, code, verifier)
    assert first.status_code == 200
    replay = redeem(workspace, code, verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert me(workspace, first.json()["access_token"]).status_code == 401


def test_an_app_asks_for_consent_which_is_listed_and_withdrawn(workspace):
    account = workspace.admin("GET", "/.well-known/databricks-config").json()["workspace_id"]
    created = workspace.admin("POST", f"/api/2.0/accounts/{account}/oauth2/custom-app-integrations", json={
        "name": "Expense helper", "redirect_urls": [APP_REDIRECT], "confidential": False,
        "scopes": ["iam.scim", "sql"]})
    assert created.status_code == 200, created.text
    client_id = created.json()["client_id"]
    assert "client_secret" not in created.json()
    # Asking for more than the app was registered with is refused back to the app.
    verifier, challenge = pkce()
    too_wide = requests.get(authorize_url(workspace, client_id, scope="all-apis", challenge=challenge),
                            allow_redirects=False, timeout=10)
    assert answer_of(too_wide)["error"] == "invalid_scope"

    response, verifier, session = sign_in_as(workspace, ALICE, client_id, scope="iam.scim offline_access")
    assert response.status_code == 200 and "Expense helper" in response.text, response.text[:500]
    assert "see and manage users, groups and service principals" in response.text
    request_id = response.text.split('name="request" value="')[1].split('"')[0]
    # The consent form only works in the browser that signed in (no cookie: refused, no redirect).
    forged = requests.post(workspace.url("/oidc/v1/consent"), data={"request": request_id, "decision": "approve"},
                           allow_redirects=False, timeout=10)
    assert forged.status_code == 400 and not forged.is_redirect
    approved = session.post(workspace.url("/oidc/v1/consent"), data={"request": request_id, "decision": "approve"},
                            allow_redirects=False, timeout=10)
    tokens = redeem(workspace, answer_of(approved)["code"], verifier, client_id)
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    assert tokens["scope"] == "iam.scim"
    listed = requests.get(workspace.url("/api/2.0/deputy/app-consents"), timeout=10,
                          headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()["app_consents"]
    assert [(c["client_id"], c["app_name"], c["scopes"]) for c in listed] == [(client_id, "Expense helper", "iam.scim")]
    # A second sign-in needs no consent.
    again, _, _ = sign_in_as(workspace, ALICE, client_id, scope="iam.scim")
    assert "code" in answer_of(again)
    withdrawn = requests.delete(workspace.url(f"/api/2.0/deputy/app-consents/{client_id}"), timeout=10,
                                headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert refresh(workspace, tokens["refresh_token"], client_id).json()["error"] == "invalid_grant"
    assert me(workspace, tokens["access_token"]).status_code == 401


def test_the_bootstrap_admin_signs_in_with_a_password_when_no_provider_exists(tmp_path_factory):
    with running_deputy(tmp_path_factory) as server:
        ws = Workspace(server, None)
        too_short = ws.admin("PUT", "/api/2.0/deputy/local-password", json={"password": "short"})
        assert too_short.status_code == 400 and too_short.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert ws.admin("PUT", "/api/2.0/deputy/local-password",
                        json={"password": "correct horse battery"}).status_code == 200
        verifier, challenge = pkce()
        session = requests.Session()
        form = session.get(authorize_url(ws, challenge=challenge), allow_redirects=False, timeout=10)
        assert form.status_code == 200 and 'name="password"' in form.text
        request_id = form.text.split('name="request" value="')[1].split('"')[0]
        wrong = session.post(ws.url("/oidc/v1/login"), allow_redirects=False, timeout=10,
                             data={"request": request_id, "user_name": "admin", "password": "wrong password!"})
        assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
        right = session.post(ws.url("/oidc/v1/login"), allow_redirects=False, timeout=10,
                             data={"request": request_id, "user_name": "admin", "password": "correct horse battery"})
        tokens = redeem(ws, answer_of(right)["code"], verifier)
        assert tokens.status_code == 200, tokens.text
        assert me(ws, tokens.json()["access_token"]).json()["userName"] == "admin"
