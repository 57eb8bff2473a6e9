//! Activity: what was done in the person's name, from the audit log (the API shows a person only their own events;
//! admins see everyone's), newest first, searchable by agent, time, decision and text. A refusal shows its reason.

use crate::api::encode;
use crate::layout::{Section, page};
use crate::pages::agents::events_table;
use crate::{ConsoleError, ConsoleState, SignedIn};
use axum::Router;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use maud::html;
use serde::Deserialize;

/// One page of activity; older events are a narrower search away.
const PAGE_EVENTS: u32 = 200;

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/console/activity", get(show))
}

#[derive(Deserialize, Default)]
struct Filter {
    agent: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// `YYYY-MM-DD` as epoch milliseconds at 00:00 UTC.
fn day_start(day: &str) -> Result<i64, ConsoleError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day, &format)
        .map_err(|_| ConsoleError::BadRequest(format!("`{day}` is not a date (YYYY-MM-DD)")))?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// The API query for a filter: `until` includes its whole day.
fn audit_query(filter: &Filter) -> Result<String, ConsoleError> {
    let mut query = format!("/api/2.0/deputy/audit?order=desc&limit={PAGE_EVENTS}");
    if let Some(agent) = nonempty(&filter.agent) {
        query.push_str(&format!("&endpoint={}", encode(agent)));
    }
    match nonempty(&filter.decision) {
        Some("allowed") => query.push_str("&allowed=true"),
        Some("denied") => query.push_str("&allowed=false"),
        Some(other) => {
            return Err(ConsoleError::BadRequest(format!(
                "decision `{other}` is neither `allowed` nor `denied`"
            )));
        }
        None => {}
    }
    if let Some(since) = nonempty(&filter.since) {
        query.push_str(&format!("&since_ms={}", day_start(since)?));
    }
    if let Some(until) = nonempty(&filter.until) {
        query.push_str(&format!("&until_ms={}", day_start(until)? + 86_400_000));
    }
    if let Some(text) = nonempty(&filter.q) {
        query.push_str(&format!("&contains={}", encode(text)));
    }
    Ok(query)
}

async fn show(signed_in: SignedIn, Query(filter): Query<Filter>) -> Result<Response, ConsoleError> {
    let events = signed_in.api().get(&audit_query(&filter)?).await?;
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let decision = nonempty(&filter.decision).unwrap_or("");
    let body = html! {
        @if signed_in.is_admin { p { "Everything audited in this workspace, newest first." } }
        @else { p { "What you and agents acting for you did, newest first." } }
        form #activity-filter method="get" action="/console/activity" {
            label { "Agent " input type="text" name="agent" value=(nonempty(&filter.agent).unwrap_or("")); }
            label { "Decision "
                select name="decision" {
                    option value="" selected[decision.is_empty()] { "any" }
                    option value="allowed" selected[decision == "allowed"] { "allowed" }
                    option value="denied" selected[decision == "denied"] { "denied" }
                }
            }
            label { "From " input type="date" name="since" value=(nonempty(&filter.since).unwrap_or("")); }
            label { "To " input type="date" name="until" value=(nonempty(&filter.until).unwrap_or("")); }
            label { "Text " input type="search" name="q" value=(nonempty(&filter.q).unwrap_or("")); }
            button type="submit" { "Search" }
        }
        @if events.is_empty() { p.empty { "Nothing matches." } }
        div #activity-wrap { (events_table("events", Some("activity"), &events)) }
    };
    Ok(page(
        &signed_in.viewer(),
        Section::Activity,
        "Activity",
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_becomes_the_audit_query() {
        let filter = Filter {
            agent: Some("rag".into()),
            decision: Some("denied".into()),
            since: Some("2026-12-01".into()),
            until: Some("2026-12-01".into()),
            q: Some("consent withdrawn".into()),
        };
        let query = audit_query(&filter).unwrap();
        assert!(query.contains("&endpoint=rag&allowed=false"), "{query}");
        assert!(
            query.contains("&since_ms=1796083200000&until_ms=1796169600000"),
            "{query}"
        );
        assert!(query.ends_with("&contains=consent%20withdrawn"), "{query}");
    }

    #[test]
    fn a_bad_filter_is_refused() {
        let bad_date = Filter {
            since: Some("yesterday".into()),
            ..Filter::default()
        };
        assert!(audit_query(&bad_date).is_err());
        let bad_decision = Filter {
            decision: Some("maybe".into()),
            ..Filter::default()
        };
        assert!(audit_query(&bad_decision).is_err());
    }
}
