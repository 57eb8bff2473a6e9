//! The page shell every console page shares (navigation, the person's name, sign-out), the error page, and the
//! headers that confine what a page may do. maud escapes every value written into a page, so nothing an agent,
//! a user or the API returns can become markup.

use crate::api::ApiFailure;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// Scripts and styles only from the console's own files; forms only back to it; never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who is looking at the page, for the navigation.
pub struct Viewer<'a> {
    pub user_name: &'a str,
    pub is_admin: bool,
    pub csrf: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Agents,
    Access,
    Activity,
    Admin,
}

pub fn page(viewer: &Viewer<'_>, section: Section, title: &str, body: Markup) -> Response {
    let link = |target: Section, href: &str, label: &str| {
        html! {
            @if target == section { a href=(href) aria-current="page" { (label) } }
            @else { a href=(href) { (label) } }
        }
    };
    let shell = html! {
        header {
            span.brand { "Deputy" }
            nav #nav aria-label="Console" {
                (link(Section::Agents, "/console/agents", "Agents"))
                (link(Section::Access, "/console/access", "Access"))
                (link(Section::Activity, "/console/activity", "Activity"))
                @if viewer.is_admin { (link(Section::Admin, "/console/admin", "Admin")) }
            }
            span #whoami { (viewer.user_name) }
            form #sign-out method="post" action="/console/logout" {
                (csrf_field(viewer.csrf))
                button type="submit" { "Sign out" }
            }
        }
        main { h1 { (title) } (body) }
    };
    document(StatusCode::OK, title, shell)
}

/// The hidden field that every state-changing form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(csrf); }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        main.error {
            h1 { (title) }
            p role="alert" { (message) }
            p { a href="/console/" { "Back to the console" } }
        }
    };
    document(status, title, body)
}

pub fn document(status: StatusCode, title: &str, body: Markup) -> Response {
    let document = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Deputy" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body { (body) }
        }
    };
    (status, Html(document.into_string())).into_response()
}

/// The headers that confine what a page may do, on every console response (the router's outermost layer).
pub async fn confine(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        // The browser then sends the console's origin on its own forms (with `no-referrer`, Chromium sends
        // `Origin: null`), and never a console URL to another site.
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An API refusal shown inside a page.
pub fn failure_notice(failure: &ApiFailure) -> Markup {
    html! { p.error role="alert" { (failure.message) } }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn when(millis: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .ok()
        .and_then(|instant| instant.format(&format).ok())
        .unwrap_or_default()
}
