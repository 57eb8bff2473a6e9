//! `/api/2.0/deputy/conversations` through the router: a person's conversations with serving endpoints, private to
//! them (someone else's is an unknown id), never kept by an agent acting for them, within limits, and started only
//! on an endpoint the person may query.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Harness, harness};

const CONVERSATIONS: &str = "/api/2.0/deputy/conversations";
/// A built-in endpoint every user may query.
const CHAT: &str = "deputy-chat-smollm2";
const EMBED: &str = "deputy-embed-minilm";

struct People {
    h: Harness,
    alice: String,
    bob: String,
}

async fn people() -> People {
    let h = harness().await;
    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    let bob = h.new_user_token("bob@example.com", &["all-apis"]).await;
    People { h, alice, bob }
}

impl People {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> support::Reply {
        self.h.call(method, path, Some(token), body).await
    }

    /// Starts a conversation, which must succeed; returns it.
    async fn start(&self, token: &str, body: Value) -> Value {
        let reply = self
            .call(token, Method::POST, CONVERSATIONS, Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    async fn ids(&self, token: &str, query: &str) -> Vec<String> {
        let reply = self
            .call(token, Method::GET, &format!("{CONVERSATIONS}{query}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|conversation| conversation["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn assert_error(reply: &support::Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error_code"], code, "{}", reply.body);
}

#[tokio::test]
async fn conversations_are_started_listed_read_appended_to_and_deleted() {
    let p = people().await;
    let first = p
        .start(
            &p.alice,
            json!({ "endpoint_name": CHAT, "title": "Quarterly numbers" }),
        )
        .await;
    assert_eq!(first["endpoint_name"], CHAT);
    assert_eq!(first["title"], "Quarterly numbers");
    assert!(first["created_timestamp"].as_i64().unwrap() > 0);
    let id = first["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    // Names are case-insensitive, as for querying; the answer uses the endpoint's own.
    let second = p
        .start(&p.alice, json!({ "endpoint_name": "Deputy-Chat-SmolLM2" }))
        .await;
    assert_eq!(second["endpoint_name"], CHAT);
    assert_eq!(second["title"], "");
    let third = p.start(&p.alice, json!({ "endpoint_name": EMBED })).await;
    let (second, third) = (
        second["id"].as_str().unwrap(),
        third["id"].as_str().unwrap(),
    );
    assert_ne!(id, second);

    assert_eq!(p.ids(&p.alice, "").await, [third, second, id]);
    assert_eq!(
        p.ids(&p.alice, &format!("?endpoint_name={CHAT}")).await,
        [second, id]
    );
    assert_eq!(
        p.ids(&p.alice, "?endpoint_name=no-such-endpoint").await,
        Vec::<String>::new()
    );
    assert!(p.ids(&p.bob, "").await.is_empty());

    let path = format!("{CONVERSATIONS}/{id}");
    let messages = format!("{path}/messages");
    let question = p
        .call(
            &p.alice,
            Method::POST,
            &messages,
            Some(json!({ "role": "user", "content": "How did Q3 go?" })),
        )
        .await;
    assert_eq!(question.status, StatusCode::OK, "{}", question.body);
    assert_eq!(question.body["role"], "user");
    assert_eq!(question.body["sources"], json!([]));
    assert!(
        question.body.get("request_id").is_none(),
        "{}",
        question.body
    );
    let answer = json!({ "role": "assistant", "content": "Up 4%.", "request_id": "req-1",
        "sources": ["main.sales.orders", "https://docs.example.com/q3"] });
    let stored = p
        .call(&p.alice, Method::POST, &messages, Some(answer))
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    assert_eq!(stored.body["request_id"], "req-1");

    let read = p.call(&p.alice, Method::GET, &path, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["id"], id);
    assert_eq!(read.body["title"], "Quarterly numbers");
    assert_eq!(read.body["endpoint_name"], CHAT);
    let history = read.body["messages"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{}", read.body);
    assert_eq!(history[0], question.body);
    assert_eq!(history[1], stored.body);
    assert_eq!(
        history[1]["sources"],
        json!(["main.sales.orders", "https://docs.example.com/q3"])
    );

    let deleted = p.call(&p.alice, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body, json!({}));
    let gone = p.call(&p.alice, Method::GET, &path, None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let again = p.call(&p.alice, Method::DELETE, &path, None).await;
    assert_error(&again, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(p.ids(&p.alice, "").await, [third, second]);
}

#[tokio::test]
async fn someone_elses_conversation_answers_like_an_unknown_id() {
    let p = people().await;
    let started = p.start(&p.alice, json!({ "endpoint_name": CHAT })).await;
    let id = started["id"].as_str().unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    let message = json!({ "role": "user", "content": "hi" });
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::POST, "/messages", Some(message.clone())),
        (Method::DELETE, "", None),
    ] {
        let theirs = p
            .call(
                &p.bob,
                method.clone(),
                &format!("{CONVERSATIONS}/{id}{suffix}"),
                body.clone(),
            )
            .await;
        let missing = p
            .call(
                &p.bob,
                method.clone(),
                &format!("{CONVERSATIONS}/{unknown}{suffix}"),
                body,
            )
            .await;
        assert_error(&theirs, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
        assert_error(&missing, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
        assert_eq!(
            theirs.body["message"].as_str().unwrap().replace(id, "ID"),
            missing.body["message"]
                .as_str()
                .unwrap()
                .replace(unknown, "ID"),
            "{method} {suffix}"
        );
    }
    // Bob changed nothing.
    let read = p
        .call(
            &p.alice,
            Method::GET,
            &format!("{CONVERSATIONS}/{id}"),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["messages"], json!([]));
}

#[tokio::test]
async fn an_agent_acting_for_the_user_is_refused_on_every_route() {
    let p = people().await;
    let started = p.start(&p.alice, json!({ "endpoint_name": CHAT })).await;
    let id = started["id"].as_str().unwrap();
    let (app_id, secret) = p.h.service_principal("chat-agent").await;
    let agent =
        p.h.client_credentials(&app_id, &secret, "all-apis")
            .await
            .body["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    let delegated = p.h.exchange(&p.alice, Some(&agent), None).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let conversation = format!("{CONVERSATIONS}/{id}");
    let messages = format!("{conversation}/messages");
    for (method, path, body) in [
        (
            Method::POST,
            CONVERSATIONS,
            Some(json!({ "endpoint_name": CHAT })),
        ),
        (Method::GET, CONVERSATIONS, None),
        (Method::GET, conversation.as_str(), None),
        (
            Method::POST,
            messages.as_str(),
            Some(json!({ "role": "assistant", "content": "I am alice" })),
        ),
        (Method::DELETE, conversation.as_str(), None),
    ] {
        let reply = p.call(&delegated, method.clone(), path, body).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
        assert!(
            reply.body["message"].as_str().unwrap().contains("actor"),
            "{method} {path}: {}",
            reply.body
        );
    }
    // The user's own token still works, and nothing was changed by the agent.
    let read = p.call(&p.alice, Method::GET, &conversation, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["messages"], json!([]));
    assert_eq!(p.ids(&p.alice, "").await, [id]);
}

#[tokio::test]
async fn limits_are_refused_with_a_clear_message() {
    let p = people().await;
    let title = |n: usize| json!({ "endpoint_name": CHAT, "title": "é".repeat(n) });
    // 200 characters, 400 bytes: the limit counts characters.
    p.start(&p.alice, title(200)).await;
    let long = p
        .call(&p.alice, Method::POST, CONVERSATIONS, Some(title(201)))
        .await;
    assert_error(&long, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    assert!(long.body["message"].as_str().unwrap().contains("`title`"));
    let nameless = p
        .call(
            &p.alice,
            Method::POST,
            CONVERSATIONS,
            Some(json!({ "title": "x" })),
        )
        .await;
    assert_error(
        &nameless,
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    );

    let started = p.start(&p.alice, json!({ "endpoint_name": CHAT })).await;
    let messages = format!(
        "{CONVERSATIONS}/{}/messages",
        started["id"].as_str().unwrap()
    );
    let message = |content: String, sources: Vec<String>| json!({ "role": "assistant", "content": content, "sources": sources });
    let accepted = [
        message("x".repeat(64 * 1024), Vec::new()),
        message("ok".into(), vec!["s".repeat(2048); 50]),
    ];
    for body in accepted {
        let reply = p.call(&p.alice, Method::POST, &messages, Some(body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    for (body, named) in [
        (message("x".repeat(64 * 1024 + 1), Vec::new()), "`content`"),
        (message("ok".into(), vec!["s".into(); 51]), "`sources`"),
        (message("ok".into(), vec!["s".repeat(2049)]), "`sources`"),
        (json!({ "role": "system", "content": "obey" }), "`role`"),
        (json!({ "role": "User", "content": "hi" }), "`role`"),
        (json!({ "content": "hi" }), "`role`"),
        (json!({ "role": "user" }), "`content`"),
        (
            json!({ "role": "user", "content": "hi", "request_id": "r".repeat(257) }),
            "`request_id`",
        ),
    ] {
        let reply = p.call(&p.alice, Method::POST, &messages, Some(body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
        let text = reply.body["message"].as_str().unwrap();
        assert!(text.contains(named), "{named}: {text}");
    }
    let read = p
        .call(
            &p.alice,
            Method::GET,
            &format!("{CONVERSATIONS}/{}", started["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(read.body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn starting_a_conversation_needs_can_query_on_the_endpoint() {
    let p = people().await;
    let endpoint = json!({ "name": "private-llm", "config": { "served_entities": [{ "external_model": {
        "name": "m", "provider": "openai", "task": "llm/v1/chat",
        "openai_config": { "openai_api_base": "http://127.0.0.1:9/v1", "openai_api_key_plaintext": "k" } } }] } });
    let created = p
        .call(
            &p.h.admin_token,
            Method::POST,
            "/api/2.0/serving-endpoints",
            Some(endpoint),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let acl_path = format!(
        "/api/2.0/permissions/serving-endpoints/{}",
        created.body["id"].as_str().unwrap()
    );
    let grant = |level: &str| json!({ "access_control_list": [{ "user_name": "alice@example.com", "permission_level": level }] });
    let start = json!({ "endpoint_name": "private-llm" });

    // Hidden: as if it did not exist.
    let hidden = p
        .call(&p.alice, Method::POST, CONVERSATIONS, Some(start.clone()))
        .await;
    assert_error(&hidden, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let granted = p
        .call(
            &p.h.admin_token,
            Method::PATCH,
            &acl_path,
            Some(grant("CAN_VIEW")),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let viewer = p
        .call(&p.alice, Method::POST, CONVERSATIONS, Some(start.clone()))
        .await;
    assert_error(&viewer, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    assert!(p.ids(&p.alice, "").await.is_empty());

    let granted = p
        .call(
            &p.h.admin_token,
            Method::PATCH,
            &acl_path,
            Some(grant("CAN_QUERY")),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let started = p.start(&p.alice, start).await;
    assert_eq!(started["endpoint_name"], "private-llm");
    // Bob still may not.
    let bob = p
        .call(
            &p.bob,
            Method::POST,
            CONVERSATIONS,
            Some(json!({ "endpoint_name": "private-llm" })),
        )
        .await;
    assert_error(&bob, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");

    // Deleting the endpoint deletes its conversations.
    let deleted = p
        .call(
            &p.h.admin_token,
            Method::DELETE,
            "/api/2.0/serving-endpoints/private-llm",
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let path = format!("{CONVERSATIONS}/{}", started["id"].as_str().unwrap());
    let gone = p.call(&p.alice, Method::GET, &path, None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    assert!(p.ids(&p.alice, "").await.is_empty());
}
