"""`deputy login`: a person signs in to the CLI in the browser, through Deputy and the organisation's identity provider
(tests/idp), and later commands run as them from the token cache, refreshing (and rotating the refresh token) when
the access token expires; `deputy logout` forgets and revokes.

The CLI starts `$BROWSER <authorize URL>`; here that is a one-line script that hands the URL to the test, which then
plays the person's browser in-process with idp.sign_in (Deputy's authorization endpoint, the provider's login form,
Deputy's callback, and on to the CLI's loopback listener, whose page it checks).

What this relies on from the server (a `deputy serve` of its own: the identity provider it adds is workspace-wide):
- POST /api/2.0/deputy/identity-providers {issuer, client_id, client_secret, groups_claim} (admin): the provider
  people sign in with; its client's redirect URI is {host}/oidc/v1/callback.
- GET /oidc/.well-known/oauth-authorization-server: issuer, authorization_endpoint, token_endpoint.
- GET /oidc/v1/authorize (response_type=code, client_id=databricks-cli, a loopback redirect_uri on any port,
  scope=all-apis offline_access, state, S256 code_challenge): with one provider configured, a redirect to it; after
  the provider's login, /oidc/v1/callback redirects (no consent page for the trusted databricks-cli) to
  redirect_uri?code&state&iss; the user is created just in time, named by their verified email.
- POST /oidc/v1/token grant_type=authorization_code (code, redirect_uri, client_id, code_verifier) and
  grant_type=refresh_token (refresh_token, client_id): Bearer tokens, a refresh token for offline_access, rotated on
  every refresh; presenting a spent refresh token is invalid_grant and revokes the whole family, access tokens too.
- POST /oidc/v1/revoke token=<refresh token>&token_type_hint=refresh_token: revokes it (and its family).
- GET /api/2.0/preview/scim/v2/Me: the signed-in user.
"""

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, free_loopback_port, running_deputy
from idp import TestIdentityProvider, sign_in

ALICE = "alice@example.com"
ALICE_PASSWORD = "alice-pw"
IDP_CLIENT_ID = "deputy"
IDP_CLIENT_SECRET = "deputy-idp-secret"
CLI_CLIENT_ID = "databricks-cli"
LOGIN_TIMEOUT_SECONDS = 60


def deputy_binary() -> Path:
    binary = Path(os.environ.get("DEPUTY_BIN", "target/debug/deputy"))
    return binary if binary.is_absolute() else REPO_ROOT / binary


@pytest.fixture(scope="module")
def deputy(tmp_path_factory):
    """A `deputy serve` of its own whose sign-in goes to the test identity provider (with alice): its host."""
    port = free_loopback_port()
    clients = [{"client_id": IDP_CLIENT_ID, "client_secret": IDP_CLIENT_SECRET,
                "redirect_uris": [f"http://127.0.0.1:{port}/oidc/v1/callback"]}]
    accounts = [{"sub": "alice", "email": ALICE, "email_verified": True, "name": "Alice", "groups": ["analysts"],
                 "password": ALICE_PASSWORD}]
    with TestIdentityProvider(clients=clients, accounts=accounts) as idp:
        with running_deputy(tmp_path_factory, port) as server:
            added = requests.post(
                server.url("/api/2.0/deputy/identity-providers"), timeout=10,
                headers={"Authorization": f"Bearer {server.admin_token}"},
                json={"issuer": idp.issuer, "client_id": IDP_CLIENT_ID, "client_secret": IDP_CLIENT_SECRET,
                      "groups_claim": "groups"})
            assert added.status_code == 200, added.text
            yield server.host


def cli_environment(tmp_path, cache_path=None) -> dict:
    """The CLI's environment: no Databricks settings, HOME in `tmp_path`, and a `$BROWSER` that writes the URL it
    is given to `tmp_path/browser-url` (see `login`)."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("DEPUTY_", "DATABRICKS_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    browser = tmp_path / "browser"
    url_file = tmp_path / "browser-url"
    browser.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > '{url_file}.tmp' && mv '{url_file}.tmp' '{url_file}'\n")
    browser.chmod(0o755)
    environment.update(HOME=str(home), DATABRICKS_CONFIG_FILE="/nonexistent", BROWSER=str(browser))
    if cache_path is not None:
        environment["DEPUTY_TOKEN_CACHE"] = str(cache_path)
    return environment


def deputy_cli(environment, *arguments, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(deputy_binary()), *arguments], env=environment, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def login(host, environment, tmp_path) -> requests.Response:
    """Runs `deputy login` and, once it has opened the "browser", signs alice in there; returns the page the
    browser ends on (the CLI's)."""
    url_file = tmp_path / "browser-url"
    url_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [str(deputy_binary()), "login", "--host", host, "--timeout-seconds", str(LOGIN_TIMEOUT_SECONDS)],
        env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert url_file.exists(), f"deputy login opened no browser: {process.poll()}"
        url = url_file.read_text()
        assert url.startswith(f"{host}/oidc/v1/authorize?"), url
        page = sign_in(requests.Session(), url, ALICE, ALICE_PASSWORD)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, (stdout, stderr, page.status_code, page.text)
    assert f"Signed in to {host} as {ALICE}" in stdout, (stdout, stderr)
    # The authorization URL went to the terminal too, for when no browser opens.
    assert url in stderr, stderr
    return page


def entry_of(cache_path, host) -> dict:
    return json.loads(cache_path.read_text())["tokens"].get(host)


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def me(host, environment) -> subprocess.CompletedProcess:
    return deputy_cli(environment, "users", "me", "--host", host, "--output", "json")


def expire(cache_path, host):
    cache = json.loads(cache_path.read_text())
    cache["tokens"][host]["expiry"] = int(time.time()) - 10
    cache_path.write_text(json.dumps(cache))  # rewrites in place: the mode stays 0600


def present_refresh_token(host, refresh_token) -> requests.Response:
    return requests.post(f"{host}/oidc/v1/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLI_CLIENT_ID})


def test_login_caches_tokens_that_commands_run_as_the_person_with(deputy, tmp_path):
    host = deputy
    environment = cli_environment(tmp_path)
    page = login(host, environment, tmp_path)
    assert page.status_code == 200 and page.url.startswith("http://127.0.0.1:"), (page.status_code, page.url)
    assert f"signed in to Deputy as {ALICE}" in page.text, page.text

    # The default cache: $HOME/.deputy/token-cache.json, only the person can read it.
    cache_path = Path(environment["HOME"]) / ".deputy" / "token-cache.json"
    assert mode_of(cache_path) == 0o600
    assert mode_of(cache_path.parent) == 0o700
    entry = entry_of(cache_path, host)
    assert entry is not None, cache_path.read_text()
    assert entry["client_id"] == CLI_CLIENT_ID
    assert entry["access_token"] and entry["refresh_token"]
    assert "all-apis" in entry["scope"].split()
    assert entry["expiry"] > time.time() + 60
    assert [path.name for path in cache_path.parent.iterdir()] == ["token-cache.json"]

    # Without DATABRICKS_TOKEN, commands use the cached sign-in.
    assert "DATABRICKS_TOKEN" not in environment
    result = me(host, environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["userName"] == ALICE
    # The tokens never reach the terminal.
    for shown in (result.stdout, result.stderr):
        assert entry["access_token"] not in shown and entry["refresh_token"] not in shown


def test_an_expired_access_token_is_refreshed_and_the_refresh_token_rotates(deputy, tmp_path):
    host = deputy
    cache_path = tmp_path / "elsewhere" / "cache.json"
    environment = cli_environment(tmp_path, cache_path=cache_path)
    login(host, environment, tmp_path)
    assert mode_of(cache_path) == 0o600
    before = entry_of(cache_path, host)

    expire(cache_path, host)
    result = me(host, environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["userName"] == ALICE
    after = entry_of(cache_path, host)
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] != before["access_token"]
    assert after["expiry"] > time.time() + 60
    assert mode_of(cache_path) == 0o600

    # The fresh token is used as is: no second refresh.
    result = me(host, environment)
    assert result.returncode == 0, result.stderr
    assert entry_of(cache_path, host) == after

    # The old refresh token is spent: presenting it again is refused and ends the whole sign-in, so the CLI's
    # rotated tokens stop working too, and the CLI says how to sign in again.
    reuse = present_refresh_token(host, before["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text
    revoked = requests.get(f"{host}/api/2.0/preview/scim/v2/Me", timeout=10,
                           headers={"Authorization": f"Bearer {after['access_token']}"})
    assert revoked.status_code == 401, revoked.text
    expire(cache_path, host)
    result = me(host, environment)
    assert result.returncode != 0
    assert f"deputy login --host {host}" in result.stderr, result.stderr


def test_logout_forgets_and_revokes_the_sign_in(deputy, tmp_path):
    host = deputy
    cache_path = tmp_path / "cache.json"
    environment = cli_environment(tmp_path, cache_path=cache_path)
    login(host, environment, tmp_path)
    entry = entry_of(cache_path, host)

    result = deputy_cli(environment, "logout", "--host", host)
    assert result.returncode == 0, result.stderr
    assert f"Signed out of {host}" in result.stdout
    assert entry_of(cache_path, host) is None
    assert mode_of(cache_path) == 0o600
    refused = present_refresh_token(host, entry["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text

    # Signed out, a command names the ways to authenticate, `deputy login` among them.
    result = me(host, environment)
    assert result.returncode != 0
    assert "deputy login" in result.stderr, result.stderr
    # Signing out twice is not an error.
    result = deputy_cli(environment, "logout", "--host", host)
    assert result.returncode == 0 and f"Not signed in to {host}" in result.stdout, result
