//! The web console through the whole application, as a browser would drive it (cookies kept, redirects followed):
//! sign-in through Deputy's own authorization endpoint with a local password, sessions, CSRF, escaping, admin-only
//! pages. The real-browser tests (Chromium, a real identity provider, an agent) are in tests/python/test_console.py.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use deputy_server::app;
use deputy_server::state::AppState;
use http_body_util::BodyExt;
use serde_json::json;
use std::collections::HashMap;
use support::{BASE_URL, SCIM, harness};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

/// A browser on one server: its cookie jar, and the last response.
struct Browser {
    state: AppState,
    base_url: String,
    cookies: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    content_security_policy: String,
    location: Option<String>,
    set_cookies: Vec<String>,
    text: String,
}

impl Browser {
    fn new(state: &AppState, base_url: &str) -> Browser {
        Browser {
            state: state.clone(),
            base_url: base_url.to_owned(),
            cookies: HashMap::new(),
        }
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra_headers: &[(&str, &str)],
    ) -> Page {
        let path = path.strip_prefix(&self.base_url).unwrap_or(path);
        let mut request = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header(header::COOKIE, jar.join("; "));
        }
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        let body = match form {
            Some(fields) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(serde_urlencoded::to_string(fields).unwrap())
            }
            None => Body::empty(),
        };
        let response = app(self.state.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect();
        for cookie in &set_cookies {
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status();
        let content_security_policy = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|value| value.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            content_security_policy,
            location,
            set_cookies,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.request(Method::GET, path, None, &[]).await
    }

    /// Follows redirects from `path` until a page answers.
    async fn visit(&mut self, path: &str) -> (String, Page) {
        let mut at = path.to_owned();
        for _ in 0..10 {
            let page = self.get(&at).await;
            match &page.location {
                Some(next) if page.status.is_redirection() => at = next.clone(),
                _ => return (at, page),
            }
        }
        panic!("too many redirects from {path}");
    }

    /// A console form, posted from the console's own origin.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.base_url.clone();
        self.request(Method::POST, path, Some(fields), &[("origin", &origin)])
            .await
    }

    /// Signs in through the console's login, Deputy's authorization endpoint and its password form.
    async fn sign_in(&mut self, user_name: &str) -> Page {
        let (at, form) = self.visit("/console/login").await;
        assert!(at.starts_with("/oidc/v1/authorize?"), "{at}");
        assert!(form.text.contains("name=\"password\""), "{}", form.text);
        let request_id = hidden_field(&form.text, "request");
        let answer = self
            .post(
                "/oidc/v1/login",
                &[
                    ("request", &request_id),
                    ("user_name", user_name),
                    ("password", PASSWORD),
                ],
            )
            .await;
        let callback = answer
            .location
            .expect("a redirect to the console's callback");
        assert!(
            callback.starts_with(&format!("{}/console/callback?", self.base_url)),
            "{callback}"
        );
        let (at, page) = self.visit(&callback).await;
        assert_eq!(at, "/console/agents");
        page
    }
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

async fn with_passwords(harness: &support::Harness, users: &[&str]) {
    for user in users {
        if *user != "admin" {
            harness.create_user(user).await;
        }
        let reply = harness
            .call(
                Method::PUT,
                "/api/2.0/deputy/local-password",
                Some(&harness.admin_token),
                Some(json!({ "user_name": user, "password": PASSWORD })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
}

#[tokio::test]
async fn a_person_signs_in_and_sees_their_pages_but_not_the_admin_page() {
    let harness = harness().await;
    with_passwords(&harness, &["alice@example.com"]).await;
    let mut alice = Browser::new(&harness.state, BASE_URL);
    let (_, start) = alice.visit("/").await;
    assert!(start.text.contains("id=\"sign-in\""), "{}", start.text);

    let agents = alice.sign_in("alice@example.com").await;
    assert_eq!(agents.status, StatusCode::OK);
    assert!(
        agents
            .text
            .contains("<span id=\"whoami\">alice@example.com</span>"),
        "{}",
        agents.text
    );
    assert!(
        !agents.text.contains("href=\"/console/admin\""),
        "{}",
        agents.text
    );
    for path in ["/console/access", "/console/activity"] {
        let page = alice.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
    }
    let admin_page = alice.get("/console/admin").await;
    assert_eq!(admin_page.status, StatusCode::FORBIDDEN);
    assert!(
        admin_page.text.contains("only workspace admins"),
        "{}",
        admin_page.text
    );

    // Every console page carries the headers that confine it.
    let response = app(harness.state.clone())
        .oneshot(Request::get("/console/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token_and_the_consoles_origin() {
    let harness = harness().await;
    with_passwords(&harness, &["admin"]).await;
    let mut admin = Browser::new(&harness.state, BASE_URL);
    admin.sign_in("admin").await;
    let page = admin.get("/console/admin").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let csrf = hidden_field(&page.text, "csrf_token");
    let settings = || async {
        harness
            .call(
                Method::GET,
                "/api/2.0/deputy/settings",
                Some(&harness.admin_token),
                None,
            )
            .await
            .body["obo-enabled"]
            .clone()
    };
    assert_eq!(settings().await, json!(false));

    let change = [("csrf_token", csrf.as_str()), ("obo-enabled", "true")];
    let forged = [
        admin
            .post("/console/admin/settings", &[("obo-enabled", "true")])
            .await,
        admin
            .post(
                "/console/admin/settings",
                &[("csrf_token", "guessed"), ("obo-enabled", "true")],
            )
            .await,
    ];
    let mut forged = forged.into_iter().collect::<Vec<_>>();
    // With the right token, but from elsewhere: another origin, a request the browser calls cross-site, an opaque
    // origin the browser does not vouch for.
    for headers in [
        &[("origin", "https://evil.example")][..],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "null")],
        &[("origin", "null"), ("sec-fetch-site", "same-site")],
    ] {
        forged.push(
            admin
                .request(
                    Method::POST,
                    "/console/admin/settings",
                    Some(&change),
                    headers,
                )
                .await,
        );
    }
    for refused in forged {
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    }
    assert_eq!(
        settings().await,
        json!(false),
        "a refused form changed the settings"
    );

    let accepted = admin.post("/console/admin/settings", &change).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.text);
    assert!(
        accepted
            .content_security_policy
            .contains("default-src 'none'")
    );
    assert_eq!(settings().await, json!(true));
    // Chromium's own form under the console's referrer policy: an opaque origin, vouched for as same-origin.
    let switch_off = [("csrf_token", csrf.as_str())];
    let same_origin = [("origin", "null"), ("sec-fetch-site", "same-origin")];
    let accepted = admin
        .request(
            Method::POST,
            "/console/admin/settings",
            Some(&switch_off),
            &same_origin,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.text);
    assert_eq!(settings().await, json!(false));
}

#[tokio::test]
async fn a_session_is_new_at_each_sign_in_and_ends_at_sign_out() {
    let harness = harness().await;
    with_passwords(&harness, &["alice@example.com"]).await;
    let mut alice = Browser::new(&harness.state, BASE_URL);
    // An attacker's cookie value, planted before sign-in, is never adopted.
    alice
        .cookies
        .insert("deputy_console".into(), "planted-by-attacker".into());
    let page = alice.get("/console/agents").await;
    assert_eq!(page.location.as_deref(), Some("/console/"));

    let agents = alice.sign_in("alice@example.com").await;
    let session = alice.cookies["deputy_console"].clone();
    assert_ne!(session, "planted-by-attacker");
    assert!(
        !alice.cookies.contains_key("deputy_console_login"),
        "the login cookie outlived the sign-in"
    );

    let csrf = hidden_field(&agents.text, "csrf_token");
    let signed_out = alice
        .post("/console/logout", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(!alice.cookies.contains_key("deputy_console"));
    // The old session id is dead, and a form without a session is refused, not redirected.
    alice.cookies.insert("deputy_console".into(), session);
    assert_eq!(
        alice.get("/console/agents").await.location.as_deref(),
        Some("/console/")
    );
    let form = alice
        .post("/console/logout", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cookies_are_http_only_and_behind_https_secure_host_cookies() {
    let harness = harness().await;
    with_passwords(&harness, &["alice@example.com"]).await;
    let mut alice = Browser::new(&harness.state, BASE_URL);
    alice.sign_in("alice@example.com").await;
    let login = alice.get("/console/login").await;
    let cookie = &login.set_cookies[0];
    assert!(cookie.starts_with("deputy_console_login="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Domain"),
        "{cookie}"
    );

    let dir = tempfile::tempdir().unwrap();
    let database = deputy_store::testing::fresh_postgres_database();
    let (https_state, _) = deputy_server::prepare(
        dir.path(),
        database.as_deref(),
        "https://deputy.example.com",
    )
    .await
    .unwrap();
    let mut browser = Browser::new(&https_state, "https://deputy.example.com");
    let login = browser.get("/console/login").await;
    let cookie = &login.set_cookies[0];
    assert!(
        cookie.starts_with("__Host-deputy_console_login="),
        "{cookie}"
    );
    assert!(
        cookie.contains("; Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let authorize = login.location.unwrap();
    assert!(
        authorize.contains("redirect_uri=https%3A%2F%2Fdeputy.example.com%2Fconsole%2Fcallback"),
        "{authorize}"
    );
}

#[tokio::test]
async fn a_session_the_api_no_longer_accepts_is_forgotten_not_bounced() {
    let harness = harness().await;
    with_passwords(&harness, &["alice@example.com"]).await;
    let mut alice = Browser::new(&harness.state, BASE_URL);
    alice.sign_in("alice@example.com").await;
    let users = harness
        .call(
            Method::GET,
            &format!("{SCIM}/Users?filter=userName%20eq%20%22alice@example.com%22"),
            Some(&harness.admin_token),
            None,
        )
        .await;
    let id = users.body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let disabled = harness
        .call(
            Method::PATCH,
            &format!("{SCIM}/Users/{id}"),
            Some(&harness.admin_token),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "replace", "path": "active", "value": false }],
            })),
        )
        .await;
    assert!(disabled.status.is_success(), "{:?}", disabled.body);

    let page = alice.get("/console/agents").await;
    assert_eq!(page.location.as_deref(), Some("/console/"));
    assert!(
        page.set_cookies
            .iter()
            .any(|cookie| cookie.starts_with("deputy_console=;")),
        "{:?}",
        page.set_cookies
    );
    // The redirect carries the page headers too, and the start page now offers sign-in instead of bouncing back.
    let (at, start) = alice.visit("/console/").await;
    assert_eq!(at, "/console/");
    assert!(start.text.contains("id=\"sign-in\""), "{}", start.text);
}

#[tokio::test]
async fn a_callback_not_started_in_this_browser_makes_no_session() {
    let harness = harness().await;
    with_passwords(&harness, &["alice@example.com"]).await;
    let mut victim = Browser::new(&harness.state, BASE_URL);
    let login = victim.get("/console/login").await;
    let authorize = login.location.unwrap();
    let state = authorize
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    // Another browser (no login cookie) presents the victim's state, then the victim a wrong one.
    let mut other = Browser::new(&harness.state, BASE_URL);
    let stolen = other
        .get(&format!("/console/callback?code=x&state={state}"))
        .await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST);
    assert!(!other.cookies.contains_key("deputy_console"));
    let wrong = victim.get("/console/callback?code=x&state=wrong").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(!victim.cookies.contains_key("deputy_console"));
}

#[tokio::test]
async fn values_from_the_api_are_escaped() {
    let harness = harness().await;
    with_passwords(&harness, &["admin"]).await;
    let created = harness
        .call(
            Method::POST,
            &format!("{SCIM}/Users"),
            Some(&harness.admin_token),
            Some(json!({ "userName": "mallory@example.com", "displayName": "<script>alert(1)</script>" })),
        )
        .await;
    assert!(created.status.is_success(), "{:?}", created.body);
    let mut admin = Browser::new(&harness.state, BASE_URL);
    admin.sign_in("admin").await;
    let page = admin.get("/console/admin").await;
    assert!(
        page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<script>alert"), "{}", page.text);
}
