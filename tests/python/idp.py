"""A real OpenID Connect identity provider for tests: tests/idp/server.mjs (oidc-provider on Node.js), on loopback.

    with TestIdentityProvider(clients=[...], accounts=[...]) as idp:
        idp.issuer                                   # http://127.0.0.1:<port>
        response = sign_in(session, authorize_url, "alice", "pw", stop_at="http://127.0.0.1:9/cb")
        jwt = idp.client_credentials_jwt("workload", "secret", resource="https://deputy.test")

`clients` are oidc-provider client metadata (client_id, client_secret, redirect_uris, grant_types, response_types,
token_endpoint_auth_method, ...); `accounts` are {sub, email, email_verified, name, groups, password}. See
tests/idp/README.md.
"""

import base64
import html.parser
import json
import queue
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path

import requests

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
STARTUP_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 10
MAX_REDIRECTS = 20


def _ensure_node_modules() -> None:
    if (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True, stdout=subprocess.DEVNULL)


class TestIdentityProvider:
    """Runs the test identity provider for the duration of a `with` block; `.issuer` is its issuer URL."""

    __test__ = False  # not a pytest test class

    def __init__(self, clients, accounts):
        self.clients = list(clients)
        self.accounts = list(accounts)
        self.issuer = None
        self.port = None
        self._process = None
        self._dir = None

    def __enter__(self):
        _ensure_node_modules()
        self._dir = tempfile.TemporaryDirectory(prefix="deputy-test-idp-")
        config_path = Path(self._dir.name) / "config.json"
        config_path.write_text(json.dumps({"clients": self.clients, "accounts": self.accounts}))
        self.log_path = Path(self._dir.name) / "idp.log"
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [shutil.which("node") or "node", "server.mjs", "--port", "0", "--config", str(config_path)],
                cwd=IDP_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            ready = self._read_ready_line()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.issuer = ready["issuer"]
        self.port = ready["port"]
        return self

    def _read_ready_line(self) -> dict:
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self._process.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
        except queue.Empty:
            raise RuntimeError(f"identity provider not ready after {STARTUP_TIMEOUT_SECONDS} s:\n{self.log()}")
        if not line:
            raise RuntimeError(f"identity provider exited ({self._process.wait()}):\n{self.log()}")
        return json.loads(line)

    def __exit__(self, *exc_info):
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()  # SIGTERM to this process only
                try:
                    self._process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process.stdout.close()
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        return False

    def log(self) -> str:
        """What the provider wrote to stderr (warnings, server errors)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (AttributeError, OSError):
            return ""

    def discovery(self) -> dict:
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        return response.json()

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def client_credentials_jwt(
        self, client_id, client_secret, resource, scope=None, auth_method="client_secret_basic"
    ) -> str:
        """A provider-signed JWT access token (RS256, typ at+jwt) with aud = resource and sub = client_id.

        The client must allow the client_credentials grant and use `auth_method` (its token_endpoint_auth_method).
        """
        data = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            data["scope"] = scope
        response = token_request(self.token_endpoint, data, client_id, client_secret, auth_method)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()["access_token"]


def token_request(token_endpoint, data, client_id, client_secret, auth_method="client_secret_basic"):
    """POSTs `data` to a token endpoint with client_secret_basic (form-encoded per RFC 6749 §2.3.1) or _post."""
    headers = {"Accept": "application/json"}
    data = dict(data)
    if auth_method == "client_secret_basic":
        pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif auth_method == "client_secret_post":
        data.update(client_id=client_id, client_secret=client_secret)
    else:
        raise ValueError(f"unsupported auth_method {auth_method!r}")
    return requests.post(token_endpoint, data=data, headers=headers, timeout=10)


def decode_jwt_unverified(token: str) -> tuple[dict, dict]:
    """(header, payload) of a compact JWS, without checking the signature: for looking, not for trusting."""

    def part(segment):
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    header, payload, _signature = token.split(".")
    return part(header), part(payload)


class _LoginFormParser(html.parser.HTMLParser):
    """Finds the action of the first form that has a password field."""

    def __init__(self):
        super().__init__()
        self._action = None
        self.action = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._action = attrs.get("action") or ""
        elif tag == "input" and attrs.get("name") == "password" and self._action is not None and self.action is None:
            self.action = self._action

    def handle_endtag(self, tag):
        if tag == "form":
            self._action = None


def _login_form_action(response):
    if "html" not in response.headers.get("Content-Type", ""):
        return None
    parser = _LoginFormParser()
    parser.feed(response.text)
    return parser.action


def sign_in(session: requests.Session, authorize_url: str, login: str, password: str, stop_at=None):
    """Plays a person's browser through a sign-in; returns the last response.

    GETs `authorize_url` (an RP's login URL or the provider's authorization URL) and follows redirects to the
    provider's login form, submits `login` and `password`, then follows redirects (the consent step has no page)
    back to the relying party and on until a response that is not a redirect. A redirect whose target starts with
    `stop_at` (a string or a tuple of them; e.g. a redirect_uri with no listener) is not followed: that redirect response is returned, and its
    Location carries the code. A wrong password returns the login form again (status 200).
    Redirects are followed with GET, as browsers do for 302/303.
    """
    submitted = False
    response = session.get(authorize_url, allow_redirects=False, timeout=10)
    for _ in range(MAX_REDIRECTS * 2):
        if response.is_redirect:
            target = urllib.parse.urljoin(response.url, response.headers["Location"])
            if stop_at is not None and target.startswith(stop_at):
                return response
            response = session.get(target, allow_redirects=False, timeout=10)
            continue
        action = None if submitted else _login_form_action(response)
        if action is None:
            return response
        submitted = True
        response = session.post(
            urllib.parse.urljoin(response.url, action),
            data={"login": login, "password": password},
            allow_redirects=False,
            timeout=10,
        )
    raise RuntimeError(f"too many redirects, last at {response.url}")


def _self_check() -> None:
    """`python3 tests/python/idp.py`: one sign-in with code + PKCE, and one client-credentials JWT."""
    import hashlib
    import secrets

    redirect_uri = "http://127.0.0.1:9/cb"  # nothing listens there: sign_in stops at the redirect
    clients = [
        {"client_id": "rp", "client_secret": "rp-secret", "redirect_uris": [redirect_uri]},
        {"client_id": "workload", "client_secret": "wl-secret", "grant_types": ["client_credentials"],
         "response_types": []},
    ]
    accounts = [{"sub": "alice", "email": "alice@example.com", "email_verified": True, "name": "Alice",
                 "groups": ["engineers"], "password": "pw"}]
    with TestIdentityProvider(clients, accounts) as idp:
        metadata = idp.discovery()
        assert metadata["issuer"] == idp.issuer
        assert requests.get(metadata["jwks_uri"], timeout=10).json()["keys"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {"client_id": "rp", "response_type": "code", "redirect_uri": redirect_uri, "state": "st",
                 "scope": "openid email profile groups", "nonce": "nc", "code_challenge": challenge,
                 "code_challenge_method": "S256"}
        authorize_url = metadata["authorization_endpoint"] + "?" + urllib.parse.urlencode(query)
        response = sign_in(requests.Session(), authorize_url, "alice", "pw", stop_at=redirect_uri)
        callback = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(response.headers["Location"]).query))
        tokens = token_request(idp.token_endpoint, {"grant_type": "authorization_code", "code": callback["code"],
                                                    "redirect_uri": redirect_uri, "code_verifier": verifier},
                               "rp", "rp-secret")
        assert tokens.status_code == 200, tokens.text
        header, claims = decode_jwt_unverified(tokens.json()["id_token"])
        print("ID token:", header, claims)
        assert claims["iss"] == idp.issuer and claims["nonce"] == "nc"
        assert claims["email"] == "alice@example.com" and claims["groups"] == ["engineers"]
        workload_jwt = idp.client_credentials_jwt("workload", "wl-secret", "https://deputy.test")
        header, claims = decode_jwt_unverified(workload_jwt)
        print("client-credentials JWT:", header, claims)
        assert claims["iss"] == idp.issuer and claims["aud"] == "https://deputy.test" and claims["sub"] == "workload"
    print("ok")


if __name__ == "__main__":
    _self_check()
