#!/usr/bin/env python3
"""Deputy's attack suite: a real `deputy serve`, set up through the public API, attacked category by category.

Every case asserts the exact refusal (HTTP status + `error_code` + a key phrase of the message, or the OAuth
`error`), never just "it failed". After each category the server must still answer `/healthz`.

    DEPUTY_BIN=target/debug/deputy python tests/security/run.py [--only CATEGORY]... [--list] [-v]

Prints a table of cases by category and a final line `N passed, N failed`; exits non-zero if anything failed.

Adding a category: write functions decorated with `@case("category", "what the attack is")` taking the shared
`Ctx`; raise `Fail` (or use the `expect_*` helpers) when the server's answer is not the exact refusal. A route that
does not exist yet is simply not listed: no case is ever skipped silently.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import types
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Api, Reply, Server, b64json, b64url, b64url_decode, current_signing_key, serve_json_on_loopback, sign_eddsa,
    split_jwt,
)

GRANT_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
TT_PAT = "urn:databricks:params:oauth:token-type:personal-access-token"
MAX_BODY_BYTES = 16 * 1024 * 1024


class Fail(AssertionError):
    pass


CASES: list[tuple[str, str, object]] = []
CATEGORY_ORDER: list[str] = []


def case(category: str, name: str):
    def register(function):
        if category not in CATEGORY_ORDER:
            CATEGORY_ORDER.append(category)
        CASES.append((category, name, function))
        return function

    return register


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Fail(message)


def expect_api_error(reply: Reply, status: int, error_code: str, phrase: str) -> None:
    check(
        reply.status == status
        and reply.get("error_code") == error_code
        and phrase.lower() in str(reply.get("message", "")).lower(),
        f"expected {status} {error_code} containing {phrase!r}, got {reply!r}",
    )


def expect_oauth_error(reply: Reply, status: int, error: str, phrase: str) -> None:
    check(
        reply.status == status
        and reply.get("error") == error
        and phrase.lower() in str(reply.get("error_description", "")).lower()
        and "content-type" in {k.lower() for k in reply.headers},
        f"expected {status} {error} containing {phrase!r}, got {reply!r}",
    )


def expect_ok(reply: Reply, what: str) -> dict:
    check(reply.status == 200, f"{what}: expected 200, got {reply!r}")
    return reply.body


def unauthenticated(ctx, token: str, phrase: str, path="/api/2.0/preview/scim/v2/Me") -> None:
    expect_api_error(ctx.api.get(path, token), 401, "UNAUTHENTICATED", phrase)


# ---- the shared fixture --------------------------------------------------------------------------------------------

class Ctx:
    """Users, groups, service principals, tokens, a warehouse and a policy-protected table, all made through the
    public API as the bootstrap admin."""

    def __init__(self, server: Server):
        self.server = server
        self.api = Api(server.host)
        self.admin = server.admin_token
        api = self.api
        self.users = {}
        for name in ["alice@example.com", "bob@example.com", "carol@example.com"]:
            self.users[name] = expect_ok(
                api.post("/api/2.0/preview/scim/v2/Users", self.admin, {"userName": name}), f"create {name}")
        self.group = expect_ok(api.post("/api/2.0/preview/scim/v2/Groups", self.admin,
                                        {"displayName": "analysts",
                                         "members": [{"value": self.users["alice@example.com"]["id"]}]}),
                               "create group")
        self.sps = {}
        for name in ["agent-a", "agent-b"]:
            sp = expect_ok(api.post("/api/2.0/preview/scim/v2/ServicePrincipals", self.admin,
                                    {"displayName": name}), f"create {name}")
            secret = expect_ok(api.post(f"/api/2.0/accounts/servicePrincipals/{sp['id']}/credentials/secrets",
                                        self.admin, {}), f"secret for {name}")
            self.sps[name] = {"id": sp["id"], "app": sp["applicationId"], "secret": secret["secret"]}
        self.alice = self.pat_for("alice@example.com")
        self.bob = self.pat_for("bob@example.com")
        self.carol = self.pat_for("carol@example.com")
        self.alice_sql = self.pat_for("alice@example.com", scopes=["sql"])
        warehouses = expect_ok(api.get("/api/2.0/sql/warehouses", self.admin), "list warehouses")["warehouses"]
        self.warehouse = warehouses[0]["id"]
        self.grant_warehouse()
        self._policy_table()
        self._fresh_users = {}

    def fresh_users(self, category: str):
        """Fresh PATs for alice, bob and carol, and CAN_USE on the warehouse for each again, made once per category at
        its first use: earlier categories revoke some of the users' PATs and replace the warehouse's ACL."""
        if category not in self._fresh_users:
            self.grant_warehouse()
            self._fresh_users[category] = types.SimpleNamespace(**{
                who: self.pat_for(f"{who}@example.com") for who in ("alice", "bob", "carol")})
        return self._fresh_users[category]

    def grant_warehouse(self):
        """CAN_USE on the warehouse for every user (again: the malformed-body cases PUT the warehouse's ACL)."""
        acl = [{"user_name": u, "permission_level": "CAN_USE"} for u in self.users]
        expect_ok(self.api.patch(f"/api/2.0/permissions/warehouses/{self.warehouse}", self.admin,
                                 {"access_control_list": acl}), "warehouse ACL")

    def pat_for(self, user: str, scopes=None, lifetime=3600) -> str:
        body = {"application_id": self.users[user]["id"], "lifetime_seconds": lifetime, "comment": "security"}
        if scopes is not None:
            body["scopes"] = scopes
        return expect_ok(self.api.post("/api/2.0/token-management/on-behalf-of/tokens", self.admin, body),
                         f"PAT for {user}")["token_value"]

    def sp_token(self, name: str, scope="all-apis") -> str:
        sp = self.sps[name]
        reply = self.api.form("/oidc/v1/token", {"grant_type": "client_credentials", "scope": scope},
                              headers=basic(sp["app"], sp["secret"]))
        return expect_ok(reply, f"client credentials for {name}")["access_token"]

    def exchange(self, subject: str, subject_type=TT_ACCESS, **fields) -> Reply:
        form = {"grant_type": GRANT_EXCHANGE, "subject_token": subject, "subject_token_type": subject_type}
        headers = fields.pop("headers", None)
        form.update({k: v for k, v in fields.items() if v is not None})
        return self.api.form("/oidc/v1/token", form, headers=headers)

    def jwt(self, pat: str, scope=None, **fields) -> str:
        """A JWT for the PAT's owner, by token exchange."""
        reply = self.exchange(pat, TT_PAT, scope=scope, **fields)
        return expect_ok(reply, "exchange")["access_token"]

    def sql(self, token: str, statement: str, parameters=None) -> Reply:
        return self.api.sql(token, self.warehouse, statement, parameters)

    def sql_ok(self, token: str, statement: str, parameters=None) -> list:
        reply = self.sql(token, statement, parameters)
        check(reply.status == 200, f"{statement}: HTTP {reply!r}")
        state = reply.body["status"]["state"]
        check(state == "SUCCEEDED", f"{statement}: {state} {reply.body['status']}")
        return (reply.body.get("result") or {}).get("data_array") or []

    def delegated(self, pat: str, actor="agent-a", scope=None) -> str:
        """A token for the PAT's owner with a service principal as the actor: what an agent holds for its user."""
        reply = self.exchange(pat, TT_PAT, actor_token=self.sp_token(actor), actor_token_type=TT_ACCESS, scope=scope)
        return expect_ok(reply, "delegated exchange")["access_token"]

    def vector_index(self) -> str:
        """`vsec.docs.idx`, a direct-access index owned by the admin: alice may SELECT from it; bob may use the
        catalog and schema but not the index."""
        if hasattr(self, "_vector_index"):
            return self._vector_index
        api, admin = self.api, self.admin
        expect_ok(api.post("/api/2.0/vector-search/endpoints", admin, {"name": "sec-vs", "endpoint_type": "STANDARD"}),
                  "vector-search endpoint")
        expect_ok(api.post("/api/2.1/unity-catalog/catalogs", admin, {"name": "vsec"}), "catalog vsec")
        expect_ok(api.post("/api/2.1/unity-catalog/schemas", admin, {"name": "docs", "catalog_name": "vsec"}), "schema")
        schema = {"id": "string", "owner": "string", "text": "string", "vec": "array<float>"}
        expect_ok(api.post("/api/2.0/vector-search/indexes", admin, {
            "name": "vsec.docs.idx", "endpoint_name": "sec-vs", "primary_key": "id", "index_type": "DIRECT_ACCESS",
            "direct_access_index_spec": {"embedding_vector_columns": [{"name": "vec", "embedding_dimension": 2}],
                                         "schema_json": json.dumps(schema)}}), "index")
        rows = [{"id": "a1", "owner": "alice", "text": "alpha", "vec": [1.0, 0.0]},
                {"id": "b1", "owner": "bob", "text": "bravo", "vec": [0.0, 1.0]},
                {"id": "c1", "owner": "carol's", "text": "charlie", "vec": [0.7, 0.7]}]
        expect_ok(api.post("/api/2.0/vector-search/indexes/vsec.docs.idx/upsert-data", admin,
                           {"inputs_json": json.dumps(rows)}), "upsert")
        for principal, securable, privileges in [
            ("alice@example.com", "catalog/vsec", ["USE_CATALOG"]), ("alice@example.com", "schema/vsec.docs", ["USE_SCHEMA"]),
            ("alice@example.com", "table/vsec.docs.idx", ["SELECT"]),
            ("bob@example.com", "catalog/vsec", ["USE_CATALOG"]), ("bob@example.com", "schema/vsec.docs", ["USE_SCHEMA"]),
        ]:
            expect_ok(api.patch(f"/api/2.1/unity-catalog/permissions/{securable}", admin,
                                {"changes": [{"principal": principal, "add": privileges}]}), f"grant on {securable}")
        self._vector_index = "vsec.docs.idx"
        return self._vector_index

    def http_connection(self):
        """`sec_http`, an HTTP connection (base path `/api`, a bearer token) to a recording upstream on loopback;
        alice holds USE_CONNECTION on it. Returns (name, list of request lines the upstream received)."""
        if hasattr(self, "_http_connection"):
            return self._http_connection
        upstream = RecordingUpstream()
        self.upstream = upstream
        expect_ok(self.api.post("/api/2.1/unity-catalog/connections", self.admin, {
            "name": "sec_http", "connection_type": "HTTP",
            "options": {"host": f"http://127.0.0.1:{upstream.port}", "base_path": "/api",
                        "bearer_token": CONNECTION_SECRET}}), "connection")
        expect_ok(self.api.patch("/api/2.1/unity-catalog/permissions/connection/sec_http", self.admin,
                                 {"changes": [{"principal": "alice@example.com", "add": ["USE_CONNECTION"]}]}),
                  "USE_CONNECTION for alice")
        self._http_connection = ("sec_http", upstream.seen)
        return self._http_connection

    def _policy_table(self):
        for statement in [
            "CREATE CATALOG sec",
            "CREATE SCHEMA sec.hr",
            "CREATE SCHEMA sec.scratch",
            "CREATE TABLE sec.hr.staff (id INT, name STRING, ssn STRING, dept STRING, salary INT)",
            "INSERT INTO sec.hr.staff VALUES (1, 'Ann', 'ssn-111', 'eng', 100), (2, 'Ben', 'ssn-222', 'ops', 200), "
            "(3, 'Cid', 'ssn-333', 'eng', 300), (4, 'Dee', 'ssn-444', 'ops', 400), (5, 'Eve', 'ssn-555', NULL, 500)",
            "CREATE TABLE sec.hr.secret (x INT)",
            "INSERT INTO sec.hr.secret VALUES (42)",
            "CREATE FUNCTION sec.hr.eng_only(d STRING) RETURNS BOOLEAN RETURN d = 'eng' OR is_account_group_member('admins')",
            "CREATE FUNCTION sec.hr.mask_ssn(s STRING) RETURNS STRING "
            "RETURN CASE WHEN is_account_group_member('admins') THEN s ELSE '***' END",
            "ALTER TABLE sec.hr.staff SET ROW FILTER sec.hr.eng_only ON (dept)",
            "ALTER TABLE sec.hr.staff ALTER COLUMN ssn SET MASK sec.hr.mask_ssn",
            "GRANT USE CATALOG ON CATALOG sec TO `bob@example.com`",
            "GRANT USE SCHEMA ON SCHEMA sec.hr TO `bob@example.com`",
            "GRANT USE SCHEMA, CREATE TABLE ON SCHEMA sec.scratch TO `bob@example.com`",
            "GRANT SELECT ON TABLE sec.hr.staff TO `bob@example.com`",
        ]:
            self.sql_ok(self.admin, statement)


CONNECTION_SECRET = "connection-secret-" + uuid.uuid4().hex


class RecordingUpstream:
    """Test double for the upstream behind an HTTP connection: a loopback HTTP server that records each request
    (`METHOD path Authorization`) and answers 200, or a redirect to itself for `/api/redirect`."""

    def __init__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen.append(f"{self.command} {self.path} {self.headers.get('Authorization')}")
                if self.path == "/api/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/steal")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def basic(client_id: str, secret: str) -> dict:
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def reforge(token: str, header_changes=None, claim_changes=None, signature=None, drop_header=()) -> str:
    """The token with its header or claims edited and the original signature kept."""
    header, claims, old_signature = split_jwt(token)
    header.update(header_changes or {})
    for key in drop_header:
        header.pop(key, None)
    claims.update(claim_changes or {})
    return f"{b64json(header)}.{b64json(claims)}.{old_signature if signature is None else signature}"


def genuine_claims(ctx: Ctx, token: str) -> dict:
    return split_jwt(token)[1]


def real_sign(ctx: Ctx, claims: dict, header=None) -> str:
    """Signs with the server's own current key (read from its store by the harness), so only the claim checks
    stand between the token and the API."""
    kid, key = current_signing_key(ctx.server)
    return sign_eddsa(key, header or {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}, claims)


# ---- forged and tampered tokens -----------------------------------------------------------------------------------

FORGED = "forged-tokens"


def _alice_jwt(ctx):
    if not hasattr(ctx, "_alice_jwt"):
        ctx._alice_jwt = ctx.jwt(ctx.alice_sql)
    return ctx._alice_jwt


@case(FORGED, "genuine narrow JWT works (control)")
def _(ctx):
    expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", _alice_jwt(ctx)), "Me")


@case(FORGED, "alg none, empty signature")
def _(ctx):
    token = reforge(_alice_jwt(ctx), {"alg": "none"}, signature="")
    unauthenticated(ctx, token, "invalid personal access token")


@case(FORGED, "alg none, any signature")
def _(ctx):
    unauthenticated(ctx, reforge(_alice_jwt(ctx), {"alg": "none"}), "algorithm `none` is not accepted")


@case(FORGED, "alg HS256 keyed with the JWKS public key (key confusion)")
def _(ctx):
    import hashlib
    import hmac
    jwks = expect_ok(ctx.api.get("/oidc/v1/keys"), "jwks")
    public = b64url_decode(jwks["keys"][0]["x"])
    header, claims, _ = split_jwt(_alice_jwt(ctx))
    header["alg"] = "HS256"
    claims["scope"] = "all-apis"
    message = f"{b64json(header)}.{b64json(claims)}"
    token = f"{message}.{b64url(hmac.new(public, message.encode(), hashlib.sha256).digest())}"
    unauthenticated(ctx, token, "algorithm `HS256` is not accepted")


@case(FORGED, "alg RS256 with an embedded attacker jwk")
def _(ctx):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    header, claims, _ = split_jwt(_alice_jwt(ctx))
    header.update({"alg": "RS256", "jwk": {"kty": "RSA", "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}})
    claims["scope"] = "all-apis"
    message = f"{b64json(header)}.{b64json(claims)}"
    token = f"{message}.{b64url(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256()))}"
    unauthenticated(ctx, token, "algorithm `RS256` is not accepted")


@case(FORGED, "EdDSA signed by the attacker's key under the real kid, jwk/jku headers")
def _(ctx):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    attacker = Ed25519PrivateKey.generate()
    header, claims, _ = split_jwt(_alice_jwt(ctx))
    raw = attacker.public_key().public_bytes_raw()
    header.update({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}, "jku": "http://evil.example/jwks"})
    claims["scope"] = "all-apis"
    unauthenticated(ctx, sign_eddsa(attacker, header, claims), "token signature is invalid")


@case(FORGED, "EdDSA signed by the attacker's key under an unknown kid")
def _(ctx):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    header, claims, _ = split_jwt(_alice_jwt(ctx))
    header["kid"] = "attackerkey1"
    unauthenticated(ctx, sign_eddsa(Ed25519PrivateKey.generate(), header, claims),
                    "token key id `attackerkey1` is unknown or retired")


@case(FORGED, "kid path trick ../../etc/passwd")
def _(ctx):
    unauthenticated(ctx, reforge(_alice_jwt(ctx), {"kid": "../../etc/passwd"}), "token key id is not well formed")


@case(FORGED, "kid URL / SQL / NUL tricks")
def _(ctx):
    for kid in ["http://evil.example/k", "x' OR '1'='1", "a\u0000b", "/dev/zero", "%2e%2e%2f"]:
        unauthenticated(ctx, reforge(_alice_jwt(ctx), {"kid": kid}), "token key id is not well formed")


@case(FORGED, "very long kid (65 and 4000 characters)")
def _(ctx):
    for length in [65, 4000]:
        unauthenticated(ctx, reforge(_alice_jwt(ctx), {"kid": "k" * length}), "token key id is not well formed")


@case(FORGED, "kid of another type (number, null, object)")
def _(ctx):
    for kid in [1, {"a": 1}]:
        unauthenticated(ctx, reforge(_alice_jwt(ctx), {"kid": kid}), "header is not a json object of the expected shape")
    unauthenticated(ctx, reforge(_alice_jwt(ctx), {"kid": None}), "token header has no key id")


@case(FORGED, "no kid")
def _(ctx):
    unauthenticated(ctx, reforge(_alice_jwt(ctx), drop_header=["kid"]), "token header has no key id")


@case(FORGED, "crit header")
def _(ctx):
    unauthenticated(ctx, reforge(_alice_jwt(ctx), {"crit": ["exp"], "exp": 1}), "marks extensions as critical")


@case(FORGED, "typ JWT instead of at+jwt, and no typ")
def _(ctx):
    unauthenticated(ctx, reforge(_alice_jwt(ctx), {"typ": "JWT"}), "token type must be `at+jwt`")
    unauthenticated(ctx, reforge(_alice_jwt(ctx), drop_header=["typ"]), "token type must be `at+jwt`")


@case(FORGED, "duplicate alg member in the header")
def _(ctx):
    token = _alice_jwt(ctx)
    header, _, _ = split_jwt(token)
    raw = '{"alg":"EdDSA","typ":"at+jwt","kid":"%s","alg":"none"}' % header["kid"]
    forged = b64url(raw.encode()) + "." + token.split(".", 1)[1]
    unauthenticated(ctx, forged, "header is not a json object of the expected shape")


@case(FORGED, "flipped signature bit")
def _(ctx):
    token = _alice_jwt(ctx)
    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[0] ^= 0x01
    unauthenticated(ctx, f"{head}.{payload}.{b64url(bytes(raw))}", "token signature is invalid")


@case(FORGED, "malleable signature (S + L, rejected by strict verification)")
def _(ctx):
    token = _alice_jwt(ctx)
    head, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    order = 2 ** 252 + 27742317777372353535851937790883648493
    s = int.from_bytes(raw[32:], "little") + order
    forged = raw[:32] + s.to_bytes(32, "little")
    unauthenticated(ctx, f"{head}.{payload}.{b64url(forged)}", "token signature is invalid")


@case(FORGED, "payload edited after signing (scope widened, sub changed, exp extended)")
def _(ctx):
    token = _alice_jwt(ctx)
    for changes in [{"scope": "all-apis"}, {"sub": "admin"}, {"exp": int(time.time()) + 10 ** 6},
                    {"act": {"sub": ctx.sps["agent-a"]["app"]}}]:
        unauthenticated(ctx, reforge(token, claim_changes=changes), "token signature is invalid")


@case(FORGED, "header of one token spliced onto another's payload and signature")
def _(ctx):
    alice = _alice_jwt(ctx)
    admin = ctx.jwt(ctx.admin)
    # Both headers are the same text (same kid), so the splice that matters is admin's payload under alice's
    # signature.
    mixed = ".".join([alice.split(".")[0], admin.split(".")[1], alice.split(".")[2]])
    unauthenticated(ctx, mixed, "token signature is invalid")


@case(FORGED, "expired (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    now = int(time.time())
    claims.update(iat=now - 700, nbf=now - 700, exp=now - 1)
    unauthenticated(ctx, real_sign(ctx, claims), "token has expired")


@case(FORGED, "not yet valid (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    now = int(time.time())
    claims.update(iat=now + 300, nbf=now + 300, exp=now + 600)
    unauthenticated(ctx, real_sign(ctx, claims), "token is not valid yet")


@case(FORGED, "wrong issuer / audience (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    unauthenticated(ctx, real_sign(ctx, {**claims, "iss": "https://evil.example/oidc"}), "token issuer is not accepted")
    unauthenticated(ctx, real_sign(ctx, {**claims, "aud": "https://other.example"}), "token audience is not accepted")
    unauthenticated(ctx, real_sign(ctx, {**claims, "aud": [claims["aud"]]}), "claims are not a json object")


@case(FORGED, "missing claims (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    for name in ["exp", "nbf", "iat", "iss", "aud", "sub", "jti", "scope"]:
        stripped = {k: v for k, v in claims.items() if k != name}
        unauthenticated(ctx, real_sign(ctx, stripped), f"token has no `{name}` claim")


@case(FORGED, "unknown scope word / overlong act chain (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    unauthenticated(ctx, real_sign(ctx, {**claims, "scope": "sql superuser"}), "token claim `scope` is invalid")
    chain = None
    for index in range(17):
        chain = {"sub": f"agent-{index}", **({"act": chain} if chain else {})}
    unauthenticated(ctx, real_sign(ctx, {**claims, "act": chain}), "token claim `act` is invalid")


@case(FORGED, "sub naming a group, a missing user, or the admin's SP-shaped twin (genuine signature)")
def _(ctx):
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    for sub in ["admins", "nobody@example.com", str(uuid.uuid4())]:
        unauthenticated(ctx, real_sign(ctx, {**claims, "sub": sub}), "no longer exists or is inactive")


@case(FORGED, "token just over 8 KiB")
def _(ctx):
    unauthenticated(ctx, _alice_jwt(ctx) + "A" * 8192, "token is longer than 8192 bytes")


@case(FORGED, "1 MB header")
def _(ctx):
    reply = ctx.api.get("/api/2.0/preview/scim/v2/Me", "eyJ" + "A" * 1_000_000 + ".e30.AA")
    # hyper refuses the request head before any handler: 431 with no body.
    check(reply.status == 431, f"expected 431, got {reply!r}")


@case(FORGED, "truncated tokens")
def _(ctx):
    token = _alice_jwt(ctx)
    head, payload, signature = token.split(".")
    unauthenticated(ctx, f"{head}.{payload}", "invalid personal access token")
    unauthenticated(ctx, f"{head}.{payload}.{signature[:44]}", "signature has the wrong length")
    unauthenticated(ctx, token[: len(head) + 10], "invalid personal access token")


@case(FORGED, "non-base64 parts, standard-alphabet base64, non-JSON header")
def _(ctx):
    token = _alice_jwt(ctx)
    head, payload, signature = token.split(".")
    unauthenticated(ctx, f"{head}.{payload}!.{signature}", "invalid personal access token")
    unauthenticated(ctx, f"{head}.{payload.replace('-', '+')}+/.{signature}", "invalid personal access token")
    unauthenticated(ctx, f"eyJub3Q.{payload}.{signature}", "header is not a json object")
    unauthenticated(ctx, f"eyJ.{payload}.{signature}", "header is not base64url")


@case(FORGED, "no credentials, wrong schemes, token in the query string")
def _(ctx):
    phrase = "no credentials"
    expect_api_error(ctx.api.get("/api/2.0/preview/scim/v2/Me"), 401, "UNAUTHENTICATED", phrase)
    expect_api_error(ctx.api.get("/api/2.0/preview/scim/v2/Me", headers={"Authorization": "Bearer "}),
                     401, "UNAUTHENTICATED", phrase)
    expect_api_error(ctx.api.get("/api/2.0/preview/scim/v2/Me", headers={"Authorization": f"Basic {ctx.alice}"}),
                     401, "UNAUTHENTICATED", phrase)
    expect_api_error(ctx.api.get("/api/2.0/preview/scim/v2/Me", params={"access_token": ctx.alice}),
                     401, "UNAUTHENTICATED", phrase)


@case(FORGED, "personal access token with one character changed")
def _(ctx):
    altered = ctx.alice[:-1] + ("0" if ctx.alice[-1] != "0" else "1")
    unauthenticated(ctx, altered, "invalid personal access token")


# ---- scope widening through exchange and token creation -----------------------------------------------------------

SCOPES = "scope-widening"


@case(SCOPES, "exchange asking for all-apis from a sql token")
def _(ctx):
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), scope="all-apis"), 400, "invalid_scope",
                       "requested scopes are not held by the subject token")


@case(SCOPES, "exchange narrow, then exchange again asking for the dropped scope")
def _(ctx):
    narrow = expect_ok(ctx.exchange(_alice_jwt(ctx), scope="sql.statement-execution"), "narrow")
    check(narrow["scope"] == "sql.statement-execution", f"narrowed scope {narrow['scope']}")
    expect_oauth_error(ctx.exchange(narrow["access_token"], scope="sql"), 400, "invalid_scope",
                       "sql.warehouses")
    again = expect_ok(ctx.exchange(narrow["access_token"]), "re-exchange without scope")
    check(again["scope"] == "sql.statement-execution", f"re-exchange gave {again['scope']}")


@case(SCOPES, "exchange of a narrow PAT asking for wider scopes")
def _(ctx):
    expect_oauth_error(ctx.exchange(ctx.alice_sql, TT_PAT, scope="sql iam.scim"), 400, "invalid_scope",
                       "iam.scim")


@case(SCOPES, "exchange of a client-credentials token asking for wider scopes")
def _(ctx):
    token = ctx.sp_token("agent-a", scope="sql")
    expect_oauth_error(ctx.exchange(token, scope="unity-catalog"), 400, "invalid_scope", "catalog.catalogs")


@case(SCOPES, "unknown scope words and OIDC-only scopes")
def _(ctx):
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), scope="sql admin"), 400, "invalid_scope",
                       "Invalid scope: unknown scope `admin`")
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), scope="openid profile"), 400, "invalid_scope",
                       "no scope would remain")
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), scope="ALL-APIS"), 400, "invalid_scope", "unknown scope")


@case(SCOPES, "a narrow token is refused on routes outside its scopes")
def _(ctx):
    token = _alice_jwt(ctx)
    for method, path, scope in [
        ("GET", "/api/2.0/preview/scim/v2/Users", "iam.scim"),
        ("GET", "/api/2.1/unity-catalog/catalogs", "catalog.catalogs"),
        ("GET", "/api/2.0/token/list", "settings.tokens"),
        ("POST", "/api/2.0/token/create", "settings.tokens"),
        ("GET", f"/api/2.0/permissions/warehouses/{ctx.warehouse}", "iam.access-control"),
    ]:
        expect_api_error(ctx.api.call(method, path, token), 403, "PERMISSION_DENIED",
                         f"does not hold the API scope `{scope}`")


@case(SCOPES, "creating a PAT wider than the creating token")
def _(ctx):
    token = ctx.jwt(ctx.alice, scope="settings.tokens")
    expect_api_error(ctx.api.post("/api/2.0/token/create", token, {"scopes": ["all-apis"]}), 403,
                     "PERMISSION_DENIED", "cannot hold scopes your token lacks")


@case(SCOPES, "creating a PAT with a delegated (act) token")
def _(ctx):
    agent = ctx.sp_token("agent-a")
    delegated = expect_ok(ctx.exchange(ctx.alice, TT_PAT, actor_token=agent, actor_token_type=TT_ACCESS),
                          "delegate")["access_token"]
    expect_api_error(ctx.api.post("/api/2.0/token/create", delegated, {}), 403, "PERMISSION_DENIED",
                     "cannot be created with a delegated")


@case(SCOPES, "exchanged token never outlives its subject nor 15 minutes")
def _(ctx):
    short = ctx.pat_for("alice@example.com", lifetime=120)
    issued = expect_ok(ctx.exchange(short, TT_PAT), "exchange short PAT")
    check(issued["expires_in"] <= 120, f"expires_in {issued['expires_in']} > subject's 120 s")
    long_lived = expect_ok(ctx.exchange(ctx.alice, TT_PAT), "exchange")
    check(long_lived["expires_in"] <= 900, f"expires_in {long_lived['expires_in']} > 900")
    child = expect_ok(ctx.exchange(issued["access_token"]), "exchange child")
    check(split_jwt(child["access_token"])[1]["exp"] <= split_jwt(issued["access_token"])[1]["exp"],
          "child outlives parent")


@case(SCOPES, "exchange for another audience, or for a refresh token")
def _(ctx):
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), audience="https://evil.example"), 400, "invalid_target",
                       "tokens can only be issued for")
    expect_oauth_error(ctx.exchange(_alice_jwt(ctx), requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
                       400, "invalid_request", "cannot issue tokens of type")


@case(SCOPES, "act chains only grow, and a plain re-exchange keeps the chain")
def _(ctx):
    a, b = ctx.sps["agent-a"], ctx.sps["agent-b"]
    first = expect_ok(ctx.exchange(ctx.alice, TT_PAT, actor_token=ctx.sp_token("agent-a"),
                                   actor_token_type=TT_ACCESS), "first hop")["access_token"]
    second = expect_ok(ctx.exchange(first, actor_token=ctx.sp_token("agent-b"), actor_token_type=TT_ACCESS),
                       "second hop")["access_token"]
    claims = split_jwt(second)[1]
    check(claims["sub"] == "alice@example.com", f"sub {claims['sub']}")
    check(claims["act"] == {"sub": b["app"], "act": {"sub": a["app"]}}, f"act {claims['act']}")
    plain = expect_ok(ctx.exchange(second, scope="sql"), "plain re-exchange")["access_token"]
    check(split_jwt(plain)[1].get("act") == claims["act"], "a plain exchange dropped the act chain")
    # The actor's own delegated token as actor: its chain is kept too.
    third = expect_ok(ctx.exchange(ctx.alice, TT_PAT, actor_token=second, actor_token_type=TT_ACCESS),
                      "delegated actor")["access_token"]
    chain = split_jwt(third)[1]["act"]
    check(chain["sub"] == b["app"] and chain["act"]["sub"] == a["app"] and chain["act"]["act"]["sub"] == "alice@example.com",
          f"delegated actor chain {chain}")


@case(SCOPES, "act chain longer than 16 is refused")
def _(ctx):
    agent = ctx.sp_token("agent-a")
    token = ctx.alice
    token_type = TT_PAT
    for hop in range(16):
        token = expect_ok(ctx.exchange(token, token_type, actor_token=agent, actor_token_type=TT_ACCESS),
                          f"hop {hop}")["access_token"]
        token_type = TT_ACCESS
    expect_oauth_error(ctx.exchange(token, actor_token=agent, actor_token_type=TT_ACCESS), 400, "invalid_request",
                       "delegation chain would be longer than 16 actors")


# ---- act spoofing ---------------------------------------------------------------------------------------------------

ACT = "act-spoofing"


def token_info(ctx, token):
    return expect_ok(ctx.api.get("/api/2.0/deputy/token-info", token), "token-info")


@case(ACT, "extra form fields (sub, act, actor) cannot choose the subject or the chain")
def _(ctx):
    agent = ctx.sp_token("agent-a")
    reply = ctx.api.form("/oidc/v1/token", {
        "grant_type": GRANT_EXCHANGE, "subject_token": agent, "subject_token_type": TT_ACCESS,
        "sub": "alice@example.com", "act": json.dumps({"sub": "alice@example.com"}), "actor": "admin",
        "requested_subject": "alice@example.com"})
    issued = expect_ok(reply, "exchange with extra fields")["access_token"]
    info = token_info(ctx, issued)
    check(info["principal"] == ctx.sps["agent-a"]["app"], f"principal {info['principal']}")
    check(info["actor_chain"] == [], f"chain {info['actor_chain']}")


@case(ACT, "an agent holding only its own token cannot become a user")
def _(ctx):
    agent = ctx.sp_token("agent-a")
    issued = expect_ok(ctx.exchange(agent, actor_token=agent, actor_token_type=TT_ACCESS), "self-exchange")
    info = token_info(ctx, issued["access_token"])
    check(info["principal"] == ctx.sps["agent-a"]["app"], f"principal {info['principal']}")
    expect_api_error(ctx.api.post("/api/2.0/preview/scim/v2/Users", issued["access_token"],
                                  {"userName": "mallory@example.com"}), 403,
                     "PERMISSION_DENIED", "only members of the `admins` group")


@case(ACT, "forged act claim in a token")
def _(ctx):
    agent = ctx.sp_token("agent-b")
    forged = reforge(agent, claim_changes={"sub": "alice@example.com", "act": {"sub": ctx.sps["agent-b"]["app"]}})
    unauthenticated(ctx, forged, "token signature is invalid")
    expect_oauth_error(ctx.exchange(forged), 400, "invalid_grant", "subject token refused: invalid access token")


@case(ACT, "forged or revoked actor token")
def _(ctx):
    agent = ctx.sp_token("agent-b")
    forged = reforge(agent, claim_changes={"sub": ctx.sps["agent-a"]["app"]})
    expect_oauth_error(ctx.exchange(ctx.alice, TT_PAT, actor_token=forged, actor_token_type=TT_ACCESS), 400,
                       "invalid_grant", "actor token refused: invalid access token: token signature is invalid")
    expect_ok(ctx.api.form("/oidc/v1/revoke", {"token": agent}), "revoke actor")
    expect_oauth_error(ctx.exchange(ctx.alice, TT_PAT, actor_token=agent, actor_token_type=TT_ACCESS), 400,
                       "invalid_grant", "actor token refused: access token has been revoked")


@case(ACT, "actor token without a type, unknown token types")
def _(ctx):
    agent = ctx.sp_token("agent-a")
    expect_oauth_error(ctx.exchange(ctx.alice, TT_PAT, actor_token=agent), 400, "invalid_request",
                       "missing `actor_token_type`")
    expect_oauth_error(ctx.exchange(ctx.alice, "urn:x:saml2"), 400, "invalid_request",
                       "unsupported `subject_token_type`")


@case(ACT, "client_id claim cannot be chosen without the client's secret")
def _(ctx):
    issued = expect_ok(ctx.exchange(ctx.alice, TT_PAT, client_id=ctx.sps["agent-a"]["app"]), "exchange")
    check("client_id" not in split_jwt(issued["access_token"])[1], "client_id set without authentication")
    expect_oauth_error(ctx.exchange(ctx.alice, TT_PAT, client_id=ctx.sps["agent-a"]["app"], client_secret="dose-wrong"),
                       401, "invalid_client", "client authentication failed")
    expect_oauth_error(ctx.exchange(ctx.alice, TT_PAT, headers=basic(ctx.sps["agent-a"]["app"], "wrong")),
                       401, "invalid_client", "client authentication failed")


@case(ACT, "client credentials for an SP with another SP's secret")
def _(ctx):
    reply = ctx.api.form("/oidc/v1/token", {"grant_type": "client_credentials"},
                         headers=basic(ctx.sps["agent-a"]["app"], ctx.sps["agent-b"]["secret"]))
    expect_oauth_error(reply, 401, "invalid_client", "client authentication failed")


@case(ACT, "introspecting another principal's token reads as inactive")
def _(ctx):
    alice = _alice_jwt(ctx)
    reply = ctx.api.form("/oidc/v1/introspect", {"token": alice}, headers={"Authorization": f"Bearer {ctx.bob}"})
    check(reply.status == 200 and reply.body == {"active": False}, f"bob introspecting alice: {reply!r}")
    own = ctx.api.form("/oidc/v1/introspect", {"token": alice}, headers={"Authorization": f"Bearer {alice}"})
    check(own.body.get("active") is True and own.body.get("sub") == "alice@example.com", f"own: {own!r}")


# ---- replay of revoked and expired tokens -------------------------------------------------------------------------

REPLAY = "replay"


@case(REPLAY, "revoked JWT (RFC 7009) is refused on the next request and in exchange")
def _(ctx):
    token = ctx.jwt(ctx.alice)
    expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", token), "before")
    reply = ctx.api.form("/oidc/v1/revoke", {"token": token})
    check(reply.status == 200 and reply.body == {}, f"revoke: {reply!r}")
    unauthenticated(ctx, token, "access token has been revoked")
    expect_oauth_error(ctx.exchange(token), 400, "invalid_grant", "subject token refused: access token has been revoked")
    ctx.revoked_jwt = token


@case(REPLAY, "revoked PAT (RFC 7009 and token/delete) is refused")
def _(ctx):
    pat = ctx.pat_for("carol@example.com")
    expect_ok(ctx.api.form("/oidc/v1/revoke", {"token": pat}), "revoke PAT")
    unauthenticated(ctx, pat, "invalid personal access token")
    expect_oauth_error(ctx.exchange(pat, TT_PAT), 400, "invalid_grant", "subject token refused: invalid personal access token")
    pat2 = ctx.pat_for("carol@example.com")
    created = ctx.api.get("/api/2.0/token/list", pat2).body["token_infos"]
    for info in created:
        expect_ok(ctx.api.post("/api/2.0/token/delete", pat2, {"token_id": info["token_id"]}), "delete")
    unauthenticated(ctx, pat2, "invalid personal access token")
    ctx.revoked_pat = pat2


@case(REPLAY, "a PAT in use (so remembered by the server) is refused on the next request after any deletion")
def _(ctx):
    def pat_in_use(user: str) -> tuple[str, str]:
        body = {"application_id": ctx.users[user]["id"], "lifetime_seconds": 3600, "comment": "remembered"}
        made = expect_ok(ctx.api.post("/api/2.0/token-management/on-behalf-of/tokens", ctx.admin, body), "PAT")
        for _ in range(3):
            expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", made["token_value"]), f"{user}'s PAT in use")
        return made["token_value"], made["token_info"]["token_id"]

    pat, token_id = pat_in_use("carol@example.com")
    expect_ok(ctx.api.post("/api/2.0/token/delete", pat, {"token_id": token_id}), "owner deletes")
    unauthenticated(ctx, pat, "invalid personal access token")
    pat, token_id = pat_in_use("carol@example.com")
    expect_ok(ctx.api.delete(f"/api/2.0/token-management/tokens/{token_id}", ctx.admin), "admin deletes")
    unauthenticated(ctx, pat, "invalid personal access token")
    # A deleted user's tokens go with them, and must not pass for whoever is created next (ids may be reused).
    user = expect_ok(ctx.api.post("/api/2.0/preview/scim/v2/Users", ctx.admin, {"userName": "erin@example.com"}), "erin")
    ctx.users["erin@example.com"] = user
    pat, _ = pat_in_use("erin@example.com")
    check(ctx.api.delete(f"/api/2.0/preview/scim/v2/Users/{user['id']}", ctx.admin).status in (200, 204), "delete erin")
    del ctx.users["erin@example.com"]  # later categories give every known user access
    expect_ok(ctx.api.post("/api/2.0/preview/scim/v2/Users", ctx.admin, {"userName": "frank@example.com"}), "frank")
    unauthenticated(ctx, pat, "invalid personal access token")


@case(REPLAY, "revoking garbage or someone else's token answers 200 and changes nothing")
def _(ctx):
    check(ctx.api.form("/oidc/v1/revoke", {"token": "garbage"}).status == 200, "garbage revoke")
    forged = reforge(_alice_jwt(ctx), claim_changes={"jti": "x"})
    check(ctx.api.form("/oidc/v1/revoke", {"token": forged}).status == 200, "forged revoke")
    expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", _alice_jwt(ctx)), "alice still works")


@case(REPLAY, "expired PAT and expired exchanged subject")
def _(ctx):
    pat = ctx.pat_for("carol@example.com", lifetime=1)
    time.sleep(1.5)
    unauthenticated(ctx, pat, "personal access token has expired")
    expect_oauth_error(ctx.exchange(pat, TT_PAT), 400, "invalid_grant", "personal access token has expired")
    claims = genuine_claims(ctx, _alice_jwt(ctx))
    now = int(time.time())
    expired = real_sign(ctx, {**claims, "iat": now - 100, "nbf": now - 100, "exp": now - 1, "jti": "expired-x"})
    expect_oauth_error(ctx.exchange(expired), 400, "invalid_grant", "token has expired")


@case(REPLAY, "a deactivated user's tokens and delegated tokens stop working")
def _(ctx):
    user = expect_ok(ctx.api.post("/api/2.0/preview/scim/v2/Users", ctx.admin, {"userName": "dave@example.com"}), "dave")
    ctx.users["dave@example.com"] = user
    pat = ctx.pat_for("dave@example.com")
    delegated = expect_ok(ctx.exchange(pat, TT_PAT, actor_token=ctx.sp_token("agent-a"), actor_token_type=TT_ACCESS),
                          "delegate")["access_token"]
    expect_ok(ctx.api.patch(f"/api/2.0/preview/scim/v2/Users/{user['id']}", ctx.admin,
                            {"Operations": [{"op": "replace", "path": "active", "value": False}]}), "deactivate")
    unauthenticated(ctx, pat, "no longer exists or is inactive")
    unauthenticated(ctx, delegated, "no longer exists or is inactive")


@case(REPLAY, "a token exchanged from a JWT is refused once that JWT is revoked")
def _(ctx):
    parent = ctx.jwt(ctx.alice)
    child = expect_ok(ctx.exchange(parent, actor_token=ctx.sp_token("agent-a"), actor_token_type=TT_ACCESS),
                      "child")["access_token"]
    expect_ok(ctx.api.form("/oidc/v1/revoke", {"token": parent}), "revoke parent")
    unauthenticated(ctx, child, "revoked")


@case(REPLAY, "a token exchanged from a PAT is refused once that PAT is revoked")
def _(ctx):
    pat = ctx.pat_for("alice@example.com")
    child = ctx.jwt(pat)
    expect_ok(ctx.api.form("/oidc/v1/revoke", {"token": pat}), "revoke PAT")
    unauthenticated(ctx, child, "revoked")


# ---- another user's objects by id ----------------------------------------------------------------------------------

CROSS = "cross-user"


@case(CROSS, "another user's statement, result chunk and cancel read as missing (404, not 403)")
def _(ctx):
    reply = ctx.sql(ctx.alice, "SELECT 'alice-private' AS v")
    statement_id = expect_ok(reply, "alice's statement")["statement_id"]
    expect_ok(ctx.api.get(f"/api/2.0/sql/statements/{statement_id}", ctx.alice), "alice reads her own")
    for token in [ctx.bob, ctx.admin]:
        expect_api_error(ctx.api.get(f"/api/2.0/sql/statements/{statement_id}", token), 404,
                         "RESOURCE_DOES_NOT_EXIST", f"statement `{statement_id}` does not exist")
        expect_api_error(ctx.api.get(f"/api/2.0/sql/statements/{statement_id}/result/chunks/0", token), 404,
                         "RESOURCE_DOES_NOT_EXIST", "does not exist")
        expect_api_error(ctx.api.post(f"/api/2.0/sql/statements/{statement_id}/cancel", token), 404,
                         "RESOURCE_DOES_NOT_EXIST", "does not exist")
    # The same answer as for an id that never existed, so the reply is no oracle.
    missing = ctx.api.get("/api/2.0/sql/statements/00000000-0000-0000-0000-000000000000", ctx.bob)
    expect_api_error(missing, 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    # Alice's own delegated token (same user, agent as actor) still sees it: ownership is by principal.
    delegated = expect_ok(ctx.exchange(ctx.alice, TT_PAT, actor_token=ctx.sp_token("agent-a"),
                                       actor_token_type=TT_ACCESS), "delegate")["access_token"]
    expect_ok(ctx.api.get(f"/api/2.0/sql/statements/{statement_id}", delegated), "alice via agent")
    # The agent's own identity does not.
    expect_api_error(ctx.api.get(f"/api/2.0/sql/statements/{statement_id}", ctx.sp_token("agent-a")), 404,
                     "RESOURCE_DOES_NOT_EXIST", "does not exist")


@case(CROSS, "another user's personal access tokens cannot be listed, read or deleted")
def _(ctx):
    alice_ids = [t["token_id"] for t in ctx.api.get("/api/2.0/token/list", ctx.alice).body["token_infos"]]
    bob_list = ctx.api.get("/api/2.0/token/list", ctx.bob).body["token_infos"]
    check(not set(alice_ids) & {t["token_id"] for t in bob_list}, "bob lists alice's tokens")
    expect_api_error(ctx.api.post("/api/2.0/token/delete", ctx.bob, {"token_id": alice_ids[0]}), 404,
                     "RESOURCE_DOES_NOT_EXIST", "does not exist")
    expect_api_error(ctx.api.get(f"/api/2.0/token-management/tokens/{alice_ids[0]}", ctx.bob), 403,
                     "PERMISSION_DENIED", "only members of the `admins` group")
    expect_api_error(ctx.api.delete(f"/api/2.0/token-management/tokens/{alice_ids[0]}", ctx.bob), 403,
                     "PERMISSION_DENIED", "only members of the `admins` group")
    expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", ctx.alice), "alice's token survived")


@case(CROSS, "a user cannot make themself admin, make users, mint OBO tokens, read SP secrets or rotate keys")
def _(ctx):
    bob_id = ctx.users["bob@example.com"]["id"]
    admins = ctx.api.get("/api/2.0/preview/scim/v2/Groups", ctx.admin, params={"filter": 'displayName eq "admins"'})
    admins_id = admins.body["Resources"][0]["id"]
    denied = "only members of the `admins` group"
    expect_api_error(ctx.api.patch(f"/api/2.0/preview/scim/v2/Groups/{admins_id}", ctx.bob,
                                   {"Operations": [{"op": "add", "path": "members", "value": [{"value": bob_id}]}]}),
                     403, "PERMISSION_DENIED", denied)
    expect_api_error(ctx.api.post("/api/2.0/preview/scim/v2/Users", ctx.bob, {"userName": "mallory@example.com"}),
                     403, "PERMISSION_DENIED", denied)
    expect_api_error(ctx.api.post("/api/2.0/token-management/on-behalf-of/tokens", ctx.bob,
                                  {"application_id": ctx.users["alice@example.com"]["id"]}), 403, "PERMISSION_DENIED", denied)
    sp = ctx.sps["agent-a"]["id"]
    expect_api_error(ctx.api.get(f"/api/2.0/accounts/servicePrincipals/{sp}/credentials/secrets", ctx.bob), 403,
                     "PERMISSION_DENIED", denied)
    expect_api_error(ctx.api.post(f"/api/2.0/accounts/servicePrincipals/{sp}/credentials/secrets", ctx.bob, {}), 403,
                     "PERMISSION_DENIED", denied)
    expect_api_error(ctx.api.post("/api/2.0/deputy/keys/rotate", ctx.bob), 403, "PERMISSION_DENIED", denied)
    me = ctx.api.get("/api/2.0/preview/scim/v2/Me", ctx.bob).body
    check(all(g["display"] != "admins" for g in me.get("groups", [])), "bob became admin")


@case(CROSS, "a user cannot grant themself privileges or warehouse access")
def _(ctx):
    expect_api_error(ctx.api.patch("/api/2.1/unity-catalog/permissions/table/sec.hr.secret", ctx.bob,
                                   {"changes": [{"principal": "bob@example.com", "add": ["SELECT"]}]}),
                     404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    expect_api_error(ctx.api.patch("/api/2.1/unity-catalog/permissions/table/sec.hr.staff", ctx.bob,
                                   {"changes": [{"principal": "bob@example.com", "add": ["MODIFY"]}]}),
                     403, "PERMISSION_DENIED", "")
    reply = ctx.api.patch(f"/api/2.0/permissions/warehouses/{ctx.warehouse}", ctx.bob,
                          {"access_control_list": [{"user_name": "bob@example.com", "permission_level": "CAN_MANAGE"}]})
    expect_api_error(reply, 403, "PERMISSION_DENIED", "")
    rows = ctx.sql(ctx.bob, "GRANT SELECT ON TABLE sec.hr.secret TO `bob@example.com`")
    check(rows.body["status"]["state"] == "FAILED", f"SQL GRANT by bob: {rows.body['status']}")


@case(CROSS, "another user's conversation reads, grows and deletes like a missing one; an agent cannot touch its user's")
def _(ctx):
    conversations = "/api/2.0/deputy/conversations"
    started = expect_ok(ctx.api.post(conversations, ctx.alice, {"endpoint_name": "deputy-chat-smollm2",
                                                                 "title": "alice-private"}), "alice's conversation")
    unknown = "0" * 32
    message = {"role": "user", "content": "someone else was here"}

    def calls(token, conversation_id):
        path = f"{conversations}/{conversation_id}"
        return [ctx.api.get(path, token), ctx.api.post(f"{path}/messages", token, message), ctx.api.delete(path, token)]

    for token in [ctx.bob, ctx.admin]:
        for reply, control in zip(calls(token, started["id"]), calls(token, unknown)):
            expect_api_error(reply, 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
            check(reply.body["message"].replace(started["id"], "X") == control.body["message"].replace(unknown, "X"),
                  f"someone else's and a missing conversation differ: {reply!r} vs {control!r}")
        listed = expect_ok(ctx.api.get(conversations, token), "list")["conversations"]
        check(all(c["id"] != started["id"] for c in listed), f"alice's conversation listed: {listed}")
    agent = ctx.delegated(ctx.alice)
    for reply in calls(agent, started["id"]) + [ctx.api.get(conversations, agent)]:
        expect_api_error(reply, 403, "PERMISSION_DENIED", "names an actor")
    mine = expect_ok(ctx.api.get(f"{conversations}/{started['id']}", ctx.alice), "alice reads her own")
    check(mine["messages"] == [] and mine["title"] == "alice-private", f"changed by someone else: {mine}")


@case(CROSS, "hidden tables read exactly like missing ones")
def _(ctx):
    hidden = ctx.api.get("/api/2.1/unity-catalog/tables/sec.hr.secret", ctx.bob)
    missing = ctx.api.get("/api/2.1/unity-catalog/tables/sec.hr.nothing", ctx.bob)
    expect_api_error(hidden, 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    expect_api_error(missing, 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    check(hidden.body["message"].replace("secret", "X") == missing.body["message"].replace("nothing", "X"),
          f"hidden and missing differ: {hidden.body} vs {missing.body}")
    sql_hidden = ctx.sql(ctx.bob, "SELECT * FROM sec.hr.secret").body["status"]
    sql_missing = ctx.sql(ctx.bob, "SELECT * FROM sec.hr.nothing").body["status"]
    check(sql_hidden["state"] == sql_missing["state"] == "FAILED", f"{sql_hidden} / {sql_missing}")
    check(sql_hidden["error"]["message"].replace("secret", "X") == sql_missing["error"]["message"].replace("nothing", "X"),
          f"SQL hidden and missing differ: {sql_hidden} vs {sql_missing}")


# ---- SQL that tries to read around row filters and column masks ---------------------------------------------------

POLICY = "row-filters-masks"

# bob may SELECT sec.hr.staff; the row filter lets him see dept = 'eng' (ids 1 and 3), the mask hides ssn.
POLICY_CASES = [
    ("plain select", "SELECT id, ssn FROM sec.hr.staff ORDER BY id", [["1", "***"], ["3", "***"]]),
    ("select star", "SELECT * FROM sec.hr.staff ORDER BY id",
     [["1", "Ann", "***", "eng", "100"], ["3", "Cid", "***", "eng", "300"]]),
    ("self-join", "SELECT a.id, b.id FROM sec.hr.staff a JOIN sec.hr.staff b ON a.dept = b.dept AND a.id < b.id",
     [["1", "3"]]),
    ("cross join count", "SELECT count(*) FROM sec.hr.staff a, sec.hr.staff b", [["4"]]),
    ("cte", "WITH x AS (SELECT * FROM sec.hr.staff) SELECT count(*), sum(salary) FROM x", [["2", "400"]]),
    ("subquery in where", "SELECT count(*) FROM sec.hr.staff WHERE id IN (SELECT id FROM sec.hr.staff WHERE salary > 0)",
     [["2"]]),
    ("scalar subquery", "SELECT (SELECT max(salary) FROM sec.hr.staff)", [["300"]]),
    ("derived table", "SELECT count(*) FROM (SELECT ssn FROM sec.hr.staff WHERE ssn LIKE 'ssn-%') t", [["0"]]),
    ("union", "SELECT dept FROM sec.hr.staff UNION SELECT dept FROM sec.hr.staff", [["eng"]]),
    ("union all of the masked column", "SELECT ssn FROM sec.hr.staff UNION ALL SELECT ssn FROM sec.hr.staff",
     [["***"]] * 4),
    ("count star", "SELECT count(*) FROM sec.hr.staff", [["2"]]),
    ("aggregates", "SELECT count(*), sum(salary), min(ssn), max(ssn) FROM sec.hr.staff", [["2", "400", "***", "***"]]),
    ("group by", "SELECT dept, count(*) FROM sec.hr.staff GROUP BY dept ORDER BY dept", [["eng", "2"]]),
    ("null dept", "SELECT count(*) FROM sec.hr.staff WHERE dept IS NULL", [["0"]]),
    ("window functions",
     "SELECT id, sum(salary) OVER (), row_number() OVER (ORDER BY id), lag(ssn) OVER (ORDER BY id) FROM sec.hr.staff ORDER BY id",
     [["1", "400", "1", None], ["3", "400", "2", "***"]]),
    ("WHERE masked_col = 'secret-value'", "SELECT id FROM sec.hr.staff WHERE ssn = 'ssn-111'", []),
    ("LIKE on the masked column", "SELECT count(*) FROM sec.hr.staff WHERE ssn LIKE 'ssn-2%' OR ssn LIKE 'ssn-1%'", [["0"]]),
    ("filter on hidden rows' values", "SELECT count(*) FROM sec.hr.staff WHERE dept = 'ops' OR id IN (2, 4, 5)", [["0"]]),
    ("division by zero probe", "SELECT id FROM sec.hr.staff WHERE 1 / (CASE WHEN dept = 'ops' THEN 0 ELSE 1 END) = 1 ORDER BY id",
     [["1"], ["3"]]),
    ("limit", "SELECT id FROM sec.hr.staff ORDER BY id DESC LIMIT 10", [["3"], ["1"]]),
    ("expression over the masked column", "SELECT DISTINCT length(ssn), upper(ssn) FROM sec.hr.staff", [["3", "***"]]),
    ("order by the masked column leaks no order", "SELECT id FROM sec.hr.staff ORDER BY ssn, id", [["1"], ["3"]]),
]


def _policy_case(name, statement, expected):
    @case(POLICY, name)
    def _(ctx):
        rows = ctx.sql_ok(ctx.bob, statement)
        got, want = rows, expected
        if "ORDER BY" not in statement:
            got, want = sorted(rows, key=str), sorted(expected, key=str)
        check(got == want, f"{statement}\n    expected {want}\n    got      {got}")


for _name, _statement, _expected in POLICY_CASES:
    _policy_case(_name, _statement, _expected)


@case(POLICY, "admin sees everything (control)")
def _(ctx):
    rows = ctx.sql_ok(ctx.admin, "SELECT count(*), min(ssn) FROM sec.hr.staff")
    check(rows == [["5", "ssn-111"]], f"admin sees {rows}")


@case(POLICY, "EXPLAIN shows the policy node and no data")
def _(ctx):
    rows = ctx.sql_ok(ctx.bob, "EXPLAIN SELECT ssn FROM sec.hr.staff WHERE ssn = 'ssn-111'")
    text = json.dumps(rows)
    check("DeputyPolicyExec" in text, f"no policy node in plan: {text[:500]}")
    check("ssn-222" not in text and "ssn-333" not in text, "plan shows data")


@case(POLICY, "information_schema lists only what bob may see")
def _(ctx):
    tables = ctx.sql_ok(ctx.bob, "SELECT table_schema, table_name FROM sec.information_schema.tables")
    names = {f"{schema}.{table}" for schema, table in tables}
    check("hr.staff" in names, f"bob's own table is listed: {sorted(names)}")
    check("hr.secret" not in names, f"a table bob cannot use is hidden: {sorted(names)}")
    columns = ctx.sql_ok(ctx.bob, "SELECT table_name, column_name FROM sec.information_schema.columns")
    check(all(table != "secret" for table, _ in columns), f"no column of a hidden table: {columns}")


@case(POLICY, "CTAS and INSERT ... SELECT copy only what bob may see")
def _(ctx):
    ctx.sql_ok(ctx.bob, "CREATE TABLE sec.scratch.mine AS SELECT * FROM sec.hr.staff")
    rows = ctx.sql_ok(ctx.bob, "SELECT id, ssn FROM sec.scratch.mine ORDER BY id")
    check(rows == [["1", "***"], ["3", "***"]], f"bob's copy: {rows}")
    ctx.sql_ok(ctx.bob, "INSERT INTO sec.scratch.mine SELECT * FROM sec.hr.staff")
    rows = ctx.sql_ok(ctx.admin, "SELECT count(*), max(ssn) FROM sec.scratch.mine")
    check(rows == [["4", "***"]], f"admin reads bob's copy: {rows}")


@case(POLICY, "bob cannot drop or alter the policy, nor write the protected table")
def _(ctx):
    for statement in ["ALTER TABLE sec.hr.staff DROP ROW FILTER",
                      "ALTER TABLE sec.hr.staff ALTER COLUMN ssn DROP MASK",
                      "INSERT INTO sec.hr.staff VALUES (9, 'Mal', 'x', 'eng', 1)",
                      "DROP TABLE sec.hr.staff",
                      "CREATE OR REPLACE FUNCTION sec.hr.eng_only(d STRING) RETURNS BOOLEAN RETURN true"]:
        status = ctx.sql(ctx.bob, statement).body["status"]
        check(status["state"] == "FAILED", f"{statement}: {status}")
    rows = ctx.sql_ok(ctx.bob, "SELECT count(*) FROM sec.hr.staff")
    check(rows == [["2"]], f"after attempts bob sees {rows}")


@case(POLICY, "a view bob creates over the table still applies the policy")
def _(ctx):
    reply = ctx.sql(ctx.bob, "CREATE VIEW sec.scratch.v AS SELECT * FROM sec.hr.staff")
    if reply.body["status"]["state"] == "SUCCEEDED":
        rows = ctx.sql_ok(ctx.bob, "SELECT count(*), max(ssn) FROM sec.scratch.v")
        check(rows == [["2", "***"]], f"through bob's view: {rows}")
    else:
        check("CREATE" in json.dumps(reply.body["status"]).upper(), f"view refused oddly: {reply.body['status']}")


# ---- path and name injection ---------------------------------------------------------------------------------------

INJECT = "injection"

BAD_SEGMENTS = ["..", "a/b", "a\\b", "a`b", "a'b", 'a"b', "a b", "аdmin", "ｍain", "x;DROP TABLE y", "a\u0000b",
                "a\u202eb", "x" * 256]


@case(INJECT, "catalog names with .., /, backticks, quotes, confusables, SQL")
def _(ctx):
    for name in BAD_SEGMENTS:
        reply = ctx.api.post("/api/2.1/unity-catalog/catalogs", ctx.admin, {"name": name})
        expect_api_error(reply, 400, "INVALID_PARAMETER_VALUE", "dot-separated parts" if "." in name else "invalid name")
    expect_api_error(ctx.api.post("/api/2.1/unity-catalog/catalogs", ctx.admin, {"name": "a.b"}), 400,
                     "INVALID_PARAMETER_VALUE", "dot-separated parts")


@case(INJECT, "schema and table names with injection in a segment")
def _(ctx):
    for name in BAD_SEGMENTS[:8]:
        expect_api_error(ctx.api.post("/api/2.1/unity-catalog/schemas", ctx.admin, {"catalog_name": "sec", "name": name}),
                         400, "INVALID_PARAMETER_VALUE", "dot-separated parts" if "." in name else "invalid name")
    expect_api_error(ctx.api.patch("/api/2.1/unity-catalog/tables/sec.hr.staff", ctx.admin, {"new_name": "../x"}),
                     400, "INVALID_PARAMETER_VALUE", "dot-separated parts")
    expect_api_error(ctx.api.patch("/api/2.1/unity-catalog/tables/sec.hr.staff", ctx.admin, {"new_name": "a`b"}),
                     400, "INVALID_PARAMETER_VALUE", "invalid name")


@case(INJECT, "path traversal in path parameters")
def _(ctx):
    for path in ["/api/2.1/unity-catalog/tables/sec.hr.%2e%2e%2fsecret",
                 "/api/2.1/unity-catalog/tables/sec.hr.staff%2f..%2f..%2fmetadata.db",
                 "/api/2.1/unity-catalog/catalogs/%2e%2e",
                 "/api/2.1/unity-catalog/schemas/sec.%60hr%60"]:
        reply = ctx.api.get(path, ctx.bob)
        check(reply.status in (400, 404) and reply.get("error_code") in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"),
              f"{path}: {reply!r}")


@case(INJECT, "SQL identifiers with quotes and traversal")
def _(ctx):
    for statement in ["CREATE TABLE sec.scratch.`../../etc` (x INT)", "CREATE TABLE sec.scratch.`a/b` (x INT)",
                      "CREATE SCHEMA sec.`а`", "SELECT * FROM sec.hr.`staff; DROP TABLE sec.hr.staff`"]:
        status = ctx.sql(ctx.bob if "SELECT" in statement else ctx.admin, statement).body["status"]
        check(status["state"] == "FAILED", f"{statement}: {status}")
    check(ctx.sql_ok(ctx.admin, "SELECT count(*) FROM sec.hr.staff") == [["5"]], "staff damaged")


@case(INJECT, "SQL injection through :param values")
def _(ctx):
    for value in ["x' OR '1'='1", "eng' OR dept <> 'eng", "1; DROP TABLE sec.hr.staff; --", "' UNION SELECT ssn FROM sec.hr.staff --"]:
        rows = ctx.sql_ok(ctx.bob, "SELECT id FROM sec.hr.staff WHERE name = :n", [{"name": "n", "value": value}])
        check(rows == [], f"{value!r} matched {rows}")
    rows = ctx.sql_ok(ctx.bob, "SELECT id FROM sec.hr.staff WHERE name = :n", [{"name": "n", "value": "Ann"}])
    check(rows == [["1"]], f"control: {rows}")
    check(ctx.sql_ok(ctx.admin, "SELECT count(*) FROM sec.hr.staff") == [["5"]], "staff damaged")


@case(INJECT, "SQL parameter names and types as injection vectors")
def _(ctx):
    reply = ctx.sql(ctx.bob, "SELECT :n", [{"name": "n) OR (1=1", "value": "x"}])
    check(reply.status in (200, 400), f"{reply!r}")
    if reply.status == 200:
        check(reply.body["status"]["state"] == "FAILED", f"odd parameter name accepted: {reply.body['status']}")
    else:
        expect_api_error(reply, 400, "INVALID_PARAMETER_VALUE", "")
    # The type is mapped to an Arrow type, never spliced into SQL: nothing it says runs.
    ctx.sql(ctx.bob, "SELECT :n", [{"name": "n", "value": "1", "type": "INT); DROP TABLE sec.hr.staff; --"}])
    check(ctx.sql_ok(ctx.admin, "SELECT count(*) FROM sec.hr.staff") == [["5"]], "staff damaged")


@case(INJECT, "a parameter type with trailing text is refused, not read as its first word")
def _(ctx):
    reply = ctx.sql(ctx.bob, "SELECT :n", [{"name": "n", "value": "1", "type": "INT); DROP TABLE sec.hr.staff; --"}])
    check(reply.status == 400 or reply.body["status"]["state"] == "FAILED",
          f"type `INT); DROP TABLE ...` accepted as INT: {reply!r}")


@case(INJECT, "grant to principals with injected names")
def _(ctx):
    for principal in ["bob@example.com` TO `admins", "admins'--", "../admins", "аdmins"]:
        reply = ctx.api.patch("/api/2.1/unity-catalog/permissions/catalog/sec", ctx.admin,
                              {"changes": [{"principal": principal, "add": ["USE_CATALOG"]}]})
        expect_api_error(reply, 400, "INVALID_PARAMETER_VALUE", "does not exist")


@case(INJECT, "SCIM user names: UUID, control characters, padding, overlong")
def _(ctx):
    for name, phrase in [(str(uuid.uuid4()), "must not be a UUID"), ("a\nb@example.com", "control characters"),
                         (" padded@example.com", "surrounding spaces"), ("x" * 256, "longer than 255")]:
        expect_api_error(ctx.api.post("/api/2.0/preview/scim/v2/Users", ctx.admin, {"userName": name}), 400,
                         "INVALID_PARAMETER_VALUE", phrase)


@case(INJECT, "SCIM filter injection")
def _(ctx):
    reply = ctx.api.get("/api/2.0/preview/scim/v2/Users", ctx.admin,
                        params={"filter": 'userName eq "x" or userName pr'})
    check(reply.status == 400 or (reply.status == 200 and reply.body.get("totalResults") == 0), f"{reply!r}")


# ---- malformed and oversized bodies on every body-taking route -----------------------------------------------------

BODIES = "malformed-bodies"

# Every POST/PATCH/PUT route of the server that reads a JSON body, with a path that exists (extractor order means
# the body is parsed before the handler looks anything up, but a real path keeps the case honest).
def json_routes(ctx):
    alice_id = ctx.users["alice@example.com"]["id"]
    group_id = ctx.group["id"]
    sp = ctx.sps["agent-a"]["id"]
    return [
        ("POST", "/api/2.0/preview/scim/v2/Users"),
        ("PUT", f"/api/2.0/preview/scim/v2/Users/{alice_id}"),
        ("PATCH", f"/api/2.0/preview/scim/v2/Users/{alice_id}"),
        ("POST", "/api/2.0/preview/scim/v2/Groups"),
        ("PUT", f"/api/2.0/preview/scim/v2/Groups/{group_id}"),
        ("PATCH", f"/api/2.0/preview/scim/v2/Groups/{group_id}"),
        ("POST", "/api/2.0/preview/scim/v2/ServicePrincipals"),
        ("PUT", f"/api/2.0/preview/scim/v2/ServicePrincipals/{sp}"),
        ("PATCH", f"/api/2.0/preview/scim/v2/ServicePrincipals/{sp}"),
        ("POST", f"/api/2.0/accounts/servicePrincipals/{sp}/credentials/secrets"),
        ("POST", "/api/2.0/token/create"),
        ("POST", "/api/2.0/token/delete"),
        ("POST", "/api/2.0/token-management/on-behalf-of/tokens"),
        ("POST", "/api/2.1/unity-catalog/catalogs"),
        ("PATCH", "/api/2.1/unity-catalog/catalogs/sec"),
        ("POST", "/api/2.1/unity-catalog/schemas"),
        ("PATCH", "/api/2.1/unity-catalog/schemas/sec.hr"),
        ("POST", "/api/2.1/unity-catalog/tables"),
        ("PATCH", "/api/2.1/unity-catalog/tables/sec.hr.staff"),
        ("POST", "/api/2.1/unity-catalog/functions"),
        ("PATCH", "/api/2.1/unity-catalog/functions/sec.hr.eng_only"),
        ("POST", "/api/2.1/unity-catalog/volumes"),
        ("PATCH", "/api/2.1/unity-catalog/volumes/sec.hr.vol"),
        ("POST", "/api/2.1/unity-catalog/connections"),
        ("PATCH", "/api/2.1/unity-catalog/connections/conn"),
        ("PATCH", "/api/2.1/unity-catalog/permissions/table/sec.hr.staff"),
        ("PUT", f"/api/2.0/permissions/warehouses/{ctx.warehouse}"),
        ("PATCH", f"/api/2.0/permissions/warehouses/{ctx.warehouse}"),
        ("POST", "/api/2.0/sql/statements"),
        ("POST", "/api/2.0/sql/statements/"),
        ("POST", "/api/2.0/sql/warehouses"),
        ("POST", f"/api/2.0/sql/warehouses/{ctx.warehouse}/edit"),
        ("POST", "/api/2.0/external-function"),
        ("POST", "/api/2.0/serving-endpoints"),
        ("POST", "/api/2.0/deputy/agents"),
        ("PATCH", "/api/2.0/deputy/settings"),
        ("POST", "/api/2.0/vector-search/endpoints"),
        ("POST", "/api/2.0/vector-search/indexes"),
        ("POST", f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/query"),
        ("GET", f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/query"),
        ("POST", f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/query-next-page"),
        ("POST", f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/upsert-data"),
        ("POST", f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/delete-data"),
    ]


# Routes whose body is any JSON value (a model's payload): malformed JSON is refused like anywhere else, but a
# well-formed value of another shape is the model's business, so they are not in the wrong-types case.
def payload_routes(ctx):
    return [
        ("POST", "/serving-endpoints/deputy-chat-smollm2/invocations"),
        ("POST", "/serving-endpoints/chat/completions"),
        ("POST", "/serving-endpoints/embeddings"),
    ]


FORM_ROUTES = ["/oidc/v1/token", "/oidc/v1/revoke", "/oidc/v1/introspect"]

MALFORMED_BODIES = [
    ("truncated object", b'{"name": "x"'),
    ("bare word", b"nonsense"),
    ("invalid UTF-8 outside strings", b'\xff{}'),
    ("invalid UTF-8 inside a string", b'{"name": "\xff\xfe"}'),
    ("trailing garbage", b'{"name": "x"} {"name": "y"}'),
    ("NUL bytes", b'{"name\x00": 1}'),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
]


def _malformed_case(label, raw):
    @case(BODIES, f"{label} on every JSON route -> 400 MALFORMED_REQUEST")
    def _(ctx):
        failures = []
        for method, path in json_routes(ctx) + payload_routes(ctx):
            reply = ctx.api.call(method, path, ctx.admin, data=raw, headers={"Content-Type": "application/json"})
            if not (reply.status == 400 and reply.get("error_code") == "MALFORMED_REQUEST"
                    and "could not parse the request body as json" in reply.get("message", "").lower()):
                failures.append(f"{method} {path}: {reply!r}")
        check(not failures, "\n    ".join(failures))


for _label, _raw in MALFORMED_BODIES:
    _malformed_case(_label, _raw)


@case(BODIES, "wrong JSON types on every JSON route -> 400, never 500")
def _(ctx):
    failures = []
    for body in [b"[1,2,3]", b'"text"', b"12", b"null", b'{"name": {"$ne": null}, "changes": 5, "statement": []}']:
        for method, path in json_routes(ctx):
            reply = ctx.api.call(method, path, ctx.admin, data=body)
            if reply.status >= 500 or reply.status == 200 and body in (b"[1,2,3]", b'"text"', b"12"):
                failures.append(f"{method} {path} {body[:20]!r}: {reply!r}")
            elif reply.status >= 400 and reply.get("error_code") not in ("MALFORMED_REQUEST", "INVALID_PARAMETER_VALUE",
                                                                          "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                                                                          "PERMISSION_DENIED"):
                failures.append(f"{method} {path} {body[:20]!r}: unexpected {reply!r}")
    check(not failures, "\n    ".join(failures))


@case(BODIES, "body over 16 MiB on every JSON route -> 413 REQUEST_LIMIT_EXCEEDED")
def _(ctx):
    big = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    failures = []
    for method, path in json_routes(ctx) + payload_routes(ctx):
        try:
            reply = ctx.api.call(method, path, ctx.admin, data=big)
        except Exception as error:  # the server may close while the client still sends
            failures.append(f"{method} {path}: connection error {type(error).__name__}")
            continue
        if not (reply.status == 413 and reply.get("error_code") == "REQUEST_LIMIT_EXCEEDED"
                and "too large" in reply.get("message", "")):
            failures.append(f"{method} {path}: {reply!r}")
    check(not failures, "\n    ".join(failures))


@case(BODIES, "body over 16 MiB on the OAuth form routes -> 413 with an OAuth error body")
def _(ctx):
    big = b"token=" + b"x" * (MAX_BODY_BYTES + 1)
    failures = []
    for path in FORM_ROUTES:
        reply = ctx.api.call("POST", path, ctx.admin, data=big,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        if not (reply.status == 413 and isinstance(reply.body, dict) and reply.get("error") == "invalid_request"):
            failures.append(f"POST {path}: {reply!r} content-type={reply.headers.get('content-type')}")
    check(not failures, "\n    ".join(failures))


@case(BODIES, "malformed forms on the OAuth routes -> 400 invalid_request")
def _(ctx):
    failures = []
    for path in FORM_ROUTES:
        for raw in [b"\xff\xfe=%%%", b"token=%zz", b"grant_type=client_credentials&grant_type=x"]:
            reply = ctx.api.call("POST", path, ctx.admin, data=raw,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
            if reply.status >= 500 or reply.status == 200 and path == "/oidc/v1/token":
                failures.append(f"{path} {raw!r}: {reply!r}")
            elif reply.status != 200 and reply.get("error") not in ("invalid_request", "unsupported_grant_type",
                                                                   "invalid_client"):
                failures.append(f"{path} {raw!r}: {reply!r}")
    check(not failures, "\n    ".join(failures))


@case(BODIES, "unknown routes and methods answer the Databricks 404/405 shape")
def _(ctx):
    expect_api_error(ctx.api.get("/api/2.0/nothing/here", ctx.admin), 404, "ENDPOINT_NOT_FOUND", "no API found")
    reply = ctx.api.call("DELETE", "/api/2.0/sql/statements", ctx.admin)
    check(reply.status in (404, 405), f"{reply!r}")


# ---- external functions: SSRF and path injection through HTTP connections -----------------------------------------

EXTFN = "external-function"
ESCAPING_PATHS = [
    "//evil.example/x", "///evil.example/x", "http://evil.example/x", "HTTPS://evil.example/x", "evil.example:80/x",
    "/../x", "../x", "a/../../x", "a/./b", "%2e%2e/x", "%2E%2e/x", ".%2e/x", "a%2f..%2f..%2fx", "a%5c..%5cx",
    "\\evil.example/x", "/\\evil.example/x", "@evil.example/x", "a@evil.example", "%40evil.example/x",
    "a%252e%252e/x", "a\r\nHost: evil.example", "a%0d%0aHost:%20evil", "a%00b", "a b", "a//b", "a?x=1", "a#f",
    "caf\u00e9", "%zz", "a%2",
]


def _external(ctx, token, **fields):
    body = {"connection_name": ctx.http_connection()[0], "method": "GET", "path": "ok"}
    body.update(fields)
    return ctx.api.post("/api/2.0/external-function", token, body)


@case(EXTFN, "control: alice reaches the upstream below the base path with the connection's token")
def _(ctx):
    _, seen = ctx.http_connection()
    before = len(seen)
    reply = _external(ctx, ctx.alice, path="/v1/ok", params=json.dumps({"q": "1"}))
    check(reply.status == 200 and reply.body == {"ok": True}, f"{reply!r}")
    check(seen[before:] == [f"GET /api/v1/ok?q=1 Bearer {CONNECTION_SECRET}"], f"upstream saw {seen[before:]}")


@case(EXTFN, "paths that would leave the host or the base path (//host, URLs, .., encodings, \\, @, CRLF) -> 400")
def _(ctx):
    _, seen = ctx.http_connection()
    before = len(seen)
    failures = []
    for path in ESCAPING_PATHS:
        reply = _external(ctx, ctx.alice, path=path)
        if not (reply.status == 400 and reply.get("error_code") == "INVALID_PARAMETER_VALUE"
                and str(reply.get("message", "")).startswith("`path`")):
            failures.append(f"{path!r}: {reply!r}")
    check(not failures, "\n    ".join(failures))
    check(len(seen) == before, f"refused calls reached the upstream: {seen[before:]}")


@case(EXTFN, "sub_domain other than one DNS label -> 400")
def _(ctx):
    for label in ["evil.example", "a/b", "a@b", "-a", "a:80", "x" * 64, "a%2eb", "127.0.0.1"]:
        expect_api_error(_external(ctx, ctx.alice, sub_domain=label), 400, "INVALID_PARAMETER_VALUE", "sub_domain")


@case(EXTFN, "caller headers cannot replace Authorization or Host, nor inject lines -> 400")
def _(ctx):
    for headers, phrase in [({"Authorization": "Bearer attacker"}, "set by the connection"),
                            ({"host": "evil.example"}, "set by the connection"),
                            ({"Proxy-Authorization": "x"}, "set by the connection"),
                            ({"Transfer-Encoding": "chunked"}, "set by the connection"),
                            ({"X-A": "1\r\nAuthorization: Bearer attacker"}, "not a valid header value"),
                            ({"Bad Name": "1"}, "not a valid header name")]:
        expect_api_error(_external(ctx, ctx.alice, headers=json.dumps(headers)), 400, "INVALID_PARAMETER_VALUE", phrase)


@case(EXTFN, "a user without USE_CONNECTION -> 403 naming it; nothing is sent")
def _(ctx):
    _, seen = ctx.http_connection()
    before = len(seen)
    expect_api_error(_external(ctx, ctx.bob), 403, "PERMISSION_DENIED", "USE_CONNECTION on sec_http")
    expect_api_error(_external(ctx, ctx.delegated(ctx.bob)), 403, "PERMISSION_DENIED", "USE_CONNECTION on sec_http")
    check(len(seen) == before, f"refused calls reached the upstream: {seen[before:]}")


@case(EXTFN, "a token without catalog.connections -> 403 naming the scope")
def _(ctx):
    expect_api_error(_external(ctx, ctx.alice_sql), 403, "PERMISSION_DENIED", "catalog.connections")


@case(EXTFN, "an upstream redirect is not followed (the token never goes elsewhere)")
def _(ctx):
    _, seen = ctx.http_connection()
    before = len(seen)
    reply = _external(ctx, ctx.alice, path="redirect")
    check(reply.status == 302 and "location" not in {k.lower() for k in reply.headers}, f"{reply!r} {reply.headers}")
    check(len(seen) == before + 1 and "/steal" not in " ".join(seen), f"upstream saw {seen[before:]}")


@case(EXTFN, "the connection's secret is never returned, by the call or by the connection's metadata")
def _(ctx):
    name, _ = ctx.http_connection()
    for reply in [_external(ctx, ctx.alice), ctx.api.get(f"/api/2.1/unity-catalog/connections/{name}", ctx.admin),
                  ctx.api.get("/api/2.0/deputy/audit?limit=1000", ctx.admin)]:
        check(reply.status == 200 and CONNECTION_SECRET not in reply.text, f"secret leaked in {reply!r}")


# ---- vector search filters_json injection ---------------------------------------------------------------------------

VSF = "vector-filters"


def _vs_query(ctx, token, filters, index=None):
    index = index or ctx.vector_index()
    return ctx.api.post(f"/api/2.0/vector-search/indexes/{index}/query", token,
                        {"columns": ["id"], "query_vector": [1.0, 0.0], "num_results": 10, "filters_json": filters})


@case(VSF, "control: a filter narrows alice's results")
def _(ctx):
    reply = _vs_query(ctx, ctx.alice, json.dumps({"owner": "bob"}))
    check(reply.status == 200 and [row[0] for row in reply.body["result"]["data_array"]] == ["b1"], f"{reply!r}")


@case(VSF, "SQL-shaped keys, unknown operators, objects as values, non-objects -> 400 invalid filter")
def _(ctx):
    failures = []
    for filters in [{"owner = 'bob' OR 1=1 --": "x"}, {"owner; DROP TABLE x": "a"}, {"owner ~": "a"},
                    {"owner": {"$ne": None}}, {"owner": [["a"]]}, {"owner": []}, {"nope": "a"},
                    {"owner OR": "a"}, {"owner LIKE": 5}, {"owner NOT NOT": "a"}, {"__proto__": "a"}]:
        reply = _vs_query(ctx, ctx.alice, json.dumps(filters))
        if not (reply.status == 400 and reply.get("error_code") == "INVALID_PARAMETER_VALUE"
                and "invalid filter" in str(reply.get("message", "")).lower()):
            failures.append(f"{filters!r}: {reply!r}")
    for raw in ["not json", "[1, 2]", "\"owner\"", "{\"owner\": ", "[" * 100_000 + "]" * 100_000, 5, ["a"]]:
        reply = _vs_query(ctx, ctx.alice, raw)
        if not (reply.status == 400 and reply.get("error_code") == "INVALID_PARAMETER_VALUE"):
            failures.append(f"{str(raw)[:40]!r}: {reply!r}")
    check(not failures, "\n    ".join(failures))


@case(VSF, "quotes and wildcards in filter values are data, not syntax")
def _(ctx):
    for filters, expected in [({"owner": "bob' OR '1'='1"}, []), ({"owner": "carol's"}, ["c1"]),
                              ({"owner LIKE": "%"}, ["a1", "b1", "c1"]), ({"owner NOT": "x' OR 1=1 --"}, ["a1", "b1", "c1"])]:
        reply = _vs_query(ctx, ctx.alice, json.dumps(filters))
        got = sorted(row[0] for row in (reply.body or {}).get("result", {}).get("data_array", [])) if reply.status == 200 else reply
        check(got == expected, f"{filters!r}: expected {expected}, got {got!r}")


@case(VSF, "a page token cannot carry the query to another index")
def _(ctx):
    import base64
    forged = base64.urlsafe_b64encode(json.dumps({"columns": ["id"], "query_vector": [1.0, 0.0], "num_results": 10,
                                                  "offset": 0}).encode()).decode().rstrip("=")
    reply = ctx.api.post(f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/query-next-page", ctx.bob,
                         {"page_token": forged})
    expect_api_error(reply, 403, "PERMISSION_DENIED", "SELECT on vsec.docs.idx")
    expect_api_error(ctx.api.post(f"/api/2.0/vector-search/indexes/{ctx.vector_index()}/query-next-page", ctx.alice,
                                  {"page_token": "not-a-token"}), 400, "INVALID_PARAMETER_VALUE", "page_token")


# ---- admin-only routes ------------------------------------------------------------------------------------------------

ADMIN_ONLY = "admin-only"


def _refused_settings_changes(ctx) -> int:
    events = expect_ok(ctx.api.get("/api/2.0/deputy/audit?contains=serving.settings&limit=1000", ctx.admin),
                       "audit")["events"]
    return sum(1 for e in events
               if e["api"] == "serving.settings" and not e["allowed"] and e["user_name"] == "alice@example.com")


@case(ADMIN_ONLY, "changing settings (obo-enabled) -> 403 for a non-admin, even with every scope; unchanged, audited")
def _(ctx):
    before = expect_ok(ctx.api.get("/api/2.0/deputy/settings", ctx.admin), "settings")
    refused_before = _refused_settings_changes(ctx)
    flipped = {"obo-enabled": not before["obo-enabled"], "consent-required": not before["consent-required"]}
    for token in [ctx.alice, ctx.delegated(ctx.alice)]:
        expect_api_error(ctx.api.patch("/api/2.0/deputy/settings", token, flipped), 403,
                         "PERMISSION_DENIED", "only members of the `admins` group")
    after = expect_ok(ctx.api.get("/api/2.0/deputy/settings", ctx.admin), "settings")
    check(after == before, f"settings changed by a refused attempt: {before} -> {after}")
    refused = _refused_settings_changes(ctx) - refused_before
    check(refused == 2, f"{refused} of 2 refused attempts audited")


@case(ADMIN_ONLY, "reading the audit log: a non-admin reads only their own events; naming another user -> 403")
def _(ctx):
    for token in [ctx.alice, ctx.delegated(ctx.alice)]:
        expect_api_error(ctx.api.get("/api/2.0/deputy/audit?user_name=bob@example.com", token), 403,
                         "PERMISSION_DENIED", "only members of the `admins` group")
        for query in ["limit=1000", "limit=1000&order=desc&contains=bob", "limit=1000&user_name="]:
            events = expect_ok(ctx.api.get(f"/api/2.0/deputy/audit?{query}", token), query)["events"]
            others = [e for e in events if e["user_name"] != "alice@example.com"]
            check(not others, f"{query}: someone else's events {others[:3]}")


@case(ADMIN_ONLY, "deploying an agent (a program from the server's disk) -> 403 for a non-admin")
def _(ctx):
    for source in ["/bin/true", "/usr/bin/env", str(Path(__file__).resolve())]:
        expect_api_error(ctx.api.post("/api/2.0/deputy/agents", ctx.alice, {"name": "evil", "source_path": source}),
                         403, "PERMISSION_DENIED", "only members of the `admins` group")
    expect_api_error(ctx.api.get("/api/2.0/serving-endpoints/evil", ctx.admin), 404, "RESOURCE_DOES_NOT_EXIST", "evil")


# ---- delegated tokens against other users' resources -------------------------------------------------------------------

DELEGATED = "delegated-access"
# Fresh PATs: earlier categories revoke some of the shared ones.


@case(DELEGATED, "an agent acting for bob cannot query an index bob may not SELECT from")
def _(ctx):
    bob_agent = ctx.delegated(ctx.pat_for("bob@example.com"))
    expect_api_error(_vs_query(ctx, bob_agent, None), 403, "PERMISSION_DENIED", "SELECT on vsec.docs.idx")
    carol_agent = ctx.delegated(ctx.pat_for("carol@example.com"))
    expect_api_error(_vs_query(ctx, carol_agent, None), 404, "RESOURCE_DOES_NOT_EXIST", "vsec.docs.idx")
    reply = _vs_query(ctx, ctx.delegated(ctx.pat_for("alice@example.com")), None)
    check(reply.status == 200 and len(reply.body["result"]["data_array"]) == 3, f"control for alice: {reply!r}")


@case(DELEGATED, "an agent acting for bob cannot query alice's serving endpoint without CAN_QUERY")
def _(ctx):
    entity = {"name": "m", "external_model": {"provider": "openai", "name": "gpt-x", "task": "llm/v1/chat",
                                              "openai_config": {"openai_api_base": "http://127.0.0.1:9/v1",
                                                                "openai_api_key_plaintext": "sk-alice"}}}
    created = expect_ok(ctx.api.post("/api/2.0/serving-endpoints", ctx.alice,
                                     {"name": "alice-ep", "config": {"served_entities": [entity]}}), "alice's endpoint")
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    expect_api_error(ctx.api.post("/serving-endpoints/alice-ep/invocations", ctx.delegated(ctx.pat_for("bob@example.com")), payload), 404,
                     "RESOURCE_DOES_NOT_EXIST", "alice-ep")
    expect_ok(ctx.api.patch(f"/api/2.0/permissions/serving-endpoints/{created['id']}", ctx.alice,
                            {"access_control_list": [{"user_name": "bob@example.com", "permission_level": "CAN_VIEW"}]}),
              "CAN_VIEW for bob")
    expect_api_error(ctx.api.post("/serving-endpoints/alice-ep/invocations", ctx.delegated(ctx.pat_for("bob@example.com")), payload), 403,
                     "PERMISSION_DENIED", "CAN_QUERY")
    expect_api_error(ctx.api.post("/serving-endpoints/chat/completions", ctx.delegated(ctx.pat_for("bob@example.com")),
                                  dict(payload, model="alice-ep")), 403, "PERMISSION_DENIED", "CAN_QUERY")


# ---- security decisions on stored data that is missing or does not parse fail closed -----------------------------

FEDERATION = "token-federation"
FEDERATION_AUDIENCE = "https://deputy.test/sec"


class LoopbackIssuer:
    """An OpenID issuer on loopback whose RSA key the suite holds: a discovery document (naming `named_issuer`, its
    own URL by default) and a key set, served from a thread. What a CI system or identity provider publishes."""

    def __init__(self, named_issuer=None):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "sec-key-1"
        self.named_issuer = named_issuer
        self.httpd, self.url = serve_json_on_loopback(self._answer)

    def _answer(self, _method, path, _body):
        documents = {
            "/.well-known/openid-configuration": {"issuer": self.named_issuer or self.url,
                                                  "jwks_uri": f"{self.url}/jwks"},
            "/jwks": {"keys": [self.jwk()]},
        }
        return (200, documents[path]) if path in documents else (404, {})

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda value: value.to_bytes((value.bit_length() + 7) // 8, "big")  # noqa: E731
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "aud": FEDERATION_AUDIENCE, "sub": "alice@example.com", "iat": now,
                  "exp": now + 300}
        claims.update(changes)
        return claims

    def sign(self, claims: dict, header=None, key=None) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        message = f"{b64json(header or {'alg': 'RS256', 'typ': 'JWT', 'kid': self.kid})}.{b64json(claims)}"
        signature = (key or self.key).sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{message}.{b64url(signature)}"


def _federation(ctx) -> LoopbackIssuer:
    """The suite's trusted issuer: an account-wide policy whose `sub` names a user (made once)."""
    if not hasattr(ctx, "issuer"):
        ctx.issuer = LoopbackIssuer()
        account = expect_ok(ctx.api.get("/.well-known/databricks-config"), "config")["workspace_id"]
        expect_ok(ctx.api.post(f"/api/2.0/accounts/{account}/federationPolicies", ctx.admin,
                               {"oidc_policy": {"issuer": ctx.issuer.url, "audiences": [FEDERATION_AUDIENCE]}},
                               params={"policy_id": "sec-federation"}), "federation policy")
    return ctx.issuer


def _federate(ctx, token: str, **extra) -> Reply:
    return ctx.api.form("/oidc/v1/token", {"grant_type": GRANT_EXCHANGE, "subject_token": token,
                                           "subject_token_type": TT_JWT, **extra})


def _refused(ctx, token: str, phrase: str, status=400, error="invalid_grant") -> None:
    expect_oauth_error(_federate(ctx, token), status, error, phrase)


@case(FEDERATION, "control: a token of the trusted issuer becomes the user its subject names")
def _(ctx):
    issuer = _federation(ctx)
    token = expect_ok(_federate(ctx, issuer.sign(issuer.claims())), "federated exchange")["access_token"]
    me = expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", token), "me")
    check(me["userName"] == "alice@example.com", f"federated as {me}")


@case(FEDERATION, "alg none (unsigned token) is refused")
def _(ctx):
    issuer = _federation(ctx)
    unsigned = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(issuer.claims())}."
    _refused(ctx, unsigned, "malformed JWT")


@case(FEDERATION, "HS256 signed with the issuer's public key as the shared secret is refused")
def _(ctx):
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    issuer = _federation(ctx)
    secret = issuer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    message = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.kid})}.{b64json(issuer.claims())}"
    forged = f"{message}.{b64url(hmac.new(secret, message.encode(), hashlib.sha256).digest())}"
    _refused(ctx, forged, "not accepted")


@case(FEDERATION, "a token for another audience is refused")
def _(ctx):
    issuer = _federation(ctx)
    _refused(ctx, issuer.sign(issuer.claims(aud="https://elsewhere.test")), "InvalidAudience")


@case(FEDERATION, "an expired token is refused")
def _(ctx):
    issuer = _federation(ctx)
    _refused(ctx, issuer.sign(issuer.claims(exp=int(time.time()) - 3600)), "ExpiredSignature")


@case(FEDERATION, "a token signed by an unknown key (same key id, or another) is refused")
def _(ctx):
    from cryptography.hazmat.primitives.asymmetric import rsa

    issuer = _federation(ctx)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(ctx, issuer.sign(issuer.claims(), key=stranger), "InvalidSignature")
    _refused(ctx, issuer.sign(issuer.claims(), header={"alg": "RS256", "kid": "sec-key-9"}, key=stranger),
             "no key of the issuer")


@case(FEDERATION, "a spoofed issuer URL (trailing slash, localhost for 127.0.0.1, another port) is not trusted")
def _(ctx):
    issuer = _federation(ctx)
    port = int(issuer.url.rsplit(":", 1)[1])
    for spoofed in [f"{issuer.url}/", f"http://localhost:{port}", f"http://127.0.0.1:{port + 1}"]:
        _refused(ctx, issuer.sign(issuer.claims(iss=spoofed)), "no federation policy trusts issuer")


@case(FEDERATION, "an issuer whose discovery document names another issuer (mix-up) is refused")
def _(ctx):
    real = _federation(ctx)
    impostor = LoopbackIssuer(named_issuer=real.url)
    account = expect_ok(ctx.api.get("/.well-known/databricks-config"), "config")["workspace_id"]
    expect_ok(ctx.api.post(f"/api/2.0/accounts/{account}/federationPolicies", ctx.admin,
                           {"oidc_policy": {"issuer": impostor.url, "audiences": [FEDERATION_AUDIENCE]}}),
              "policy for the impostor")
    _refused(ctx, impostor.sign(impostor.claims()), "discovery document names issuer")


@case(FEDERATION, "a deactivated user cannot federate; a subject naming no user is refused")
def _(ctx):
    issuer = _federation(ctx)
    _refused(ctx, issuer.sign(issuer.claims(sub="mallory@example.com")), "no active user")
    carol = ctx.users["carol@example.com"]["id"]
    expect_ok(ctx.api.patch(f"/api/2.0/preview/scim/v2/Users/{carol}", ctx.admin, {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}]}), "deactivate carol")
    try:
        _refused(ctx, issuer.sign(issuer.claims(sub="carol@example.com")), "no active user")
    finally:
        expect_ok(ctx.api.patch(f"/api/2.0/preview/scim/v2/Users/{carol}", ctx.admin, {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": True}]}), "reactivate carol")


@case(FEDERATION, "only admins declare federation policies; plain http:// issuers off loopback are refused")
def _(ctx):
    account = expect_ok(ctx.api.get("/.well-known/databricks-config"), "config")["workspace_id"]
    path = f"/api/2.0/accounts/{account}/federationPolicies"
    expect_api_error(ctx.api.post(path, ctx.alice, {"oidc_policy": {"issuer": "https://evil.example"}}), 403,
                     "PERMISSION_DENIED", "admin")
    expect_api_error(ctx.api.post(path, ctx.admin, {"oidc_policy": {"issuer": "http://idp.example.com"}}), 400,
                     "INVALID_PARAMETER_VALUE", "https://")


FAIL_CLOSED = "stored-data-fails-closed"


class StoredSpec:
    """Replaces a securable's stored spec in the metadata database behind the server's back (as a bad migration,
    a manual edit or disk damage would), and puts the original back afterwards so later categories are unaffected."""

    def __init__(self, ctx, full_name: str, replacement: str):
        self.server = ctx.server
        self.full_name = full_name
        self.replacement = replacement

    def __enter__(self):
        self.original = stored_spec(self.server, self.full_name)
        self.server.sql("UPDATE securables SET spec = ? WHERE full_name = ?", (self.replacement, self.full_name))
        return self

    def __exit__(self, *_):
        self.server.sql("UPDATE securables SET spec = ? WHERE full_name = ?", (self.original, self.full_name))


def stored_spec(server, full_name: str) -> str:
    """The spec (JSON) of `full_name` in the metadata database."""
    rows = server.sql("SELECT spec FROM securables WHERE full_name = ?", (full_name,))
    check(rows, f"{full_name} is not in the store")
    return rows[0][0]


def _filtered_delta_index(ctx, catalog: str) -> None:
    """`{catalog}.docs.idx`, a delta-sync index over `{catalog}.docs.chunks`, whose row filter lets alice see the EU
    rows only; alice may SELECT from the index but not from the table."""
    for statement in [
        f"CREATE CATALOG {catalog}",
        f"CREATE SCHEMA {catalog}.docs",
        f"CREATE TABLE {catalog}.docs.chunks (id INT, region STRING, emb STRING)",
        f"INSERT INTO {catalog}.docs.chunks VALUES (1, 'EU', '[1.0, 0.0]'), (2, 'US', '[0.9, 0.1]'), "
        "(3, 'EU', '[0.0, 1.0]')",
        f"CREATE FUNCTION {catalog}.docs.eu_for_alice(region STRING) RETURNS BOOLEAN "
        "RETURN (region = 'EU' AND current_user() = 'alice@example.com') OR is_account_group_member('admins')",
        f"ALTER TABLE {catalog}.docs.chunks SET ROW FILTER {catalog}.docs.eu_for_alice ON (region)",
    ]:
        ctx.sql_ok(ctx.admin, statement)
    ctx.vector_index()  # the shared endpoint `sec-vs`
    expect_ok(ctx.api.post("/api/2.0/vector-search/indexes", ctx.admin, {
        "name": f"{catalog}.docs.idx", "endpoint_name": "sec-vs", "primary_key": "id", "index_type": "DELTA_SYNC",
        "delta_sync_index_spec": {"source_table": f"{catalog}.docs.chunks", "pipeline_type": "TRIGGERED",
                                  "embedding_vector_columns": [{"name": "emb", "embedding_dimension": 2}]}}),
              "delta-sync index")
    for securable, privileges in [(f"catalog/{catalog}", ["USE_CATALOG"]), (f"schema/{catalog}.docs", ["USE_SCHEMA"]),
                                  (f"table/{catalog}.docs.idx", ["SELECT"])]:
        expect_ok(ctx.api.patch(f"/api/2.1/unity-catalog/permissions/{securable}", ctx.admin,
                                {"changes": [{"principal": "alice@example.com", "add": privileges}]}),
                  f"grant on {securable}")
    reply = _vs_query(ctx, ctx.alice, None, index=f"{catalog}.docs.idx")
    rows = sorted(row[0] for row in (reply.body.get("result") or {}).get("data_array") or [])
    check(reply.status == 200 and rows in (["1", "3"], [1, 3]), f"control: alice sees the EU rows: {reply!r}")


@case(FAIL_CLOSED, "a delta-sync index whose source table is gone refuses queries instead of returning every row")
def _(ctx):
    _filtered_delta_index(ctx, "fcgone")
    ctx.sql_ok(ctx.admin, "DROP TABLE fcgone.docs.chunks")
    expect_api_error(_vs_query(ctx, ctx.alice, None, index="fcgone.docs.idx"), 400, "INVALID_STATE",
                     "no longer exists")


@case(FAIL_CLOSED, "a source table spec that does not parse refuses the index query (500), never all rows")
def _(ctx):
    _filtered_delta_index(ctx, "fcbad")
    with StoredSpec(ctx, "fcbad.docs.chunks", "{not json"):
        reply = _vs_query(ctx, ctx.alice, None, index="fcbad.docs.idx")
        expect_api_error(reply, 500, "INTERNAL_ERROR", "internal error")
    reply = _vs_query(ctx, ctx.alice, None, index="fcbad.docs.idx")
    check(reply.status == 200, f"the restored spec works again: {reply!r}")


@case(FAIL_CLOSED, "a connection spec that does not parse refuses the call (500); nothing is sent upstream")
def _(ctx):
    name, seen = ctx.http_connection()
    before = len(seen)
    with StoredSpec(ctx, name, "[]"):
        reply = ctx.api.post("/api/2.0/external-function", ctx.alice,
                             {"connection_name": name, "method": "GET", "path": "/fail-closed"})
        expect_api_error(reply, 500, "INTERNAL_ERROR", "internal error")
    check(len(seen) == before, f"a request left through the connection: {seen[before:]}")


@case(FAIL_CLOSED, "a table spec that does not parse is an error when the table is described, not an empty table")
def _(ctx):
    with StoredSpec(ctx, "sec.hr.secret", "{}}"):
        reply = ctx.api.get("/api/2.1/unity-catalog/tables/sec.hr.secret", ctx.admin)
        expect_api_error(reply, 500, "INTERNAL_ERROR", "internal error")


@case(FAIL_CLOSED, "a federation policy whose stored audiences do not parse refuses the exchange (server_error)")
def _(ctx):
    issuer = _federation(ctx)
    original = ctx.server.sql("SELECT audiences FROM federation_policies WHERE policy_id = 'sec-federation'")
    check(original, "the suite's federation policy is stored")
    ctx.server.sql("UPDATE federation_policies SET audiences = 'not json' WHERE policy_id = 'sec-federation'")
    try:
        _refused(ctx, issuer.sign(issuer.claims()), "", status=500, error="server_error")
    finally:
        ctx.server.sql("UPDATE federation_policies SET audiences = ? WHERE policy_id = 'sec-federation'", original[0])


# ---- the console, MCP, sign-in and SQL functions: the `console` category lives in console_cases.py, the `mcp`
# category in mcp_cases.py, the `sign-in` category in sign_in_cases.py and the `sql-functions` category in
# function_cases.py; all import their helpers from this module. `console` and `mcp` are registered before `sign-in`
# (which mcp_cases imports, so `console` comes first): they sign in with local passwords, which the last sign-in
# cases lock for the rest of the run (and `console` removes the passwords it gave before `sign-in` counts them).
# `sql-functions` works in its own catalog `fnsec` with fresh PATs.

sys.modules.setdefault("run", sys.modules[__name__])
import console_cases  # noqa: E402,F401
import mcp_cases  # noqa: E402,F401
import sign_in_cases  # noqa: E402,F401
import function_cases  # noqa: E402,F401

# ---- durability of revocations across a restart (last: it restarts the server) ------------------------------------

RESTART = "restart"


@case(RESTART, "revocations, deletions and deactivations survive a restart")
def _(ctx):
    ctx.grant_warehouse()
    code = ctx.server.stop()
    check(code == 0, f"SIGTERM exit code {code}")
    ctx.server.start(same_port=True)
    ctx.api = Api(ctx.server.host)
    if hasattr(ctx, "revoked_jwt"):
        unauthenticated(ctx, ctx.revoked_jwt, "access token has been revoked")
    if hasattr(ctx, "revoked_pat"):
        unauthenticated(ctx, ctx.revoked_pat, "invalid personal access token")
    expect_ok(ctx.api.get("/api/2.0/preview/scim/v2/Me", ctx.alice), "alice's PAT survives")
    check(ctx.sql_ok(ctx.bob, "SELECT count(*), max(ssn) FROM sec.hr.staff") == [["2", "***"]],
          "policies after restart")


# ---- runner ---------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="CATEGORY",
                        help="run only this category (repeatable)")
    parser.add_argument("--list", action="store_true", help="list categories and cases")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case as it runs")
    args = parser.parse_args()
    if args.list:
        for category in CATEGORY_ORDER:
            print(category)
            for cat, name, _ in CASES:
                if cat == category:
                    print(f"  {name}")
        return 0
    unknown = [c for c in args.only if c not in CATEGORY_ORDER]
    if unknown:
        print(f"unknown categories {unknown}; known: {', '.join(CATEGORY_ORDER)}", file=sys.stderr)
        return 2
    selected = [c for c in CATEGORY_ORDER if not args.only or c in args.only]

    server = Server().start()
    results: list[tuple[str, str, bool, str]] = []
    try:
        ctx = Ctx(server)
        for category in selected:
            for cat, name, function in CASES:
                if cat != category:
                    continue
                started = time.monotonic()
                try:
                    function(ctx)
                    results.append((cat, name, True, ""))
                except Fail as failure:
                    results.append((cat, name, False, str(failure)))
                except Exception:  # a crash of the case itself is a failure too, never a skip
                    results.append((cat, name, False, traceback.format_exc(limit=3)))
                if args.verbose:
                    ok = "PASS" if results[-1][2] else "FAIL"
                    print(f"  {ok} {cat} / {name} ({time.monotonic() - started:.1f}s)", flush=True)
            healthy = server.healthy()
            results.append((category, "server still answers /healthz", healthy,
                            "" if healthy else f"server down after {category}:\n{server.log()[-3000:]}"))
    finally:
        code = server.stop() if server.alive() else server.process.returncode
        if code != 0:
            results.append(("shutdown", "SIGTERM exits 0", False, f"exit code {code}"))
        log_errors = [line for line in server.log().splitlines() if "panicked" in line]
        results.append(("shutdown", "no panic in the server log", not log_errors, "\n".join(log_errors[:5])))
        server.cleanup()

    print()
    print(f"{'category':<20} {'passed':>6} {'failed':>6}")
    print("-" * 34)
    for category in selected + ["shutdown"]:
        rows = [r for r in results if r[0] == category]
        print(f"{category:<20} {sum(r[2] for r in rows):>6} {sum(not r[2] for r in rows):>6}")
    failed = [r for r in results if not r[2]]
    if failed:
        print("\nFailures:")
        for cat, name, _, detail in failed:
            print(f"- [{cat}] {name}\n    {detail.strip()}")
    passed = len(results) - len(failed)
    print(f"\n{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
