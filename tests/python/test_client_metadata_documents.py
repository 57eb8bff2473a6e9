"""MCP's Client ID Metadata Documents at Deputy's sign-in: a client whose `client_id` is an https URL is read from
that URL at /oidc/v1/authorize and kept as an untrusted public app that a person approves.

The documents are served by a loopback HTTPS server whose certificate comes from a throwaway CA; this module's own
Deputy trusts that CA through `DEPUTY_CA_BUNDLE` (the session's server trusts nothing extra). A second loopback
HTTPS server presents a self-signed certificate the bundle does not vouch for.
"""

import base64
import datetime
import hashlib
import html
import http.server
import ipaddress
import json
import secrets
import ssl
import threading
import urllib.parse

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import free_loopback_port, running_deputy
from mcp_helpers import Browser

TIMEOUT_SECONDS = 10
ADMIN_PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:9/cimd-callback"  # nothing listens: the browser stops at the redirect
CLIENT_NAME = "Metadata Document Test Client"
MAX_DOCUMENT_BYTES = 64 * 1024


# --- certificates --------------------------------------------------------------------------------------------------


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, subject_key, issuer, issuer_key, is_ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A throwaway CA (its PEM is Deputy's bundle), a leaf for `localhost` it signed, and a self-signed leaf for
    `localhost` nobody vouches for: paths of PEM files."""
    directory = tmp_path_factory.mktemp("cimd-tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(_name("Deputy test CA"), ca_key, _name("Deputy test CA"), ca_key, is_ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate(_name("localhost"), leaf_key, ca.subject, ca_key, is_ca=False)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _certificate(_name("localhost"), stranger_key, _name("localhost"), stranger_key, is_ca=False)
    files = {
        "ca": _pem(ca),
        "leaf": _pem(leaf) + _pem(ca),
        "leaf_key": _key_pem(leaf_key),
        "stranger": _pem(stranger),
        "stranger_key": _key_pem(stranger_key),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(content)
    return paths


# --- the documents' server -----------------------------------------------------------------------------------------


class DocumentServer:
    """A loopback HTTPS server answering `documents` ({path: (status, headers, body bytes)}) and recording every
    request it reads as (method, path, headers)."""

    def __init__(self, cert_file, key_file):
        self.documents = {}
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = TIMEOUT_SECONDS

            def log_message(self, *args):
                pass

            def do_GET(self):
                with owner.lock:
                    owner.requests.append(("GET", self.path, dict(self.headers)))
                status, headers, body = owner.documents.get(self.path, (404, {}, b"not here"))
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the reader may stop early (an oversized document)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                with owner.lock:
                    owner.connections += 1
                return True

            def handle_error(self, request, client_address):
                pass  # failed handshakes (an untrusting client) and dropped connections are expected

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd = Server(("127.0.0.1", 0), Handler)
        # The handshake happens on the handler's thread, at its first read, not in the accepting loop.
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"https://localhost:{self.port}{path}"

    def serve_json(self, path, document):
        self.documents[path] = (200, {"Content-Type": "application/json"}, json.dumps(document).encode())

    def requested(self, path):
        with self.lock:
            return [request for request in self.requests if request[1] == path]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def client_document(url, **overrides):
    document = {
        "client_id": url,
        "client_name": CLIENT_NAME,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(overrides)
    return {name: value for name, value in document.items() if value is not None}


GOOD = "/clients/good.json"
# Path: (what is wrong with it, what the error page says about it).
BAD = {
    "/clients/names-another.json": ("its client_id names another URL", "names another client id"),
    "/clients/with-secret.json": ("it carries a client_secret", "must describe a public client"),
    "/clients/basic-auth.json": ("token_endpoint_auth_method is client_secret_basic", "must describe a public client"),
    "/clients/huge.json": ("it is over 64 KiB", "is over 65536 bytes"),
    "/clients/plain-http-redirect.json": ("a redirect URI is http on a non-loopback host", "http://app.example/callback"),
    "/clients/redirects.json": ("the URL answers a redirect (to the good document)", "answered HTTP 302"),
    "/clients/missing.json": ("the URL answers 404", "answered HTTP 404"),
    "/clients/not-json.json": ("the body is not JSON", "is not client metadata"),
    "/clients/implicit.json": ("it asks for response_type token", "unsupported response_types"),
    "/clients/client-credentials.json": ("it asks for the client_credentials grant", "unsupported grant_types"),
}


@pytest.fixture(scope="module")
def documents(certificates):
    with DocumentServer(certificates["leaf"], certificates["leaf_key"]) as server:
        good = server.url(GOOD)
        server.serve_json(GOOD, client_document(good))
        server.serve_json("/clients/names-another.json", client_document(good))
        url = server.url("/clients/with-secret.json")
        server.serve_json("/clients/with-secret.json", client_document(url, client_secret="s3cr3t"))
        url = server.url("/clients/basic-auth.json")
        server.serve_json("/clients/basic-auth.json", client_document(url, token_endpoint_auth_method="client_secret_basic"))
        url = server.url("/clients/huge.json")
        server.serve_json("/clients/huge.json", client_document(url, padding="x" * (MAX_DOCUMENT_BYTES + 1024)))
        url = server.url("/clients/plain-http-redirect.json")
        server.serve_json("/clients/plain-http-redirect.json",
                          client_document(url, redirect_uris=[REDIRECT_URI, "http://app.example/callback"]))
        server.documents["/clients/redirects.json"] = (302, {"Location": good}, b"")
        server.documents["/clients/not-json.json"] = (200, {"Content-Type": "application/json"}, b"<html>hello</html>")
        url = server.url("/clients/implicit.json")
        server.serve_json("/clients/implicit.json", client_document(url, response_types=["code", "token"]))
        url = server.url("/clients/client-credentials.json")
        server.serve_json("/clients/client-credentials.json",
                          client_document(url, grant_types=["authorization_code", "client_credentials"]))
        yield server


@pytest.fixture(scope="module")
def stranger(certificates):
    """The same good document, served with a certificate Deputy's bundle does not vouch for."""
    with DocumentServer(certificates["stranger"], certificates["stranger_key"]) as server:
        server.serve_json(GOOD, client_document(server.url(GOOD)))
        yield server


@pytest.fixture(scope="module")
def deputy(tmp_path_factory, certificates):
    with running_deputy(tmp_path_factory, extra_env={"DEPUTY_CA_BUNDLE": str(certificates["ca"])}) as own:
        response = requests.put(own.url("/api/2.0/deputy/local-password"), json={"password": ADMIN_PASSWORD},
                                headers={"Authorization": f"Bearer {own.admin_token}"}, timeout=TIMEOUT_SECONDS)
        assert response.status_code == 200, response.text
        yield own


# --- the flow ------------------------------------------------------------------------------------------------------


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(server, client_id, redirect_uri=REDIRECT_URI, scope="sql offline_access", state="cimd-state"):
    _, challenge = pkce()
    return server.url("/oidc/v1/authorize?") + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": state, "code_challenge": challenge, "code_challenge_method": "S256"})


def sign_in(server, client_id, scope="sql offline_access"):
    """The whole flow by hand: authorize, the admin's password, consent (approved), the code at the token endpoint
    as a public client. Returns (the redirect's parameters, the token endpoint's JSON, the browser)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    browser = Browser(server.host, "admin", ADMIN_PASSWORD, REDIRECT_URI)
    answer = browser.play(server.url("/oidc/v1/authorize?") + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": scope,
        "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}))
    assert "code" in answer, answer
    assert answer["state"] == state, answer
    tokens = requests.post(server.url("/oidc/v1/token"), timeout=TIMEOUT_SECONDS, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "client_id": client_id, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    return answer, tokens.json(), browser


def me(server, token):
    return requests.get(server.url("/api/2.0/preview/scim/v2/Me"), headers={"Authorization": f"Bearer {token}"},
                        timeout=TIMEOUT_SECONDS)


def assert_error_page(response, *mentions):
    """An error page at Deputy, not a redirect back to the client; it says each of `mentions`."""
    assert response.status_code == 400, (response.status_code, response.headers, response.text[:2000])
    assert "Location" not in response.headers, response.headers
    assert response.headers.get("Content-Type", "").startswith("text/html"), response.headers
    assert "Sign-in failed" in response.text, response.text[:2000]
    for mention in mentions:
        assert mention in response.text, (mention, response.text[:2000])


def stored_apps(server):
    account = requests.get(server.url("/.well-known/databricks-config"), timeout=TIMEOUT_SECONDS).json()["workspace_id"]
    listed = requests.get(server.url(f"/api/2.0/accounts/{account}/oauth2/custom-app-integrations"),
                          headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=TIMEOUT_SECONDS)
    assert listed.status_code == 200, listed.text
    return {app["client_id"]: app for app in listed.json()["apps"]}


def refusal(server, client_id, redirect_uri=REDIRECT_URI):
    return requests.get(authorize_url(server, client_id, redirect_uri), allow_redirects=False, timeout=TIMEOUT_SECONDS)


# --- tests ---------------------------------------------------------------------------------------------------------


def test_the_authorization_server_metadata_says_metadata_documents_are_supported(deputy):
    metadata = requests.get(deputy.url("/.well-known/oauth-authorization-server/oidc"), timeout=TIMEOUT_SECONDS)
    assert metadata.status_code == 200, metadata.text
    assert metadata.json().get("client_id_metadata_document_supported") is True, metadata.json()
    assert "none" in metadata.json().get("token_endpoint_auth_methods_supported", ["none"])


def test_a_client_signs_in_with_its_metadata_document(deputy, documents):
    client_id = documents.url(GOOD)
    before = len(documents.requested(GOOD))
    answer, tokens, browser = sign_in(deputy, client_id)

    fetched = documents.requested(GOOD)[before:]
    assert len(fetched) == 1, fetched
    assert fetched[0][0] == "GET"
    assert "application/json" in {k.lower(): v for k, v in fetched[0][2].items()}.get("accept", ""), fetched[0][2]

    [consent] = browser.consent_pages
    assert f"{CLIENT_NAME} (from localhost)" in consent, consent[:3000]
    assert "sql" in consent, consent[:3000]

    issuer = requests.get(deputy.url("/.well-known/oauth-authorization-server/oidc"),
                          timeout=TIMEOUT_SECONDS).json()["issuer"]
    assert answer.get("iss") == issuer, answer

    assert tokens["access_token"] and tokens.get("token_type", "").lower() == "bearer", tokens
    assert tokens.get("refresh_token"), tokens  # offline_access
    answered = me(deputy, tokens["access_token"])
    assert answered.status_code == 200 and answered.json()["userName"] == "admin", answered.text

    refreshed = requests.post(deputy.url("/oidc/v1/token"), timeout=TIMEOUT_SECONDS, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id})
    assert refreshed.status_code == 200, refreshed.text
    assert me(deputy, refreshed.json()["access_token"]).status_code == 200

    app = stored_apps(deputy)[client_id]
    assert app["name"] == f"{CLIENT_NAME} (from localhost)", app
    assert app["confidential"] is False, app
    assert app["redirect_urls"] == [REDIRECT_URI], app


def test_the_code_of_a_metadata_document_client_needs_its_verifier(deputy, documents):
    client_id = documents.url(GOOD)
    verifier, challenge = pkce()
    browser = Browser(deputy.host, "admin", ADMIN_PASSWORD, REDIRECT_URI)
    answer = browser.play(deputy.url("/oidc/v1/authorize?") + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "sql",
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}))
    refused = requests.post(deputy.url("/oidc/v1/token"), timeout=TIMEOUT_SECONDS, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT_URI,
        "client_id": client_id, "code_verifier": pkce()[0]})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text


@pytest.mark.parametrize("path", sorted(BAD), ids=lambda path: path.rsplit("/", 1)[1].removesuffix(".json"))
def test_a_bad_document_is_refused_with_an_error_page(deputy, documents, path):
    client_id = documents.url(path)
    before = len(documents.requested(path))
    why, says = BAD[path]
    response = refusal(deputy, client_id)
    assert_error_page(response, "client metadata document", client_id, html.escape(says, quote=True))
    assert len(documents.requested(path)) == before + 1, f"{why}: Deputy did not fetch the document"
    assert client_id not in stored_apps(deputy), why


def test_a_redirect_is_not_followed(deputy, documents):
    before = len(documents.requested(GOOD))
    assert_error_page(refusal(deputy, documents.url("/clients/redirects.json")), "302")
    assert len(documents.requested(GOOD)) == before, "Deputy followed the document's redirect"


def test_a_redirect_uri_the_document_does_not_name_is_refused(deputy, documents):
    for redirect_uri in ("http://127.0.0.1:9/elsewhere", "https://attacker.example/callback"):
        response = refusal(deputy, documents.url(GOOD), redirect_uri=redirect_uri)
        assert_error_page(response, "is not a redirect URI of this app")


def test_a_plain_http_url_is_an_unknown_client_and_is_not_fetched(deputy, documents):
    client_id = f"http://localhost:{documents.port}{GOOD}"
    before = len(documents.requests)
    assert_error_page(refusal(deputy, client_id), "no app has client id")
    assert len(documents.requests) == before, documents.requests[before:]
    assert client_id not in stored_apps(deputy)


@pytest.mark.parametrize("client_id", [
    "https://localhost:{port}/clients/good.json?v=1",
    "https://localhost:{port}/clients/good.json#x",
    "https://user@localhost:{port}/clients/good.json",
    "https://localhost:{port}/clients/../clients/good.json",
    "https://LOCALHOST:{port}/clients/good.json",
    "https://localhost:{port}/",
], ids=["query", "fragment", "userinfo", "dot-segments", "upper-case-host", "no-path"])
def test_a_url_not_in_its_plain_form_is_an_unknown_client_and_is_not_fetched(deputy, documents, client_id):
    client_id = client_id.format(port=documents.port)
    before = len(documents.requests)
    assert_error_page(refusal(deputy, client_id), "no app has client id")
    assert len(documents.requests) == before, documents.requests[before:]


def test_a_document_server_that_is_down_is_refused(deputy):
    client_id = f"https://localhost:{free_loopback_port()}/clients/good.json"
    assert_error_page(refusal(deputy, client_id), "client metadata document", client_id, "cannot be fetched")
    assert client_id not in stored_apps(deputy)


def test_a_document_behind_a_certificate_the_bundle_does_not_vouch_for_is_refused(deputy, stranger):
    client_id = stranger.url(GOOD)
    before = stranger.connections
    assert_error_page(refusal(deputy, client_id), "client metadata document", client_id, "cannot be fetched")
    # Deputy did connect (so the refusal is the certificate's, not a connection failure) but sent no request.
    assert stranger.connections > before, "Deputy never connected to the server with the unknown certificate"
    assert stranger.requested(GOOD) == [], "the document was sent over a connection Deputy should not trust"
    assert client_id not in stored_apps(deputy)


def test_nothing_is_stored_for_refused_documents_and_a_good_client_still_signs_in(deputy, documents, stranger):
    refused = [documents.url(path) for path in BAD] + [stranger.url(GOOD), f"http://localhost:{documents.port}{GOOD}"]
    for client_id in refused:
        assert refusal(deputy, client_id).status_code == 400, client_id
    stored = stored_apps(deputy)
    assert not set(refused) & set(stored), sorted(set(refused) & set(stored))
    assert not [app for app in stored.values() if "(from " in app["name"] and app["client_id"] != documents.url(GOOD)], \
        stored
    _, tokens, _ = sign_in(deputy, documents.url(GOOD))
    answered = me(deputy, tokens["access_token"])
    assert answered.status_code == 200 and answered.json()["userName"] == "admin", answered.text


def test_without_the_bundle_the_same_document_is_refused(server, documents):
    """The session's Deputy has no `DEPUTY_CA_BUNDLE`: the throwaway CA is what makes the document's server trusted."""
    client_id = documents.url(GOOD)
    assert_error_page(refusal(server, client_id), "client metadata document", client_id, "cannot be fetched")


def test_a_document_that_changed_replaces_the_app_and_its_consent(deputy, documents):
    path = "/clients/changing.json"
    client_id = documents.url(path)
    documents.serve_json(path, client_document(client_id, client_name="Before"))
    _, _, browser = sign_in(deputy, client_id)
    [consent] = browser.consent_pages
    assert "Before (from localhost)" in consent
    _, _, browser = sign_in(deputy, client_id)
    assert browser.consent_pages == [], "an unchanged document's app asked again"
    documents.serve_json(path, client_document(client_id, client_name="After"))
    _, tokens, browser = sign_in(deputy, client_id)
    [consent] = browser.consent_pages
    assert "After (from localhost)" in consent and "Before" not in consent
    assert stored_apps(deputy)[client_id]["name"] == "After (from localhost)"
    assert me(deputy, tokens["access_token"]).status_code == 200
