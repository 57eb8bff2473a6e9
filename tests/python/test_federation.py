"""Token federation with a real identity provider (tests/idp: oidc-provider on Node.js, on loopback): the real SDK's
`env-oidc` auth exchanges the provider's JWTs for Deputy tokens, for a workload (a service principal's policy) and
for a person (an account-wide policy whose subject claim is the email); tokens the policies do not cover are refused;
and an on-behalf-of agent invoked with the federated person's token acts as that person."""

import base64
import hashlib
import os
import secrets
import urllib.parse
from pathlib import Path

import pytest
import requests
from databricks.sdk import WorkspaceClient

from agent_helpers import ask, deploy, let_users_query, set_obo
from idp import TestIdentityProvider, decode_jwt_unverified, sign_in, token_request

CALLBACK = "http://127.0.0.1:9/callback"
CI_AUDIENCE = "https://deputy.test/ci"
PERSON = "fed-alice@example.com"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def provider():
    return TestIdentityProvider(
        clients=[
            {"client_id": "ci-system", "client_secret": "ci-secret", "grant_types": ["client_credentials"],
             "response_types": [], "redirect_uris": []},
            {"client_id": "other-system", "client_secret": "other-secret", "grant_types": ["client_credentials"],
             "response_types": [], "redirect_uris": []},
            {"client_id": "people-app", "client_secret": "people-secret", "redirect_uris": [CALLBACK]},
        ],
        accounts=[{"sub": "fed-alice", "email": PERSON, "email_verified": True, "name": "Fed Alice",
                   "groups": ["engineers"], "password": "alice-pw"}],
    )


@pytest.fixture(scope="module")
def idp():
    with provider() as running:
        yield running


def admin_call(server, method, path, **kwargs):
    return requests.request(method, server.url(path), headers={"Authorization": f"Bearer {server.admin_token}"},
                            timeout=10, **kwargs)


@pytest.fixture(scope="module")
def setup(server, idp):
    """A user and a service principal, an account-wide policy (email names the user) and the principal's policy."""
    user = admin_call(server, "POST", "/api/2.0/preview/scim/v2/Users", json={"userName": PERSON})
    assert user.status_code in (200, 201), user.text
    sp = admin_call(server, "POST", "/api/2.0/preview/scim/v2/ServicePrincipals", json={"displayName": "ci-robot"})
    assert sp.status_code in (200, 201), sp.text
    account = admin_call(server, "GET", "/.well-known/databricks-config").json()["workspace_id"]
    people = admin_call(
        server, "POST", f"/api/2.0/accounts/{account}/federationPolicies", params={"policy_id": "people"},
        json={"description": "the organisation's sign-in",
              "oidc_policy": {"issuer": idp.issuer, "audiences": ["people-app"], "subject_claim": "email"}})
    assert people.status_code == 200, people.text
    workload = admin_call(
        server, "POST", f"/api/2.0/accounts/{account}/servicePrincipals/{sp.json()['id']}/federationPolicies",
        json={"oidc_policy": {"issuer": idp.issuer, "audiences": [CI_AUDIENCE], "subject": "ci-system"}})
    assert workload.status_code == 200, workload.text
    assert workload.json()["oidc_policy"]["subject_claim"] == "sub"
    return {"application_id": sp.json()["applicationId"], "account": account}


def id_token_of(idp, login, password):
    """Signs `login` in at the provider as a browser would (code + PKCE) and returns their ID token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "client_id": "people-app", "response_type": "code", "redirect_uri": CALLBACK, "state": "s", "nonce": "n",
        "scope": "openid email profile groups", "code_challenge": challenge, "code_challenge_method": "S256"})
    redirect = sign_in(requests.Session(), f"{idp.discovery()['authorization_endpoint']}?{query}", login, password,
                       stop_at=CALLBACK)
    code = urllib.parse.parse_qs(urllib.parse.urlparse(redirect.headers["Location"]).query)["code"][0]
    tokens = token_request(idp.token_endpoint, {"grant_type": "authorization_code", "code": code,
                                                "redirect_uri": CALLBACK, "code_verifier": verifier},
                           "people-app", "people-secret")
    assert tokens.status_code == 200, tokens.text
    return tokens.json()["id_token"]


def env_oidc_client(server, monkeypatch, jwt, client_id=None):
    monkeypatch.setenv("DATABRICKS_OIDC_TOKEN", jwt)
    return WorkspaceClient(host=server.host, auth_type="env-oidc", client_id=client_id)


def exchange(server, jwt, **extra):
    return requests.post(server.url("/oidc/v1/token"), timeout=10, data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": jwt, "subject_token_type": JWT_TYPE, **extra})


def test_a_workload_federates_as_its_service_principal(server, idp, setup, monkeypatch):
    jwt = idp.client_credentials_jwt("ci-system", "ci-secret", resource=CI_AUDIENCE)
    assert decode_jwt_unverified(jwt)[1]["iss"] == idp.issuer
    w = env_oidc_client(server, monkeypatch, jwt, client_id=setup["application_id"])
    assert w.current_user.me().user_name == setup["application_id"]


def test_a_person_federates_as_the_user_their_email_names(server, idp, setup, monkeypatch):
    jwt = id_token_of(idp, "fed-alice", "alice-pw")
    w = env_oidc_client(server, monkeypatch, jwt)
    assert w.current_user.me().user_name == PERSON


def test_tokens_the_policies_do_not_cover_are_refused(server, idp, setup):
    def refused(reply, phrase):
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"] == "invalid_grant", reply.text
        assert phrase in reply.json()["error_description"], reply.text

    # A workload token for another audience, or presented without the service principal whose policy covers it.
    other_audience = idp.client_credentials_jwt("ci-system", "ci-secret", resource="https://elsewhere.test")
    refused(exchange(server, other_audience, client_id=setup["application_id"]), "InvalidAudience")
    ci_token = idp.client_credentials_jwt("ci-system", "ci-secret", resource=CI_AUDIENCE)
    refused(exchange(server, ci_token), "InvalidAudience")
    # Another workload of the same issuer, for the same audience: the principal's policy fixes the subject.
    other_workload = idp.client_credentials_jwt("other-system", "other-secret", resource=CI_AUDIENCE)
    refused(exchange(server, other_workload, client_id=setup["application_id"]), "not the expected subject")
    # A person's token with a service principal named: only that principal's policies apply.
    refused(exchange(server, id_token_of(idp, "fed-alice", "alice-pw"), client_id=setup["application_id"]),
            "InvalidAudience")
    # A signature that does not verify: the payload of a genuine token with another's signature.
    header, payload, _ = ci_token.split(".")
    forged = ".".join([header, payload, other_audience.split(".")[2]])
    refused(exchange(server, forged, client_id=setup["application_id"]), "InvalidSignature")
    # An issuer no policy trusts: another provider, with the same clients and accounts.
    with provider() as untrusted:
        stranger = untrusted.client_credentials_jwt("ci-system", "ci-secret", resource=CI_AUDIENCE)
        refused(exchange(server, stranger, client_id=setup["application_id"]), "trusts issuer")


def test_an_agent_invoked_by_a_federated_person_acts_as_that_person(server, idp, setup):
    reply = exchange(server, id_token_of(idp, "fed-alice", "alice-pw"))
    assert reply.status_code == 200, reply.text
    token = reply.json()["access_token"]
    binary = Path(os.environ["DEPUTY_BIN"]).parent / "examples" / "whoami_agent"
    deployed = deploy(server, "whoami-federated", binary, ["iam.scim", "catalog.catalogs"])
    let_users_query(server, deployed["id"])
    was_on = admin_call(server, "GET", "/api/2.0/deputy/settings").json()["obo-enabled"]
    set_obo(server, True)
    try:
        answer = ask(server, token, "whoami-federated", "who am I?")
    finally:
        set_obo(server, was_on)
    assert answer.status_code == 200, answer.text
    text = answer.json()["messages"][-1]["content"]
    assert f"You are {PERSON}" in text and "I am agent:whoami-federated" in text, text


def test_policies_are_listed_and_removed(server, setup):
    path = f"/api/2.0/accounts/{setup['account']}/federationPolicies"
    listed = admin_call(server, "GET", path).json()["policies"]
    assert [policy["policy_id"] for policy in listed] == ["people"]
    assert admin_call(server, "GET", "/api/2.0/accounts/999/federationPolicies").status_code == 404
    created = admin_call(server, "POST", path, json={"oidc_policy": {"issuer": "http://idp.example.com"}})
    assert created.status_code == 400 and created.json()["error_code"] == "INVALID_PARAMETER_VALUE", created.text
    assert admin_call(server, "DELETE", f"{path}/people").status_code == 200
    assert admin_call(server, "GET", f"{path}/people").status_code == 404
