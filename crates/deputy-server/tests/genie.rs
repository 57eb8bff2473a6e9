//! Router-level tests of Genie: spaces and their ACL, questions answered with the asking user's rights (a row filter
//! gives alice and bob different numbers), the prompt holding only the tables the asker can read, the repair loop,
//! read-only SQL, private conversations, and the audit of every question.
//!
//! The model is a test double: an OpenAI-compatible HTTP server on 127.0.0.1 written below, which answers each
//! question with the SQL it was configured with (in turn, so a bad SQL can come first) and records every prompt.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use support::{Harness, harness};

/// The test double of an LLM provider: `question -> answers`, the n-th call for a question getting the n-th answer
/// (the last one repeats). Every request's messages are kept.
#[derive(Clone, Default)]
struct FakeModel {
    answers: Arc<Mutex<HashMap<String, Vec<String>>>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    prompts: Arc<Mutex<Vec<Vec<Value>>>>,
}

impl FakeModel {
    fn answer(&self, question: &str, answers: &[&str]) {
        self.answers.lock().unwrap().insert(
            question.into(),
            answers.iter().map(|a| (*a).to_owned()).collect(),
        );
    }

    /// The prompts whose last user message mentions `text`.
    fn prompts_about(&self, text: &str) -> Vec<Vec<Value>> {
        self.prompts
            .lock()
            .unwrap()
            .iter()
            .filter(|messages| {
                messages.last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .contains(text)
            })
            .cloned()
            .collect()
    }

    fn reply(&self, body: &Value) -> Value {
        let messages = body["messages"].as_array().unwrap().clone();
        let last = messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        self.prompts.lock().unwrap().push(messages);
        let answers = self.answers.lock().unwrap();
        let (question, choices) = answers
            .iter()
            .find(|(question, _)| last.contains(question.as_str()))
            .expect("a question the test double was told about");
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(question.clone()).or_default();
        let sql = choices[(*n).min(choices.len() - 1)].clone();
        *n += 1;
        json!({
            "id": "test-double", "object": "chat.completion", "created": 1, "model": "sql-writer",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("```sql\n{sql}\n```") }, "finish_reason": "stop" }],
        })
    }

    /// Serves on a free loopback port; the server lives as long as the test's runtime.
    async fn serve(&self) -> String {
        let model = self.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let model = model.clone();
                async move { axum::Json(model.reply(&body)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/v1")
    }
}

struct Workspace {
    h: Harness,
    model: FakeModel,
    warehouse: String,
    space: String,
    tokens: HashMap<&'static str, String>,
}

impl Workspace {
    async fn admin_sql(&self, statement: &str) -> Value {
        self.h.admin_sql(&self.warehouse, statement).await
    }

    fn token(&self, user: &str) -> &str {
        &self.tokens[user]
    }

    async fn call(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = if user == "admin" {
            self.h.admin_token.clone()
        } else {
            self.token(user).to_owned()
        };
        let reply = self.h.call(method, path, Some(&token), body).await;
        (reply.status, reply.body)
    }

    /// Starts a conversation and waits for its first message to end; returns the final message.
    async fn ask(&self, user: &str, question: &str) -> Value {
        let (status, started) = self
            .call(
                user,
                Method::POST,
                &format!("/api/2.0/genie/spaces/{}/start-conversation", self.space),
                Some(json!({ "content": question })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{started}");
        assert_eq!(started["message"]["status"], "SUBMITTED");
        self.wait(
            user,
            started["conversation_id"].as_str().unwrap(),
            started["message_id"].as_str().unwrap(),
        )
        .await
    }

    async fn wait(&self, user: &str, conversation: &str, message: &str) -> Value {
        let path = format!(
            "/api/2.0/genie/spaces/{}/conversations/{conversation}/messages/{message}",
            self.space
        );
        for _ in 0..400 {
            let (status, body) = self.call(user, Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if matches!(body["status"].as_str(), Some("COMPLETED" | "FAILED")) {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("message {message} did not finish");
    }

    async fn query_result(&self, user: &str, message: &Value) -> (StatusCode, Value) {
        let attachment = message["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a.get("query").is_some())
            .unwrap();
        let path = format!(
            "/api/2.0/genie/spaces/{}/conversations/{}/messages/{}/attachments/{}/query-result",
            self.space,
            message["conversation_id"].as_str().unwrap(),
            message["message_id"].as_str().unwrap(),
            attachment["attachment_id"].as_str().unwrap()
        );
        self.call(user, Method::GET, &path, None).await
    }
}

fn text_of(message: &Value) -> String {
    message["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a["text"]["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

const TOTAL: &str = "What is the total amount?";
const TOTAL_SQL: &str = "SELECT SUM(amount) AS total FROM main.sales.orders";

/// alice, bob, carol (no SELECT) and dave (CAN_VIEW only) in a workspace with a row-filtered `orders` table, a
/// `secrets` table only alice reads, and a space over both whose model is the test double.
async fn workspace() -> Workspace {
    let h = harness().await;
    let warehouse = h.default_warehouse().await;
    let model = FakeModel::default();
    let base = model.serve().await;
    let mut w = Workspace {
        h,
        model,
        warehouse,
        space: String::new(),
        tokens: HashMap::new(),
    };
    for user in ["alice", "bob", "carol", "dave"] {
        let token =
            w.h.new_user_token(&format!("{user}@example.com"), &["all-apis"])
                .await;
        w.tokens.insert(user, token);
    }
    for statement in [
        "CREATE CATALOG main",
        "CREATE SCHEMA main.sales",
        "CREATE TABLE main.sales.orders (id INT, region STRING, amount DOUBLE)",
        "INSERT INTO main.sales.orders VALUES (1, 'EU', 10.0), (2, 'US', 20.0), (3, 'EU', 30.0)",
        "CREATE TABLE main.sales.secrets (code STRING)",
        "INSERT INTO main.sales.secrets VALUES ('s3cr3t')",
        "CREATE FUNCTION main.sales.eu_unless_alice(region STRING) RETURNS BOOLEAN RETURN region = 'EU' OR current_user() = 'alice@example.com' OR is_account_group_member('admins')",
        "ALTER TABLE main.sales.orders SET ROW FILTER main.sales.eu_unless_alice ON (region)",
        "GRANT USE CATALOG ON CATALOG main TO `users`",
        "GRANT USE SCHEMA ON SCHEMA main.sales TO `users`",
        "GRANT SELECT ON TABLE main.sales.orders TO `alice@example.com`",
        "GRANT SELECT ON TABLE main.sales.orders TO `bob@example.com`",
        "GRANT SELECT ON TABLE main.sales.secrets TO `alice@example.com`",
    ] {
        w.admin_sql(statement).await;
    }
    let (status, body) = w
        .call(
            "admin",
            Method::PATCH,
            &format!("/api/2.0/permissions/warehouses/{}", w.warehouse),
            Some(json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_USE" }] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .call(
            "admin",
            Method::POST,
            "/api/2.0/serving-endpoints",
            Some(json!({ "name": "sql-writer", "config": { "served_entities": [{ "external_model": {
                "provider": "openai", "name": "sql-writer", "task": "llm/v1/chat",
                "openai_config": { "openai_api_base": base, "openai_api_key_plaintext": "sk-test-double" } } }] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, space) = w
        .call(
            "admin",
            Method::POST,
            "/api/2.0/genie/spaces",
            Some(json!({
                "title": "Sales",
                "description": "Orders by region",
                "warehouse_id": w.warehouse,
                "table_identifiers": ["main.sales.orders", "main.sales.secrets"],
                "instructions": "Amounts are in euros.",
                "examples": [
                    { "question": TOTAL, "sql": TOTAL_SQL },
                    { "question": "How many orders are there?", "sql": "SELECT COUNT(*) FROM main.sales.orders" },
                ],
                "serving_endpoint_name": "sql-writer",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{space}");
    w.space = space["space_id"].as_str().unwrap().to_owned();
    let acl: Vec<Value> = ["alice", "bob", "carol"]
        .iter()
        .map(|user| json!({ "user_name": format!("{user}@example.com"), "permission_level": "CAN_RUN" }))
        .chain([json!({ "user_name": "dave@example.com", "permission_level": "CAN_VIEW" })])
        .collect();
    let (status, body) = w
        .call(
            "admin",
            Method::PATCH,
            &format!("/api/2.0/permissions/genie/{}", w.space),
            Some(json!({ "access_control_list": acl })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.model.answer(TOTAL, &[TOTAL_SQL]);
    w
}

#[tokio::test]
async fn each_user_gets_the_answer_their_own_rights_allow() {
    let w = workspace().await;

    let alice = w.ask("alice", TOTAL).await;
    assert_eq!(alice["status"], "COMPLETED", "{alice}");
    assert_eq!(text_of(&alice), "The answer is total = 60.0.");
    let query = alice["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.get("query"))
        .unwrap();
    assert_eq!(query["query"], TOTAL_SQL);
    assert_eq!(query["query_result_metadata"]["row_count"], 1);
    let suggestions = alice["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.get("suggested_questions"))
        .unwrap();
    assert_eq!(
        suggestions["questions"],
        json!(["How many orders are there?"])
    );
    let (status, result) = w.query_result("alice", &alice).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        result["statement_response"]["result"]["data_array"],
        json!([["60.0"]])
    );
    assert_eq!(
        result["statement_response"]["manifest"]["schema"]["columns"][0]["type_name"],
        "DOUBLE"
    );
    // The statement is alice's, under the statement API too.
    let statement_id = query["statement_id"].as_str().unwrap();
    let (status, _) = w
        .call(
            "alice",
            Method::GET,
            &format!("/api/2.0/sql/statements/{statement_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The same question, the same SQL: bob's row filter leaves him the EU orders only.
    let bob = w.ask("bob", TOTAL).await;
    assert_eq!(bob["status"], "COMPLETED", "{bob}");
    assert_eq!(text_of(&bob), "The answer is total = 40.0.");

    // The model saw the schema of `secrets` only when alice asked.
    let prompts = w.model.prompts_about(TOTAL);
    assert_eq!(prompts.len(), 2);
    let system = |prompt: &Vec<Value>| prompt[0]["content"].as_str().unwrap().to_owned();
    assert!(
        system(&prompts[0])
            .to_ascii_lowercase()
            .contains("main.sales.secrets (code string)")
    );
    assert!(system(&prompts[0]).contains("Amounts are in euros."));
    assert!(
        system(&prompts[0]).contains(TOTAL_SQL),
        "examples are in the prompt"
    );
    assert!(
        system(&prompts[1])
            .to_ascii_lowercase()
            .contains("main.sales.orders (id int")
    );
    assert!(
        !system(&prompts[1]).contains("secrets"),
        "{}",
        system(&prompts[1])
    );

    // Conversations are private: bob cannot read alice's message or its result.
    let path = format!(
        "/api/2.0/genie/spaces/{}/conversations/{}/messages/{}",
        w.space,
        alice["conversation_id"].as_str().unwrap(),
        alice["message_id"].as_str().unwrap()
    );
    let (status, body) = w.call("bob", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let (status, _) = w.query_result("bob", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // carol may run the space but read none of its tables: a FAILED message that says why.
    let carol = w.ask("carol", TOTAL).await;
    assert_eq!(carol["status"], "FAILED", "{carol}");
    let reason = carol["error"]["error"].as_str().unwrap();
    assert!(reason.contains("cannot read any table"), "{reason}");
    assert!(reason.contains("SELECT"), "{reason}");

    // dave may only view it: asking is refused.
    let (status, body) = w
        .call(
            "dave",
            Method::POST,
            &format!("/api/2.0/genie/spaces/{}/start-conversation", w.space),
            Some(json!({ "content": TOTAL })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("CAN_RUN"),
        "{body}"
    );
    let (status, space) = w
        .call(
            "dave",
            Method::GET,
            &format!("/api/2.0/genie/spaces/{}", w.space),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(space["title"], "Sales");

    // Every question is audited with its user.
    let audit = w
        .call(
            "admin",
            Method::GET,
            "/api/2.0/deputy/audit?limit=1000",
            None,
        )
        .await
        .1;
    let genie: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["api"] == "genie.question")
        .collect();
    let users: Vec<&str> = genie
        .iter()
        .map(|e| e["user_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["api"] == "genie.query"
                && e["user_name"] == "bob@example.com"
                && e["reason"].as_str().unwrap().contains(TOTAL_SQL))
    );
}

#[tokio::test]
async fn failing_sql_is_repaired_and_writes_are_never_run() {
    let w = workspace().await;
    let repaired = "How many EU orders?";
    w.model.answer(
        repaired,
        &[
            "SELECT COUNT(*) AS n FROM main.sales.no_such_table",
            "SELECT COUNT(*) AS n FROM main.sales.orders WHERE region = 'EU'",
        ],
    );
    let message = w.ask("alice", repaired).await;
    assert_eq!(message["status"], "COMPLETED", "{message}");
    assert_eq!(text_of(&message), "The answer is n = 2.");
    let prompts = w.model.prompts_about(repaired);
    assert_eq!(prompts.len(), 2);
    let repair = prompts[1].last().unwrap()["content"].as_str().unwrap();
    assert!(repair.starts_with("That SQL failed:"), "{repair}");
    assert!(repair.contains("no_such_table"), "{repair}");

    // A model that only ever writes: three attempts, then FAILED, and the table is untouched.
    let destructive = "Please clean up the orders";
    w.model
        .answer(destructive, &["DROP TABLE main.sales.orders"]);
    let message = w.ask("alice", destructive).await;
    assert_eq!(message["status"], "FAILED", "{message}");
    assert_eq!(message["error"]["type"], "SQL_EXECUTION_EXCEPTION");
    assert!(
        message["error"]["error"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{message}"
    );
    assert_eq!(w.model.prompts_about(destructive).len(), 3);
    let count = w.admin_sql("SELECT COUNT(*) FROM main.sales.orders").await;
    assert_eq!(count["result"]["data_array"], json!([["3"]]));

    // A follow-up in the same conversation gives the model the earlier question and its SQL.
    let first = w.ask("bob", TOTAL).await;
    let follow_up = "And how many orders is that?";
    w.model
        .answer(follow_up, &["SELECT COUNT(*) AS n FROM main.sales.orders"]);
    let conversation = first["conversation_id"].as_str().unwrap();
    let (status, posted) = w
        .call(
            "bob",
            Method::POST,
            &format!(
                "/api/2.0/genie/spaces/{}/conversations/{conversation}/messages",
                w.space
            ),
            Some(json!({ "content": follow_up })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    let answered = w
        .wait("bob", conversation, posted["message_id"].as_str().unwrap())
        .await;
    assert_eq!(text_of(&answered), "The answer is n = 2.");
    let prompt = &w.model.prompts_about(follow_up)[0];
    assert_eq!(prompt[1]["content"], TOTAL);
    assert_eq!(prompt[2]["content"], TOTAL_SQL);
    // Someone else cannot add to bob's conversation.
    let (status, _) = w
        .call(
            "alice",
            Method::POST,
            &format!(
                "/api/2.0/genie/spaces/{}/conversations/{conversation}/messages",
                w.space
            ),
            Some(json!({ "content": follow_up })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn spaces_are_listed_by_page_edited_by_editors_and_checked_on_create() {
    let w = workspace().await;
    let (status, body) = w
        .call(
            "admin",
            Method::POST,
            "/api/2.0/genie/spaces",
            Some(json!({
                "title": "Second", "warehouse_id": w.warehouse, "table_identifiers": ["main.sales.orders"],
                "serving_endpoint_name": "sql-writer",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, first) = w
        .call(
            "admin",
            Method::GET,
            "/api/2.0/genie/spaces?page_size=1",
            None,
        )
        .await;
    assert_eq!(first["spaces"].as_array().unwrap().len(), 1);
    let token = first["next_page_token"].as_str().unwrap();
    let (_, second) = w
        .call(
            "admin",
            Method::GET,
            &format!("/api/2.0/genie/spaces?page_size=1&page_token={token}"),
            None,
        )
        .await;
    assert_eq!(second["spaces"].as_array().unwrap().len(), 1);
    assert!(second.get("next_page_token").is_none());
    assert_ne!(
        first["spaces"][0]["space_id"],
        second["spaces"][0]["space_id"]
    );
    // alice sees only the space shared with her.
    let (_, mine) = w
        .call("alice", Method::GET, "/api/2.0/genie/spaces", None)
        .await;
    assert_eq!(mine["spaces"].as_array().unwrap().len(), 1);
    assert_eq!(mine["spaces"][0]["space_id"], w.space.as_str());

    // CAN_RUN does not edit; CAN_EDIT does.
    let path = format!("/api/2.0/genie/spaces/{}", w.space);
    let (status, _) = w
        .call(
            "alice",
            Method::PATCH,
            &path,
            Some(json!({ "title": "Mine" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    w.call(
        "admin",
        Method::PATCH,
        &format!("/api/2.0/permissions/genie/{}", w.space),
        Some(json!({ "access_control_list": [{ "user_name": "bob@example.com", "permission_level": "CAN_EDIT" }] })),
    )
    .await;
    let (status, edited) = w
        .call(
            "bob",
            Method::PATCH,
            &path,
            Some(json!({ "title": "Sales (EU)" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["title"], "Sales (EU)");
    assert_eq!(
        edited["table_identifiers"],
        json!(["main.sales.orders", "main.sales.secrets"])
    );
    // An editor cannot name a table they cannot read.
    let (status, body) = w
        .call(
            "bob",
            Method::PATCH,
            &path,
            Some(json!({ "table_identifiers": ["main.sales.secrets"] })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("main.sales.secrets"),
        "{body}"
    );
    // Nor can a space be made without a model.
    let (status, body) = w
        .call(
            "admin",
            Method::POST,
            "/api/2.0/genie/spaces",
            Some(json!({ "title": "x", "warehouse_id": w.warehouse, "table_identifiers": ["main.sales.orders"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");

    // The ACL is the workspace-object ACL; only a manager deletes, and then the space is gone.
    let (_, acl) = w
        .call(
            "admin",
            Method::GET,
            &format!("/api/2.0/permissions/genie/{}", w.space),
            None,
        )
        .await;
    assert_eq!(acl["object_type"], "genie-space");
    let (status, _) = w.call("bob", Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = w.call("admin", Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = w.call("alice", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_agent_asking_for_a_user_is_audited_with_its_actor_chain() {
    let w = workspace().await;
    let (agent_id, agent_secret) = w.h.service_principal("genie-agent").await;
    let agent_token =
        w.h.client_credentials(&agent_id, &agent_secret, "all-apis")
            .await
            .body["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    // Only the Genie scope: the question's SQL still runs, bounded by alice's grants.
    let exchanged =
        w.h.exchange(
            w.token("alice"),
            Some(&agent_token),
            Some("dashboards.genie"),
        )
        .await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.body);
    let delegated = exchanged.body["access_token"].as_str().unwrap();
    let reply =
        w.h.call(
            Method::POST,
            &format!("/api/2.0/genie/spaces/{}/start-conversation", w.space),
            Some(delegated),
            Some(json!({ "content": TOTAL })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // The delegated token is alice: her own token reads the answer.
    let message = w
        .wait(
            "alice",
            reply.body["conversation_id"].as_str().unwrap(),
            reply.body["message_id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(text_of(&message), "The answer is total = 60.0.");
    // A token without the Genie scope is refused.
    let sql_only = w.h.exchange(w.token("alice"), None, Some("sql")).await;
    let reply =
        w.h.call(
            Method::GET,
            "/api/2.0/genie/spaces",
            Some(sql_only.body["access_token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("dashboards.genie")
    );

    let audit = w
        .call(
            "admin",
            Method::GET,
            "/api/2.0/deputy/audit?limit=1000",
            None,
        )
        .await
        .1;
    let question = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["api"] == "genie.question")
        .unwrap();
    assert_eq!(question["user_name"], "alice@example.com");
    assert_eq!(question["actors"], json!([agent_id]));
    assert_eq!(question["securable"], format!("genie/{}", w.space));
}
