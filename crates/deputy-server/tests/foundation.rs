//! Router-level tests of the foundation: bootstrap, credentials, token exchange, forged tokens, the scope registry and
//! error shapes. Each test drives `app(state)` with `oneshot`, no socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_core::{ApiScope, ScopeSet};
use deputy_server::prepare;
use deputy_server::routes::Requires;
use deputy_tokens::AccessClaims;
use serde_json::{Value, json};
use support::{BASE_URL, Harness, SCIM, harness, now, payload};

#[tokio::test]
async fn bootstrap_creates_admin_and_restart_reuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let database = deputy_store::testing::fresh_postgres_database();
    let (state, first) = prepare(dir.path(), database.as_deref(), BASE_URL)
        .await
        .unwrap();
    assert!(first.wrote_admin_token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.admin_token_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin_token = std::fs::read_to_string(&first.admin_token_path)
        .unwrap()
        .trim()
        .to_owned();
    let jwt = state
        .access()
        .credentials()
        .sign(&{
            let credentials = state.access().credentials();
            AccessClaims::issue(
                &credentials.issuer(),
                &credentials.audience(),
                "admin",
                ScopeSet::all(),
                now(),
                600,
            )
            .unwrap()
        })
        .unwrap();
    drop(state);

    let (state, second) = prepare(dir.path(), database.as_deref(), BASE_URL)
        .await
        .unwrap();
    assert_eq!(second.workspace_id, first.workspace_id);
    assert!(!second.wrote_admin_token);
    assert_eq!(
        std::fs::read_to_string(&second.admin_token_path)
            .unwrap()
            .trim(),
        admin_token
    );
    let harness = Harness {
        dir,
        database,
        state,
        admin_token: admin_token.clone(),
    };
    let me = harness.me(&admin_token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["userName"], "admin");
    assert!(
        me.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["display"] == "admins")
    );
    // The signing key survived the restart: a token signed before it still verifies.
    assert_eq!(harness.me(&jwt).await.status, StatusCode::OK);
    let config = harness
        .call(Method::GET, "/.well-known/databricks-config", None, None)
        .await;
    assert_eq!(config.body["workspace_id"], first.workspace_id.to_string());
    assert_eq!(config.body["oidc_endpoint"], format!("{BASE_URL}/oidc"));
}

#[tokio::test]
async fn personal_access_tokens_are_created_used_listed_and_revoked() {
    let h = harness().await;
    let created = h
        .call(
            Method::POST,
            "/api/2.0/token/create",
            Some(&h.admin_token),
            Some(json!({ "comment": "ci", "lifetime_seconds": 60 })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let value = created.body["token_value"].as_str().unwrap().to_owned();
    let token_id = created.body["token_info"]["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(value.starts_with("dapi"));
    assert!(created.body["token_info"]["expiry_time"].as_i64().unwrap() > 0);
    assert_eq!(h.me(&value).await.status, StatusCode::OK);

    let listed = h
        .call(Method::GET, "/api/2.0/token/list", Some(&value), None)
        .await;
    let ids: Vec<&str> = listed.body["token_infos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&token_id.as_str()));
    assert!(
        !listed.body.to_string().contains(&value),
        "a listing must never contain a token value"
    );

    let deleted = h
        .call(
            Method::POST,
            "/api/2.0/token/delete",
            Some(&h.admin_token),
            Some(json!({ "token_id": token_id })),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let refused = h.me(&value).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["error_code"], "UNAUTHENTICATED");
    let again = h
        .call(
            Method::POST,
            "/api/2.0/token/delete",
            Some(&h.admin_token),
            Some(json!({ "token_id": token_id })),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_cannot_delete_or_see_other_users_tokens() {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let bob = h.create_user("bob@example.com").await;
    let alice_token = h
        .token_for(alice["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let bob_token = h
        .token_for(bob["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let bob_tokens = h
        .call(Method::GET, "/api/2.0/token/list", Some(&bob_token), None)
        .await;
    let bob_token_id = bob_tokens.body["token_infos"][0]["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_list = h
        .call(Method::GET, "/api/2.0/token/list", Some(&alice_token), None)
        .await;
    assert!(!alice_list.body.to_string().contains(&bob_token_id));
    let attempt = h
        .call(
            Method::POST,
            "/api/2.0/token/delete",
            Some(&alice_token),
            Some(json!({ "token_id": bob_token_id })),
        )
        .await;
    assert_eq!(attempt.status, StatusCode::NOT_FOUND);
    assert_eq!(h.me(&bob_token).await.status, StatusCode::OK);
    let management = h
        .call(
            Method::GET,
            "/api/2.0/token-management/tokens",
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(management.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_new_token_never_holds_scopes_its_creator_lacks() {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let narrow = h
        .token_for(alice["id"].as_str().unwrap(), &["sql", "authentication"])
        .await;
    let wider = h
        .call(
            Method::POST,
            "/api/2.0/token/create",
            Some(&narrow),
            Some(json!({ "scopes": ["all-apis"] })),
        )
        .await;
    assert_eq!(wider.status, StatusCode::FORBIDDEN, "{:?}", wider.body);
    let same = h
        .call(
            Method::POST,
            "/api/2.0/token/create",
            Some(&narrow),
            Some(json!({})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    let scopes: Vec<&str> = same.body["token_info"]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        scopes.contains(&"sql.statement-execution") && !scopes.contains(&"iam.scim"),
        "{scopes:?}"
    );
}

#[tokio::test]
async fn client_credentials_issue_scoped_tokens_and_refuse_bad_secrets() {
    let h = harness().await;
    let (client_id, secret) = h.service_principal("agent").await;
    let granted = h.client_credentials(&client_id, &secret, "sql").await;
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.body);
    assert_eq!(granted.body["token_type"], "Bearer");
    assert!(granted.body["expires_in"].as_i64().unwrap() > 0);
    let token = granted.body["access_token"].as_str().unwrap();
    let claims = payload(token);
    assert_eq!(claims["sub"], client_id.as_str());
    assert_eq!(claims["scope"], "sql.warehouses sql.statement-execution");
    let me = h.me(token).await;
    assert_eq!(me.body["applicationId"], client_id.as_str());
    let users = h
        .call(Method::GET, &format!("{SCIM}/Users"), Some(token), None)
        .await;
    assert_eq!(users.status, StatusCode::FORBIDDEN);
    assert!(users.body["message"].as_str().unwrap().contains("iam.scim"));

    let wrong = h
        .client_credentials(&client_id, "dose-wrong", "all-apis")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"], "invalid_client");
    assert!(wrong.headers.get(header::CONTENT_TYPE).is_some());
    let unknown_scope = h
        .client_credentials(&client_id, &secret, "all-apis nonsense")
        .await;
    assert_eq!(unknown_scope.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_scope.body["error"], "invalid_scope");
    assert!(
        unknown_scope.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid scope")
    );
}

#[tokio::test]
async fn token_exchange_narrows_nests_actors_and_clamps_expiry() {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let alice_token = h
        .token_for(
            alice["id"].as_str().unwrap(),
            &["sql", "serving", "vector-search"],
        )
        .await;
    let (agent_id, agent_secret) = h.service_principal("agent").await;
    let (helper_id, helper_secret) = h.service_principal("helper").await;
    let agent_token = h
        .client_credentials(&agent_id, &agent_secret, "all-apis")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let helper_token = h
        .client_credentials(&helper_id, &helper_secret, "all-apis")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Asking for a scope the subject lacks is refused, not silently granted.
    let wider = h
        .exchange(&alice_token, Some(&agent_token), Some("sql iam.scim"))
        .await;
    assert_eq!(wider.status, StatusCode::BAD_REQUEST);
    assert_eq!(wider.body["error"], "invalid_scope");

    let first = h
        .exchange(
            &alice_token,
            Some(&agent_token),
            Some("sql serving.serving-endpoints"),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(
        first.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let first_token = first.body["access_token"].as_str().unwrap().to_owned();
    let claims = payload(&first_token);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(
        claims["scope"],
        "serving.serving-endpoints sql.warehouses sql.statement-execution"
    );
    assert_eq!(claims["act"], json!({ "sub": agent_id }));

    let second = h
        .exchange(
            &first_token,
            Some(&helper_token),
            Some("sql.statement-execution"),
        )
        .await;
    let second_token = second.body["access_token"].as_str().unwrap().to_owned();
    let claims = payload(&second_token);
    assert_eq!(claims["scope"], "sql.statement-execution");
    assert_eq!(
        claims["act"],
        json!({ "sub": helper_id, "act": { "sub": agent_id } })
    );
    // The chained token cannot widen back.
    let widen = h
        .exchange(&second_token, None, Some("serving.serving-endpoints"))
        .await;
    assert_eq!(widen.body["error"], "invalid_scope");

    // A subject token that expires in 30 s caps every token exchanged from it.
    let mut short = h.claims_for("alice@example.com", ScopeSet::parse("sql").unwrap());
    short.exp = now() + 30;
    let short_token = h.sign(&short);
    let exchanged = h.exchange(&short_token, Some(&agent_token), None).await;
    assert_eq!(
        payload(exchanged.body["access_token"].as_str().unwrap())["exp"]
            .as_i64()
            .unwrap(),
        short.exp
    );

    // The delegated token cannot mint a long-lived personal access token.
    let mint = h
        .call(
            Method::POST,
            "/api/2.0/token/create",
            Some(&first_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(mint.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn revocation_and_introspection() {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let alice_token = h
        .token_for(alice["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let exchanged = h.exchange(&alice_token, None, Some("sql")).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let own = h
        .form("/oidc/v1/introspect", &[("token", &exchanged)], None)
        .await;
    assert_eq!(
        own.status,
        StatusCode::UNAUTHORIZED,
        "introspection needs a caller"
    );
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/oidc/v1/introspect");
    request = request.header(header::AUTHORIZATION, format!("Bearer {alice_token}"));
    let body = serde_urlencoded::to_string([("token", exchanged.as_str())]).unwrap();
    let introspected = h.send(request.body(Body::from(body)).unwrap()).await;
    assert_eq!(introspected.body["active"], true);
    assert_eq!(introspected.body["sub"], "alice@example.com");
    assert_eq!(
        introspected.body["scope"],
        "sql.warehouses sql.statement-execution"
    );

    let revoked = h
        .form("/oidc/v1/revoke", &[("token", &exchanged)], None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let refused = h.me(&exchanged).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    // Revoking garbage answers 200 and reveals nothing.
    assert_eq!(
        h.form("/oidc/v1/revoke", &[("token", "garbage")], None)
            .await
            .status,
        StatusCode::OK
    );
    // A revoked token cannot be exchanged either.
    assert_eq!(
        h.exchange(&exchanged, None, None).await.body["error"],
        "invalid_grant"
    );
}

/// Forged and tampered tokens, all refused with 401 at the HTTP edge. (The token crate tests each rule in depth.)
#[tokio::test]
async fn forged_tokens_are_refused() {
    let h = harness().await;
    // A narrow genuine token, so that rewriting its scope to `all-apis` really is a widening.
    let genuine = h.sign(&h.claims_for("admin", ScopeSet::parse("sql").unwrap()));
    assert_eq!(h.me(&genuine).await.status, StatusCode::OK);
    let [header_b64, payload_b64, signature] = genuine.split('.').collect::<Vec<_>>()[..] else {
        panic!()
    };
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_b64).unwrap()).unwrap();
    let with_header = |changes: Value| {
        let mut header = header.clone();
        header
            .as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        format!("{}.{payload_b64}.{signature}", encode(&header))
    };
    let with_claims = |changes: Value| {
        let mut claims = claims.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        format!("{header_b64}.{}.{signature}", encode(&claims))
    };
    let hs256_with_public_key = {
        use hmac::{Hmac, Mac};
        let jwks = h.state.access().credentials().jwks();
        let public_key = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let header = encode(&json!({ "alg": "HS256", "typ": "at+jwt", "kid": header["kid"] }));
        let message = format!("{header}.{payload_b64}");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&public_key).unwrap();
        mac.update(message.as_bytes());
        format!(
            "{message}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let mut expired = h.claims_for("admin", ScopeSet::all());
    (expired.iat, expired.nbf, expired.exp) = (now() - 700, now() - 700, now() - 100);
    let mut future = h.claims_for("admin", ScopeSet::all());
    (future.iat, future.nbf, future.exp) = (now() + 300, now() + 300, now() + 600);
    let mut revoked = h.claims_for("admin", ScopeSet::all());
    revoked.jti = "revoked-jti".into();
    let revoked_token = h.sign(&revoked);
    h.state
        .access()
        .credentials()
        .revoke_access_token("revoked-jti", revoked.exp)
        .await
        .unwrap();

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{payload_b64}.",
                encode(&json!({ "alg": "none", "typ": "at+jwt", "kid": header["kid"] }))
            ),
        ),
        ("HS256 signed with the public key", hs256_with_public_key),
        ("unknown kid", with_header(json!({ "kid": "no-such-key" }))),
        (
            "kid path trick",
            with_header(json!({ "kid": "../../etc/passwd" })),
        ),
        ("expired", h.sign(&expired)),
        ("nbf in the future", h.sign(&future)),
        (
            "wrong issuer",
            with_claims(json!({ "iss": "https://evil.example/oidc" })),
        ),
        (
            "wrong audience",
            with_claims(json!({ "aud": "https://other.example" })),
        ),
        (
            "payload edited after signing",
            with_claims(json!({ "sub": "someone-else" })),
        ),
        (
            "scope widened after signing",
            with_claims(json!({ "scope": "all-apis" })),
        ),
        ("revoked jti", revoked_token),
        ("huge token", format!("{genuine}{}", "A".repeat(100_000))),
        ("garbage", "eyJ.not.a-token".into()),
    ];
    for (name, token) in cases {
        let reply = h.me(&token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error_code"], "UNAUTHENTICATED", "{name}");
        assert_ne!(
            token, genuine,
            "{name}: a forgery must differ from the genuine token"
        );
    }
}

fn sample_path(path: &str) -> String {
    // Any value will do for path parameters: authorization happens before the handler looks anything up.
    let mut sample = String::new();
    let mut in_parameter = false;
    for character in path.chars() {
        match character {
            '{' => in_parameter = true,
            '}' => {
                in_parameter = false;
                sample.push('1');
            }
            _ if in_parameter => {}
            other => sample.push(other),
        }
    }
    sample
}

/// Every scoped route refuses a token that holds every scope but its own, naming the missing scope; every
/// non-public route refuses a request without credentials.
#[tokio::test]
async fn every_route_enforces_its_declared_scope() {
    let h = harness().await;
    let routes: Vec<(Method, &str, Requires)> = h
        .state
        .registry()
        .iter()
        .map(|(method, path, access)| (method.clone(), path, access))
        .collect();
    assert!(
        routes.len() >= 30,
        "the registry lists {} routes",
        routes.len()
    );
    let mut scoped = 0;
    for (method, path, access) in routes {
        let uri = sample_path(path);
        if access != Requires::Public {
            let anonymous = h.call(method.clone(), &uri, None, Some(json!({}))).await;
            assert_eq!(
                anonymous.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
        }
        if let Requires::Scope(scope) = access {
            scoped += 1;
            let all_but_one: ScopeSet = ApiScope::ALL.into_iter().filter(|s| *s != scope).collect();
            let token = h.sign(&h.claims_for("admin", all_but_one));
            let reply = h
                .call(method.clone(), &uri, Some(&token), Some(json!({})))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{method} {path}: {:?}",
                reply.body
            );
            assert_eq!(reply.body["error_code"], "PERMISSION_DENIED");
            assert!(
                reply.body["message"]
                    .as_str()
                    .unwrap()
                    .contains(scope.name()),
                "{method} {path}"
            );
        }
    }
    assert!(scoped >= 25);
}

#[tokio::test]
async fn errors_use_the_databricks_format() {
    let h = harness().await;
    let unknown = h
        .call(
            Method::GET,
            "/api/2.0/no-such-api",
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error_code"], "ENDPOINT_NOT_FOUND");

    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{SCIM}/Users"))
        .header(header::AUTHORIZATION, format!("Bearer {}", h.admin_token))
        .body(Body::from("{\"userName\": "))
        .unwrap();
    let malformed = h.send(request).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["error_code"], "MALFORMED_REQUEST");

    let huge = json!({ "userName": "x".repeat(deputy_server::MAX_BODY_BYTES + 1) });
    let oversized = h
        .call(
            Method::POST,
            &format!("{SCIM}/Users"),
            Some(&h.admin_token),
            Some(huge),
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(oversized.body["error_code"], "REQUEST_LIMIT_EXCEEDED");

    for bad_name in [
        "",
        " padded ",
        "tab\tname",
        "123e4567-e89b-12d3-a456-426614174000",
    ] {
        let reply = h
            .call(
                Method::POST,
                &format!("{SCIM}/Users"),
                Some(&h.admin_token),
                Some(json!({ "userName": bad_name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad_name:?}");
        assert_eq!(reply.body["error_code"], "INVALID_PARAMETER_VALUE");
    }
    // Nothing was stored by the refused requests.
    let users = h
        .call(
            Method::GET,
            &format!("{SCIM}/Users"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(users.body["totalResults"], 1);

    let duplicate = h
        .call(
            Method::POST,
            &format!("{SCIM}/Users"),
            Some(&h.admin_token),
            Some(json!({ "userName": "ADMIN" })),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.body["error_code"], "RESOURCE_ALREADY_EXISTS");
}

#[tokio::test]
async fn only_admins_change_identities_and_groups_nest() {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let in_users = alice["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|group| group["display"] == "users");
    assert!(
        in_users,
        "every new user joins the built-in `users` group: {alice}"
    );
    let alice_token = h
        .token_for(alice["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let refused = h
        .call(
            Method::POST,
            &format!("{SCIM}/Users"),
            Some(&alice_token),
            Some(json!({ "userName": "eve" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Reads are open to any holder of the scope.
    assert_eq!(
        h.call(
            Method::GET,
            &format!("{SCIM}/Users"),
            Some(&alice_token),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    let admin = Some(h.admin_token.as_str());
    let inner = h
        .call(
            Method::POST,
            &format!("{SCIM}/Groups"),
            admin,
            Some(json!({ "displayName": "analysts", "members": [{ "value": alice["id"] }] })),
        )
        .await
        .body;
    let outer = h
        .call(
            Method::POST,
            &format!("{SCIM}/Groups"),
            admin,
            Some(json!({ "displayName": "staff" })),
        )
        .await
        .body;
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{ "op": "add", "path": "members", "value": [{ "value": inner["id"] }] }] });
    let patched = h
        .call(
            Method::PATCH,
            &format!("{SCIM}/Groups/{}", outer["id"].as_str().unwrap()),
            admin,
            Some(patch),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["members"][0]["display"], "analysts");

    // Making alice an admin through a nested group grants admin rights on her next request.
    let admins = h
        .call(
            Method::GET,
            &format!("{SCIM}/Groups?filter=displayName%20eq%20%22admins%22"),
            admin,
            None,
        )
        .await
        .body;
    let admins_id = admins["Resources"][0]["id"].as_str().unwrap().to_owned();
    let patch = json!({ "Operations": [{ "op": "add", "path": "members", "value": [{ "value": outer["id"] }] }] });
    h.call(
        Method::PATCH,
        &format!("{SCIM}/Groups/{admins_id}"),
        admin,
        Some(patch),
    )
    .await;
    let allowed = h
        .call(
            Method::POST,
            &format!("{SCIM}/Users"),
            Some(&alice_token),
            Some(json!({ "userName": "eve" })),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{:?}", allowed.body);

    // Deactivating a user locks out her tokens at once.
    let deactivate =
        json!({ "Operations": [{ "op": "replace", "path": "active", "value": false }] });
    h.call(
        Method::PATCH,
        &format!("{SCIM}/Users/{}", alice["id"].as_str().unwrap()),
        admin,
        Some(deactivate),
    )
    .await;
    assert_eq!(h.me(&alice_token).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scim_lists_page_and_end_with_an_empty_page() {
    let h = harness().await;
    for index in 0..12 {
        h.create_user(&format!("user{index:02}@example.com")).await;
    }
    let page = h
        .call(
            Method::GET,
            &format!("{SCIM}/Users?startIndex=11&count=5"),
            Some(&h.admin_token),
            None,
        )
        .await
        .body;
    assert_eq!(page["totalResults"], 13);
    assert_eq!(page["Resources"].as_array().unwrap().len(), 3);
    let past = h
        .call(
            Method::GET,
            &format!("{SCIM}/Users?startIndex=14&count=5"),
            Some(&h.admin_token),
            None,
        )
        .await
        .body;
    assert_eq!(past["Resources"], json!([]));
    let filtered = h
        .call(
            Method::GET,
            &format!("{SCIM}/Users?filter=userName%20eq%20%22USER03@example.com%22"),
            Some(&h.admin_token),
            None,
        )
        .await
        .body;
    assert_eq!(filtered["Resources"][0]["userName"], "user03@example.com");
    let unsupported = h
        .call(
            Method::GET,
            &format!("{SCIM}/Users?filter=userName%20co%20%22x%22"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let h = harness().await;
    let before = h.sign(&h.claims_for("admin", ScopeSet::all()));
    let rotated = h
        .call(
            Method::POST,
            "/api/2.0/deputy/keys/rotate",
            Some(&h.admin_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let after = h.sign(&h.claims_for("admin", ScopeSet::all()));
    let kid = |token: &str| -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_ne!(kid(&before)["kid"], kid(&after)["kid"]);
    assert_eq!(kid(&after)["kid"], rotated.body["kid"]);
    assert_eq!(h.me(&before).await.status, StatusCode::OK);
    assert_eq!(h.me(&after).await.status, StatusCode::OK);
    let jwks = h.call(Method::GET, "/oidc/v1/keys", None, None).await.body;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

/// On PostgreSQL the server also hears its own writes announced and reloads the switches; a reload that read the
/// store before a later change committed must not put the earlier value back.
#[tokio::test]
async fn each_settings_change_reads_back_at_once_however_quickly_they_follow() {
    let h = harness().await;
    for round in 0..60 {
        let on = round % 2 == 0;
        let change = json!({ "obo-enabled": on, "consent-required": !on });
        let changed = h
            .call(
                Method::PATCH,
                "/api/2.0/deputy/settings",
                Some(&h.admin_token),
                Some(change.clone()),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert_eq!(changed.body, change, "round {round}");
        let read = h
            .call(
                Method::GET,
                "/api/2.0/deputy/settings",
                Some(&h.admin_token),
                None,
            )
            .await;
        assert_eq!(read.body, change, "round {round}");
    }
}

/// The on-behalf-of switches govern every agent, so each attempt to change them is audited: an admin's change with
/// the switches it set, anyone else's refused, and the refusal audited too.
#[tokio::test]
async fn settings_changes_are_admins_only_and_each_attempt_is_audited() {
    let h = harness().await;
    let user_token = h.new_user_token("ivy@example.com", &["all-apis"]).await;
    let change = |token: String, body: Value| {
        let h = &h;
        async move {
            h.call(
                Method::PATCH,
                "/api/2.0/deputy/settings",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let refused = change(user_token.clone(), json!({ "obo-enabled": true })).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error_code"], "PERMISSION_DENIED");
    let changed = change(h.admin_token.clone(), json!({ "consent-required": true })).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["consent-required"], true);
    let attempts = h.audited("serving.settings").await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .any(|(user, allowed, _)| user == "ivy@example.com" && !allowed)
    );
    assert!(
        attempts
            .iter()
            .any(|(user, allowed, reason)| user != "ivy@example.com"
                && *allowed
                && reason == "consent-required = true")
    );
}

/// Rotations at the same time each add their key: one must not replace the ring another just extended (nor may a
/// reload of a ring announced earlier), or tokens signed with the lost key would stop verifying.
#[tokio::test]
async fn concurrent_rotations_each_keep_their_key() {
    let h = harness().await;
    let rotate = || {
        h.call(
            Method::POST,
            "/api/2.0/deputy/keys/rotate",
            Some(&h.admin_token),
            Some(json!({})),
        )
    };
    let rotated = futures_util::future::join_all((0..6).map(|_| rotate())).await;
    let jwks = h.call(Method::GET, "/oidc/v1/keys", None, None).await.body;
    let published: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| &key["kid"])
        .collect();
    assert_eq!(published.len(), 7, "{jwks}");
    for reply in &rotated {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(published.contains(&&reply.body["kid"]), "{jwks}");
    }
}
