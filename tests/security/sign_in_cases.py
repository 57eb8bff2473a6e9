"""The `sign-in` category of the attack suite (loaded by `run.py`): people signing in through `/oidc/v1/authorize`.

Attacks on the authorization code grant (replay, PKCE downgrade and mismatch, redirect-URI tricks), the browser
binding of a sign-in (login CSRF, lost `state`), refresh-token reuse, the upstream provider's answer (mix-up, forged
ID tokens served by a hostile provider on loopback), and stored sign-in data that does not parse.

Order matters: the cases that need a workspace without an identity provider (the bootstrap admin's password form,
the simplest way to get real codes) come first. Every case that needs a provider starts its own `HostileProvider`,
registers it, and removes it and stops it on the way out, so no provider outlives the case; the last case checks
that none is left.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid

import requests

from harness import Reply, b64json, b64url
from run import (
    GRANT_EXCHANGE, TT_ACCESS, Fail, case, check, expect_api_error, expect_oauth_error, expect_ok,
)

SIGN_IN = "sign-in"
APP = "http://127.0.0.1:9/"
CLI = "databricks-cli"
STATE = "st4te-" + uuid.uuid4().hex[:8]
PASSWORD = "sign-in-attack-" + uuid.uuid4().hex
TIMEOUT = 10


# ---- helpers ---------------------------------------------------------------------------------------------------------

def _pkce():
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def _authorize_url(ctx, challenge=None, client_id=CLI, redirect_uri=APP, scope="all-apis offline_access",
                   method="S256", state=STATE, **extra) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
              "state": state, "code_challenge": challenge, "code_challenge_method": method, **extra}
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return f"{ctx.server.host}/oidc/v1/authorize?{query}"


def _get(browser, url):
    return browser.get(url, allow_redirects=False, timeout=TIMEOUT)


def _post(browser, url, data):
    return browser.post(url, data=data, allow_redirects=False, timeout=TIMEOUT)


def _show(response) -> str:
    return (f"{response.status_code} Location={response.headers.get('Location')!r} "
            f"error={_page_field(response, 'error')!r} "
            f"description={_page_field(response, 'error_description')!r} body={response.text[:200]!r}")


def _page_field(response, field):
    found = re.search(rf'<dd id="{field}">(.*?)</dd>', response.text, re.S)
    return html.unescape(found.group(1)) if found else None


def _expect_page(response, error, phrase, status=400):
    """An error page shown to the person: never a redirect, the OAuth error in `<dd id="error">`."""
    check(response.status_code == status
          and "location" not in {k.lower() for k in response.headers}
          and _page_field(response, "error") == error
          and phrase.lower() in (_page_field(response, "error_description") or "").lower(),
          f"expected a {status} page with {error} containing {phrase!r}, got {_show(response)}")


def _app_answer(response, redirect_uri=APP) -> dict:
    """The query of a redirect back to the app."""
    location = response.headers.get("Location", "")
    check(response.status_code == 303 and location.startswith(redirect_uri),
          f"expected a 303 back to {redirect_uri}, got {_show(response)}")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(location).query))


def _issuer(ctx) -> str:
    if not hasattr(ctx, "_sign_in_issuer"):
        metadata = expect_ok(ctx.api.get("/oidc/.well-known/oauth-authorization-server", timeout=TIMEOUT), "metadata")
        ctx._sign_in_issuer = metadata["issuer"]
    return ctx._sign_in_issuer


def _expect_app_error(ctx, response, error, phrase, redirect_uri=APP, state=STATE):
    """A refusal sent back to the app: `error`, the description, the app's `state`, Deputy's `iss`, and no code."""
    answer = _app_answer(response, redirect_uri)
    check(answer.get("error") == error and phrase.lower() in answer.get("error_description", "").lower()
          and "code" not in answer and answer.get("state") == state and answer.get("iss") == _issuer(ctx),
          f"expected error={error} containing {phrase!r} with state and iss and no code, got {answer}")
    return answer


def _token(ctx, fields: dict, headers=None) -> Reply:
    return Reply(requests.post(f"{ctx.server.host}/oidc/v1/token", data=fields, headers=headers or {},
                               timeout=TIMEOUT))


def _redeem(ctx, code, verifier, client_id=CLI, redirect_uri=APP) -> Reply:
    return _token(ctx, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                        "client_id": client_id, "code_verifier": verifier})


def _refresh(ctx, token, client_id=CLI) -> Reply:
    return _token(ctx, {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})


def _me(ctx, token) -> Reply:
    return ctx.api.get("/api/2.0/preview/scim/v2/Me", token, timeout=TIMEOUT)


def _nothing_issued(reply: Reply) -> None:
    check("access_token" not in reply.text and "refresh_token" not in reply.text,
          f"a refused grant still carries tokens: {reply!r}")


def _revoked(ctx, token) -> None:
    expect_api_error(_me(ctx, token), 401, "UNAUTHENTICATED", "revoked")


def _users_named(ctx, user_name) -> int:
    found = expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Users", ctx.admin, timeout=TIMEOUT,
                                  params={"filter": f'userName eq "{user_name}"'}), "SCIM user search")
    return found["totalResults"]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _account(ctx) -> str:
    return expect_ok(ctx.api.get("/.well-known/databricks-config", timeout=TIMEOUT), "config")["workspace_id"]


def _register_app(ctx, redirect_urls, scopes=None, confidential=False) -> dict:
    body = {"name": f"sign-in attack app {uuid.uuid4().hex[:6]}", "redirect_urls": redirect_urls,
            "confidential": confidential}
    if scopes is not None:
        body["scopes"] = scopes
    return expect_ok(ctx.api.post(f"/api/2.0/accounts/{_account(ctx)}/oauth2/custom-app-integrations", ctx.admin,
                                  body, timeout=TIMEOUT), "register an OAuth app")


# ---- the bootstrap admin's password flow (no identity provider) -------------------------------------------------

def _password(ctx) -> str:
    if not getattr(ctx, "_sign_in_password", None):
        expect_ok(ctx.api.put("/api/2.0/deputy/local-password", ctx.admin, {"password": PASSWORD}, timeout=TIMEOUT),
                  "set the bootstrap admin's password")
        ctx._sign_in_password = PASSWORD
    return ctx._sign_in_password


def _password_form(ctx, browser, **authorize):
    """Opens the authorization request in `browser`; returns (request id, verifier)."""
    verifier, challenge = _pkce()
    form = _get(browser, _authorize_url(ctx, challenge, **authorize))
    check(form.status_code == 200 and 'name="password"' in form.text,
          f"expected the password form (is an identity provider left configured?), got {_show(form)}")
    request_id = re.search(r'name="request" value="([^"]+)"', form.text).group(1)
    return html.unescape(request_id), verifier


def _local_login(ctx, browser, request_id, password=None):
    return _post(browser, f"{ctx.server.host}/oidc/v1/login",
                 {"request": request_id, "user_name": "admin", "password": password or _password(ctx)})


def _local_code(ctx, **authorize):
    """A real code for the bootstrap admin through the password form; returns (code, verifier)."""
    browser = requests.Session()
    request_id, verifier = _password_form(ctx, browser, **authorize)
    answer = _app_answer(_local_login(ctx, browser, request_id), authorize.get("redirect_uri", APP))
    check("code" in answer and answer.get("state") == STATE and answer.get("iss") == _issuer(ctx),
          f"no code for a correct password: {answer}")
    return answer["code"], verifier


def _local_tokens(ctx, **authorize) -> dict:
    code, verifier = _local_code(ctx, **authorize)
    return expect_ok(_redeem(ctx, code, verifier, authorize.get("client_id", CLI), authorize.get("redirect_uri", APP)),
                     "redeem the code")


@case(SIGN_IN, "control: the bootstrap admin signs in with the password; the code gives working tokens")
def _(ctx):
    tokens = _local_tokens(ctx)
    check(tokens.get("refresh_token", "").startswith("dort") and tokens.get("token_type") == "Bearer",
          f"token response {tokens}")
    check(expect_ok(_me(ctx, tokens["access_token"]), "Me")["userName"] == "admin", "signed in as someone else")
    expect_ok(_refresh(ctx, tokens["refresh_token"]), "refresh")


@case(SIGN_IN, "a wrong password shows the form again (401), no code")
def _(ctx):
    browser = requests.Session()
    request_id, _ = _password_form(ctx, browser)
    for user, password in [("admin", "wrong-password-123"), ("alice@example.com", _password(ctx)),
                           ("admin", _password(ctx).upper())]:
        wrong = _post(browser, f"{ctx.server.host}/oidc/v1/login",
                      {"request": request_id, "user_name": user, "password": password})
        check(wrong.status_code == 401 and "location" not in {k.lower() for k in wrong.headers}
              and "wrong user name or password" in wrong.text, f"{user}: {_show(wrong)}")


@case(SIGN_IN, "authorization code replayed: invalid_grant, and the first redemption's tokens are revoked")
def _(ctx):
    code, verifier = _local_code(ctx)
    first = expect_ok(_redeem(ctx, code, verifier), "first redemption")
    expect_ok(_me(ctx, first["access_token"]), "the first access token works")
    replay = _redeem(ctx, code, verifier)
    expect_oauth_error(replay, 400, "invalid_grant", "authorization code was already used")
    _nothing_issued(replay)
    _revoked(ctx, first["access_token"])
    expect_oauth_error(_refresh(ctx, first["refresh_token"]), 400, "invalid_grant", "this sign-in has been revoked")
    expect_oauth_error(_redeem(ctx, code, verifier), 400, "invalid_grant", "already used")


@case(SIGN_IN, "PKCE downgrade at authorize (plain, none, malformed S256) -> back to the app with invalid_request")
def _(ctx):
    verifier, challenge = _pkce()
    browser = requests.Session()
    for label, url, phrase in [
        ("plain", _authorize_url(ctx, verifier, method="plain"), "PKCE is required"),
        ("no challenge, no method", _authorize_url(ctx, None, method=None), "PKCE is required"),
        ("S256 named, no challenge", _authorize_url(ctx, None), "must be a base64url SHA-256"),
        ("challenge without method", _authorize_url(ctx, challenge, method=None), "PKCE is required"),
        ("S256 with the verifier as challenge", _authorize_url(ctx, verifier), "must be a base64url SHA-256"),
        ("lower-case s256", _authorize_url(ctx, challenge, method="s256"), "PKCE is required"),
    ]:
        try:
            _expect_app_error(ctx, _get(browser, url), "invalid_request", phrase)
        except Fail as failure:
            raise Fail(f"{label}: {failure}") from None
    check(not browser.cookies.get("deputy_sign_in"), "a refused request still bound a sign-in to the browser")


@case(SIGN_IN, "wrong code_verifier -> invalid_grant; the code is then burnt (a correct redemption is a replay)")
def _(ctx):
    code, verifier = _local_code(ctx)
    other, _ = _pkce()
    wrong = _redeem(ctx, code, other)
    expect_oauth_error(wrong, 400, "invalid_grant", "`code_verifier` does not match the code challenge")
    _nothing_issued(wrong)
    # The failed redemption counted as the code's one presentation: the legitimate holder now replays it.
    late = _redeem(ctx, code, verifier)
    expect_oauth_error(late, 400, "invalid_grant", "authorization code was already used")
    _nothing_issued(late)


@case(SIGN_IN, "token endpoint: no verifier, the challenge as verifier (plain), a verifier too short")
def _(ctx):
    for label, make in [("no verifier", lambda v, c: None), ("plain (challenge as verifier)", lambda v, c: c),
                        ("42-character prefix of the verifier", lambda v, c: v[:42])]:
        code, verifier = _local_code(ctx)
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP, "client_id": CLI}
        presented = make(verifier, challenge)
        if presented is not None:
            fields["code_verifier"] = presented
        reply = _token(ctx, fields)
        try:
            expect_oauth_error(reply, 400, "invalid_grant", "`code_verifier` does not match")
        except Fail as failure:
            raise Fail(f"{label}: {failure}") from None
        _nothing_issued(reply)


@case(SIGN_IN, "a code redeemed with another redirect_uri, by another app, or unknown -> refused")
def _(ctx):
    code, verifier = _local_code(ctx)
    reply = _redeem(ctx, code, verifier, redirect_uri="http://127.0.0.1:10/")
    expect_oauth_error(reply, 400, "invalid_grant", "`redirect_uri` is not the one of the authorization request")
    _nothing_issued(reply)
    other = _register_app(ctx, [APP])
    code, verifier = _local_code(ctx)
    reply = _redeem(ctx, code, verifier, client_id=other["client_id"])
    expect_oauth_error(reply, 400, "invalid_grant", "the code was issued to another app")
    _nothing_issued(reply)
    expect_oauth_error(_redeem(ctx, "doac_" + "A" * 40, verifier), 400, "invalid_grant", "unknown authorization code")
    expect_oauth_error(_redeem(ctx, code, verifier, client_id="no-such-app"), 401, "invalid_client",
                       "client authentication failed")


def _web_app(ctx) -> str:
    """A public app registered with one https redirect URI on a non-loopback host."""
    if not hasattr(ctx, "_sign_in_web_app"):
        ctx._sign_in_web_app = _register_app(ctx, ["https://app.example.com/cb"])["client_id"]
    return ctx._sign_in_web_app


@case(SIGN_IN, "redirect-URI tricks (prefix, port, fragment, open redirect, userinfo, look-alike host) -> 400 page")
def _(ctx):
    _, challenge = _pkce()
    web = _web_app(ctx)
    failures = []
    attempts = [
        (CLI, "http://127.0.0.1:9/evil"),                  # path beyond the registered `/`
        (CLI, "http://127.0.0.1:9/#frag"),                 # fragment
        (CLI, "https://evil.example/"),                    # open redirect
        (CLI, "http://evil@127.0.0.1:9/"),                 # userinfo
        (CLI, "http://evil:pw@127.0.0.1:9/"),
        (CLI, "http://localhost.evil.example:9/"),         # look-alike host
        (CLI, "http://127.0.0.1.evil.example/"),
        (CLI, "http://127.0.0.2:9/"),                      # another loopback address than registered
        (CLI, "https://127.0.0.1:9/"),                     # another scheme
        (CLI, "http://127.0.0.1:9/?next=https://evil.example"),
        (CLI, "http://127.0.0.1:9\\@evil.example/"),
        (CLI, "http://evil.example\\@127.0.0.1:9/"),
        (CLI, "http://localhost:8020/other"),
        (CLI, "//evil.example/"),
        (CLI, "javascript:alert(1)"),
        (web, "https://app.example.com:8443/cb"),          # another port on a non-loopback host
        (web, "https://app.example.com/cb/extra"),
        (web, "https://app.example.com/cb#x"),
        (web, "https://app.example.com/cb?next=https://evil.example"),
        (web, "https://app.example.com.evil.example/cb"),
        (web, "http://app.example.com/cb"),
        (web, "https://app.example.com/c"),
        (web, "http://127.0.0.1:9/"),                      # the CLI's loopback URI is not this app's
    ]
    browser = requests.Session()
    for client_id, uri in attempts:
        response = _get(browser, _authorize_url(ctx, challenge, client_id=client_id, redirect_uri=uri))
        try:
            _expect_page(response, "invalid_request", "is not a redirect uri of this app")
        except Fail as failure:
            failures.append(f"{client_id} {uri!r}: {failure}")
    check(not failures, "\n    ".join(failures))
    check(not browser.cookies.get("deputy_sign_in"), "a refused request still bound a sign-in to the browser")


@case(SIGN_IN, "unknown client, missing or duplicated redirect_uri -> 400 page, never a redirect")
def _(ctx):
    _, challenge = _pkce()
    _expect_page(_get(requests, _authorize_url(ctx, challenge, client_id="evil-app")), "invalid_client",
                 "no app has client id `evil-app`")
    _expect_page(_get(requests, _authorize_url(ctx, challenge, redirect_uri=None)), "invalid_request",
                 "missing `redirect_uri`")
    _expect_page(_get(requests, _authorize_url(ctx, challenge, client_id=None)), "invalid_request",
                 "missing `client_id`")
    duplicated = _authorize_url(ctx, challenge) + "&" + urllib.parse.urlencode({"redirect_uri": "https://evil.example/"})
    _expect_page(_get(requests, duplicated), "invalid_request", "duplicate field")


@case(SIGN_IN, "login CSRF: the password form posted without the browser's cookie, or with another's -> 400 page")
def _(ctx):
    victim = requests.Session()
    request_id, verifier = _password_form(ctx, victim)
    # No cookie at all.
    _expect_page(_local_login(ctx, requests.Session(), request_id), "invalid_request",
                 "this sign-in was started in another browser")
    # The attacker's own (valid) sign-in cookie, with the victim's request.
    attacker = requests.Session()
    _password_form(ctx, attacker)
    _expect_page(_local_login(ctx, attacker, request_id), "invalid_request", "started in another browser")
    # A forged cookie.
    forged = requests.Session()
    forged.cookies.set("deputy_sign_in", "dsib_" + "A" * 40)
    _expect_page(_local_login(ctx, forged, request_id), "invalid_request", "started in another browser")
    # The request still belongs to the browser that started it.
    answer = _app_answer(_local_login(ctx, victim, request_id))
    expect_ok(_redeem(ctx, answer["code"], verifier), "the victim's own sign-in")
    # And is finished: its request id cannot be used again, even by that browser.
    _expect_page(_local_login(ctx, victim, request_id), "invalid_request", "does not exist or has expired")


@case(SIGN_IN, "refresh token reused after rotation: invalid_grant, the rotated one too, access tokens 401")
def _(ctx):
    first = _local_tokens(ctx)
    exchanged = expect_ok(_token(ctx, {"grant_type": GRANT_EXCHANGE, "subject_token": first["access_token"],
                                       "subject_token_type": TT_ACCESS, "scope": "iam.scim"}), "exchange")
    second = expect_ok(_refresh(ctx, first["refresh_token"]), "rotate")
    check(second["refresh_token"] != first["refresh_token"], "the refresh token did not rotate")
    expect_ok(_me(ctx, second["access_token"]), "the rotated access token works")
    reused = _refresh(ctx, first["refresh_token"])
    expect_oauth_error(reused, 400, "invalid_grant", "the refresh token was already used")
    _nothing_issued(reused)
    rotated = _refresh(ctx, second["refresh_token"])
    expect_oauth_error(rotated, 400, "invalid_grant", "this sign-in has been revoked")
    _nothing_issued(rotated)
    for token in (first["access_token"], second["access_token"], exchanged["access_token"]):
        _revoked(ctx, token)


@case(SIGN_IN, "refresh token of another app, unknown, or asking for wider scopes -> refused")
def _(ctx):
    narrow = _local_tokens(ctx, scope="sql offline_access")
    other = _register_app(ctx, [APP])
    expect_oauth_error(_refresh(ctx, narrow["refresh_token"], client_id=other["client_id"]), 400, "invalid_grant",
                       "issued to another app")
    # That presentation spent the token: the family is now revoked on the next use.
    expect_oauth_error(_refresh(ctx, narrow["refresh_token"]), 400, "invalid_grant", "already used")
    narrow = _local_tokens(ctx, scope="sql offline_access")
    wider = _token(ctx, {"grant_type": "refresh_token", "refresh_token": narrow["refresh_token"], "client_id": CLI,
                         "scope": "all-apis"})
    expect_oauth_error(wider, 400, "invalid_scope", "this sign-in granted at most")
    _nothing_issued(wider)
    expect_oauth_error(_refresh(ctx, "dort_" + "A" * 40), 400, "invalid_grant", "unknown refresh token")


# ---- stored sign-in data that does not parse (still no provider) -------------------------------------------------

@case(SIGN_IN, "fail closed: an app whose stored redirect_uris do not parse -> 500 page, never a redirect")
def _(ctx):
    app = _register_app(ctx, [APP])["client_id"]
    ctx.server.sql("UPDATE oauth_apps SET redirect_uris = ? WHERE client_id = ?", ('["http://127.0.0.1:9/"', app))
    _, challenge = _pkce()
    _expect_page(_get(requests, _authorize_url(ctx, challenge, client_id=app)), "server_error", "", status=500)
    ctx.server.sql("UPDATE oauth_apps SET redirect_uris = ? WHERE client_id = ?", ('"http://127.0.0.1:9/"', app))
    _expect_page(_get(requests, _authorize_url(ctx, challenge, client_id=app)), "server_error", "", status=500)
    ctx.server.sql("DELETE FROM oauth_apps WHERE client_id = ?", (app,))


@case(SIGN_IN, "fail closed: a refresh token whose family row is missing -> server_error, nothing issued")
def _(ctx):
    tokens = _local_tokens(ctx)
    family = ctx.server.sql("SELECT family_id FROM refresh_tokens WHERE token_hash = ?",
                            (_hash(tokens["refresh_token"]),))
    check(family, "the refresh token is not stored under its SHA-256")
    [saved] = ctx.server.sql("DELETE FROM sign_in_families WHERE family_id = ? RETURNING *", family[0])
    try:
        reply = _refresh(ctx, tokens["refresh_token"])
        expect_oauth_error(reply, 500, "server_error", "")
        _nothing_issued(reply)
    finally:
        ctx.server.sql("INSERT INTO sign_in_families VALUES (?, ?, ?, ?, ?)", saved)


@case(SIGN_IN, "fail closed: a refresh token whose stored scopes do not parse -> server_error, nothing issued")
def _(ctx):
    tokens = _local_tokens(ctx, scope="sql offline_access")
    changed = ctx.server.sql("UPDATE refresh_tokens SET scopes = ? WHERE token_hash = ? RETURNING token_hash",
                             ("sql superuser", _hash(tokens["refresh_token"])))
    check(len(changed) == 1, "the refresh token is not stored under its SHA-256")
    reply = _refresh(ctx, tokens["refresh_token"])
    expect_oauth_error(reply, 500, "server_error", "")
    _nothing_issued(reply)


@case(SIGN_IN, "fail closed: a stored consent that does not parse approves nothing (the consent page again)")
def _(ctx):
    app = _register_app(ctx, [APP], scopes=["sql"])["client_id"]
    browser = requests.Session()
    request_id, verifier = _password_form(ctx, browser, client_id=app, scope="sql")
    consent = _local_login(ctx, browser, request_id)
    check(consent.status_code == 200 and 'name="decision"' in consent.text, f"consent page: {_show(consent)}")
    approved = _post(browser, f"{ctx.server.host}/oidc/v1/consent", {"request": request_id, "decision": "approve"})
    expect_ok(_redeem(ctx, _app_answer(approved)["code"], verifier, client_id=app), "approved sign-in")
    changed = ctx.server.sql("UPDATE app_consents SET scopes = ? WHERE client_id = ? RETURNING user_id",
                             ("sql ????", app))
    check(len(changed) == 1, "the consent is stored")
    browser = requests.Session()
    request_id, _ = _password_form(ctx, browser, client_id=app, scope="sql")
    again = _local_login(ctx, browser, request_id)
    check(again.status_code == 200 and 'name="decision"' in again.text
          and "location" not in {k.lower() for k in again.headers},
          f"a consent that does not parse approved the app: {_show(again)}")


@case(SIGN_IN, "fail closed: a stored password hash that is not a PHC string (or is the password itself) matches nothing")
def _(ctx):
    password = _password(ctx)
    original = ctx.server.sql("SELECT user_id, password_hash FROM local_passwords")
    check(len(original) == 1, f"one local password is stored: {len(original)}")
    user_id = original[0][0]
    try:
        for stored in ["not a phc string", password, "", "$argon2id$v=19$m=19456,t=2,p=1$", "$plain$" + password]:
            ctx.server.sql("UPDATE local_passwords SET password_hash = ? WHERE user_id = ?", (stored, user_id))
            browser = requests.Session()
            request_id, _ = _password_form(ctx, browser)
            refused = _local_login(ctx, browser, request_id, password=password)
            check(refused.status_code == 401 and "location" not in {k.lower() for k in refused.headers}
                  and "wrong user name or password" in refused.text,
                  f"stored hash {stored!r}: {_show(refused)}")
    finally:
        ctx.server.sql("UPDATE local_passwords SET password_hash = ? WHERE user_id = ?", (original[0][1], user_id))
    _local_code(ctx)  # the restored hash works again


@case(SIGN_IN, "password guessing: after 10 wrong passwords in 15 minutes even the right one is refused, no code")
def _(ctx):
    # Runs after every case that signs in with the password: the lock lasts for the rest of this server's run.
    browser = requests.Session()
    request_id, _ = _password_form(ctx, browser)
    locked = None
    for attempt in range(12):
        locked = _local_login(ctx, browser, request_id, password=f"guess-number-{attempt:04d}")
        check(locked.status_code == 401 and "location" not in {k.lower() for k in locked.headers}, _show(locked))
        if "too many wrong passwords" in locked.text:
            break
    check("too many wrong passwords" in locked.text, f"12 wrong passwords and no lock: {_show(locked)}")
    right = _local_login(ctx, browser, request_id)
    check(right.status_code == 401 and "too many wrong passwords" in right.text
          and "location" not in {k.lower() for k in right.headers}, f"the right password got through: {_show(right)}")


# ---- a hostile identity provider on loopback ----------------------------------------------------------------------

REFUSE = object()  # what `mint` returns to make the provider's token endpoint refuse the code


class HostileProvider:
    """An OpenID provider on loopback that the suite controls: discovery, a key set, an authorization endpoint that
    sends the browser straight back to Deputy's callback with a code and the `state` it got, and a token endpoint
    answering whatever ID token the case mints (`self.mint(login)`, a correctly signed one by default).

    As a context manager it is registered as the workspace's only identity provider and removed (and stopped) on
    the way out."""

    CLIENT_ID = "deputy-at-hostile"

    def __init__(self, ctx):
        import http.server

        from cryptography.hazmat.primitives.asymmetric import rsa

        self.ctx = ctx
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "hostile-" + uuid.uuid4().hex[:8]
        self.secret = "hostile-secret-" + uuid.uuid4().hex
        self.email = f"signin-{uuid.uuid4().hex[:10]}@example.com"
        self.logins: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        self.mint = None
        self.callback_iss = None  # None: its own issuer URL
        provider = self
        # A path of its own makes the issuer unique even if the port is reused, so Deputy's cache of an earlier
        # provider's key set can never stand in for this one's.
        prefix = "/" + uuid.uuid4().hex[:12]

        class Handler(http.server.BaseHTTPRequestHandler):
            def _json(self, status, value):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _path(self):
                """The path below the issuer's own prefix (None when outside it), and the query."""
                path, _, query = self.path.partition("?")
                return (path[len(prefix):] if path.startswith(prefix + "/") else None), query

            def do_GET(self):
                path, query = self._path()
                if path == "/.well-known/openid-configuration":
                    return self._json(200, {"issuer": provider.url, "jwks_uri": f"{provider.url}/jwks",
                                            "authorization_endpoint": f"{provider.url}/authorize",
                                            "token_endpoint": f"{provider.url}/token"})
                if path == "/jwks":
                    return self._json(200, {"keys": [provider.jwk()]})
                if path == "/authorize":
                    login = dict(urllib.parse.parse_qsl(query))
                    code = "upstream-" + secrets.token_urlsafe(16)
                    provider.logins[code] = login
                    back = {"code": code, "state": login.get("state", ""),
                            "iss": provider.callback_iss or provider.url}
                    self.send_response(302)
                    self.send_header("Location", f"{login.get('redirect_uri', '')}?{urllib.parse.urlencode(back)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._json(404, {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                provider.token_requests.append({"authorization": self.headers.get("Authorization"), **form})
                login = provider.logins.get(form.get("code", ""))
                if self._path()[0] != "/token" or login is None:
                    return self._json(400, {"error": "invalid_grant"})
                id_token = (provider.mint or provider.good_token)(login)
                if id_token is REFUSE:
                    return self._json(400, {"error": "invalid_grant", "error_description": "hostile refusal"})
                self._json(200, {"access_token": "upstream-access", "token_type": "Bearer", "id_token": id_token})

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        try:
            expect_ok(self.ctx.api.post("/api/2.0/deputy/identity-providers", self.ctx.admin,
                                        {"issuer": self.url, "client_id": self.CLIENT_ID,
                                         "client_secret": self.secret}, timeout=TIMEOUT),
                      "add the loopback identity provider")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind, *_):
        try:
            removed = self.ctx.api.delete("/api/2.0/deputy/identity-providers", self.ctx.admin,
                                          params={"issuer": self.url}, timeout=TIMEOUT)
        finally:
            self.stop()
        if kind is None:
            expect_ok(removed, "remove the loopback identity provider")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda value: value.to_bytes((value.bit_length() + 7) // 8, "big")  # noqa: E731
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}

    def claims(self, login, **changes) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.CLIENT_ID, "sub": "hostile-" + self.email, "email": self.email,
                  "email_verified": True, "nonce": login.get("nonce"), "iat": now, "exp": now + 300}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims, header=None, key=None) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        message = f"{b64json(header or {'alg': 'RS256', 'typ': 'JWT', 'kid': self.kid})}.{b64json(claims)}"
        signature = (key or self.key).sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{message}.{b64url(signature)}"

    def good_token(self, login) -> str:
        return self.sign(self.claims(login))


def _to_provider(ctx, idp, browser):
    """Opens an authorization request in `browser`; returns (Deputy's redirect to the provider's authorization
    endpoint, as a URL; the verifier)."""
    verifier, challenge = _pkce()
    response = _get(browser, _authorize_url(ctx, challenge))
    location = response.headers.get("Location", "")
    check(response.status_code == 303 and location.startswith(f"{idp.url}/authorize?"),
          f"expected a redirect to the provider, got {_show(response)}")
    return location, verifier


def _upstream_sign_in(ctx, idp, browser=None):
    """The whole browser round trip through the provider; returns (Deputy's answer to the callback, verifier)."""
    browser = browser or requests.Session()
    to_provider, verifier = _to_provider(ctx, idp, browser)
    back = _get(browser, to_provider)
    check(back.status_code == 302 and back.headers["Location"].startswith(f"{ctx.server.host}/oidc/v1/callback?"),
          f"the provider did not send the browser back: {back.status_code} {back.headers.get('Location')}")
    return _get(browser, back.headers["Location"]), verifier


@case(SIGN_IN, "control: the loopback provider's correctly signed ID token signs the person in")
def _(ctx):
    with HostileProvider(ctx) as idp:
        check(_users_named(ctx, idp.email) == 0, "the user exists beforehand")
        reply, verifier = _upstream_sign_in(ctx, idp)
        answer = _app_answer(reply)
        check("code" in answer and "error" not in answer and answer.get("state") == STATE
              and answer.get("iss") == _issuer(ctx), f"no code: {answer}")
        # What Deputy sent the provider: its client credentials (HTTP Basic), the callback, the PKCE verifier of
        # the challenge it sent to the authorization endpoint.
        check(len(idp.token_requests) == 1, f"token requests {idp.token_requests}")
        sent = idp.token_requests[0]
        login = idp.logins[sent["code"]]
        basic = base64.b64encode(f"{idp.CLIENT_ID}:{idp.secret}".encode()).decode()
        check(sent["authorization"] == f"Basic {basic}", f"client authentication {sent['authorization']!r}")
        check(sent.get("redirect_uri") == f"{ctx.server.host}/oidc/v1/callback" == login.get("redirect_uri"),
              f"redirect_uri {sent.get('redirect_uri')} / {login.get('redirect_uri')}")
        check(login.get("code_challenge_method") == "S256"
              and b64url(hashlib.sha256(sent.get("code_verifier", "").encode()).digest()) == login.get("code_challenge"),
              "the upstream PKCE verifier does not match the challenge")
        check(login.get("nonce") and login.get("client_id") == idp.CLIENT_ID, f"authorization request {login}")
        tokens = expect_ok(_redeem(ctx, answer["code"], verifier), "redeem")
        check(expect_ok(_me(ctx, tokens["access_token"]), "Me")["userName"] == idp.email, "signed in as another")
        check(_users_named(ctx, idp.email) == 1, "the user was not provisioned")


def _stranger_key():
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _hs256_with_public_key(idp, login):
    import hmac

    from cryptography.hazmat.primitives import serialization

    secret = idp.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    message = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': idp.kid})}.{b64json(idp.claims(login))}"
    return f"{message}.{b64url(hmac.new(secret, message.encode(), hashlib.sha256).digest())}"


ID_TOKEN_ATTACKS = [
    ("alg none (unsigned)", lambda idp, login: f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(idp.claims(login))}.",
     "ID token refused: malformed JWT"),
    ("HS256 keyed with the provider's public key", _hs256_with_public_key, "algorithm HS256 is not accepted"),
    ("audience of another client", lambda idp, login: idp.sign(idp.claims(login, aud="another-client")),
     "InvalidAudience"),
    ("no audience", lambda idp, login: idp.sign({k: v for k, v in idp.claims(login).items() if k != "aud"}),
     "Missing required claim: aud"),
    ("nonce of another sign-in", lambda idp, login: idp.sign(idp.claims(login, nonce="dsin_" + "A" * 40)),
     "its nonce is not the one this sign-in sent"),
    ("no nonce", lambda idp, login: idp.sign({k: v for k, v in idp.claims(login).items() if k != "nonce"}),
     "its nonce is not the one this sign-in sent"),
    ("expired", lambda idp, login: idp.sign(idp.claims(login, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
     "ExpiredSignature"),
    ("no exp", lambda idp, login: idp.sign({k: v for k, v in idp.claims(login).items() if k != "exp"}),
     "Missing required claim: exp"),
    ("signed by a key not in the key set, under the provider's kid", lambda idp, login:
     idp.sign(idp.claims(login), key=_stranger_key()), "InvalidSignature"),
    ("signed by a key not in the key set, under another kid", lambda idp, login:
     idp.sign(idp.claims(login), header={"alg": "RS256", "kid": "hostile-9"}, key=_stranger_key()),
     "no key of the issuer matches"),
    ("issuer claim of another issuer", lambda idp, login: idp.sign(idp.claims(login, iss="https://accounts.evil.example")),
     "InvalidIssuer"),
    ("issuer claim with a trailing slash", lambda idp, login: idp.sign(idp.claims(login, iss=idp.url + "/")),
     "InvalidIssuer"),
    ("azp naming another client", lambda idp, login: idp.sign(idp.claims(login, aud=[idp.CLIENT_ID, "other"], azp="other")),
     "issued to another client"),
    ("email not verified", lambda idp, login: idp.sign(idp.claims(login, email_verified=False)),
     "has not verified the email"),
    ("email_verified as the string \"yes\"", lambda idp, login: idp.sign(idp.claims(login, email_verified="yes")),
     "has not verified the email"),
]


def _id_token_case(label, mint, phrase):
    @case(SIGN_IN, f"forged ID token: {label} -> access_denied back to the app, no user")
    def _(ctx):
        with HostileProvider(ctx) as idp:
            idp.mint = lambda login: mint(idp, login)
            reply, _ = _upstream_sign_in(ctx, idp)
            _expect_app_error(ctx, reply, "access_denied", phrase)
            check(len(idp.token_requests) == 1, f"the ID token was fetched {len(idp.token_requests)} times")
            check(_users_named(ctx, idp.email) == 0, f"{idp.email} was created by a refused sign-in")


for _label, _mint, _phrase in ID_TOKEN_ATTACKS:
    _id_token_case(_label, _mint, _phrase)


@case(SIGN_IN, "the provider returns no id_token, or refuses the code -> access_denied, no user")
def _(ctx):
    with HostileProvider(ctx) as idp:
        idp.mint = lambda login: None
        reply, _ = _upstream_sign_in(ctx, idp)
        _expect_app_error(ctx, reply, "access_denied", "returned no ID token")
        idp.mint = lambda login: REFUSE
        reply, _ = _upstream_sign_in(ctx, idp)
        _expect_app_error(ctx, reply, "access_denied", "the identity provider refused the code (400")
        check(_users_named(ctx, idp.email) == 0, "user created")


@case(SIGN_IN, "mix-up: a callback naming another issuer -> 400 page; the sign-in cannot be finished afterwards")
def _(ctx):
    with HostileProvider(ctx) as idp:
        browser = requests.Session()
        to_provider, _ = _to_provider(ctx, idp, browser)
        callback = _get(browser, to_provider).headers["Location"]
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(callback).query))
        mixed = f"{ctx.server.host}/oidc/v1/callback?" + urllib.parse.urlencode({**query, "iss": "https://idp.evil.example"})
        _expect_page(_get(browser, mixed), "invalid_request", "the answer names issuer `https://idp.evil.example`")
        _expect_page(_get(browser, callback), "invalid_request", "does not exist or has expired")
        check(idp.token_requests == [], f"the code was redeemed upstream: {idp.token_requests}")
        check(_users_named(ctx, idp.email) == 0, "user created")


@case(SIGN_IN, "lost state: a callback without `state` -> 400 page")
def _(ctx):
    with HostileProvider(ctx) as idp:
        browser = requests.Session()
        to_provider, _ = _to_provider(ctx, idp, browser)
        callback = _get(browser, to_provider).headers["Location"]
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(callback).query))
        query.pop("state")
        _expect_page(_get(browser, f"{ctx.server.host}/oidc/v1/callback?" + urllib.parse.urlencode(query)),
                     "invalid_request", "has no `state`")
        _expect_page(_get(browser, f"{ctx.server.host}/oidc/v1/callback?" + urllib.parse.urlencode(
            {**query, "state": "dsir_" + "A" * 40})), "invalid_request", "does not exist or has expired")
        check(idp.token_requests == [], f"a code was redeemed upstream: {idp.token_requests}")


@case(SIGN_IN, "login CSRF: a callback with a valid state in another browser -> 400 page; the real browser still can")
def _(ctx):
    with HostileProvider(ctx) as idp:
        victim = requests.Session()
        to_provider, verifier = _to_provider(ctx, idp, victim)
        callback = _get(victim, to_provider).headers["Location"]
        _expect_page(_get(requests.Session(), callback), "invalid_request", "this sign-in was started in another browser")
        attacker = requests.Session()
        _to_provider(ctx, idp, attacker)  # the attacker's own, valid, sign-in cookie
        _expect_page(_get(attacker, callback), "invalid_request", "started in another browser")
        check(idp.token_requests == [], f"another browser made Deputy redeem the code: {idp.token_requests}")
        check(_users_named(ctx, idp.email) == 0, "user created")
        answer = _app_answer(_get(victim, callback))
        expect_ok(_redeem(ctx, answer["code"], verifier), "the victim's own sign-in")


@case(SIGN_IN, "with a provider configured, the password form cannot bypass it (access_denied)")
def _(ctx):
    _password(ctx)
    with HostileProvider(ctx) as idp:
        browser = requests.Session()
        to_provider, _ = _to_provider(ctx, idp, browser)
        request_id = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(to_provider).query))["state"]
        refused = _local_login(ctx, browser, request_id)
        _expect_app_error(ctx, refused, "access_denied", "signs people in through its identity provider")
        check(idp.token_requests == [], "the provider was asked for a token")


@case(SIGN_IN, "no identity provider is left configured")
def _(ctx):
    listed = expect_ok(ctx.api.get("/api/2.0/deputy/identity-providers", ctx.admin, timeout=TIMEOUT), "providers")
    check(listed["identity_providers"] == [], f"providers left behind: {listed['identity_providers']}")
