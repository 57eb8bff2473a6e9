//! Declarative agents end to end through the router: deploy-time validation, the tool-calling loop against a
//! test-double model server, tools run as each end user (row filters apply), tools skipped or refused when the user
//! lacks access, scopes that only narrow along an agent chain, and the audit of every tool access.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::{Harness, harness};

/// A test double of an OpenAI-compatible model server (the only thing here outside the project). It follows a
/// script written in the user's message: `TOOL: ARGUMENT` makes it call the tool `TOOL` with `ARGUMENT` as the
/// tool's first required parameter, whether or not the tool was offered; once a tool answered, it answers
/// `ANSWER: <tool output>`; anything else is answered `no tool`. Every request it gets is kept.
struct FakeModel {
    base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn fake_model() -> FakeModel {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(fake_completion))
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeModel {
        base_url: format!("http://{address}/v1"),
        requests,
    }
}

async fn fake_completion(
    State(requests): State<Arc<Mutex<Vec<Value>>>>,
    axum::Json(request): axum::Json<Value>,
) -> axum::Json<Value> {
    requests.lock().unwrap().push(request.clone());
    let messages = request["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    let content = last["content"].as_str().unwrap_or_default();
    let message = if last["role"] == "tool" {
        json!({ "role": "assistant", "content": format!("ANSWER: {content}") })
    } else if let Some((tool, argument)) = content.split_once(": ") {
        let offered = request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|offered| offered["function"]["name"] == tool);
        let parameter = offered
            .and_then(|offered| offered["function"]["parameters"]["required"][0].as_str())
            .unwrap_or("query");
        let arguments = json!({ parameter: argument }).to_string();
        json!({ "role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{}", messages.len()), "type": "function",
            "function": { "name": tool, "arguments": arguments },
        }] })
    } else {
        json!({ "role": "assistant", "content": "no tool" })
    };
    axum::Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{ "index": 0, "message": message, "finish_reason": "stop" }],
    }))
}

async fn admin(h: &Harness, method: Method, path: &str, body: Value) -> Value {
    let reply = h.call(method, path, Some(&h.admin_token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    reply.body
}

/// The workspace of every test: orders whose row filter shows alice the EU rows and bob the US rows; alice and bob
/// may read them and use the warehouse, carol may do neither; the fake model behind the endpoint `fake-llm`.
struct World {
    h: Harness,
    model: FakeModel,
    warehouse: String,
    alice: String,
    bob: String,
    carol: String,
}

async fn world() -> World {
    let h = harness().await;
    let warehouse = h.default_warehouse().await;
    for statement in [
        "CREATE CATALOG main",
        "CREATE SCHEMA main.sales",
        "CREATE TABLE main.sales.orders (id INT, region STRING, amount INT)",
        "INSERT INTO main.sales.orders VALUES (1, 'EU', 10), (2, 'US', 20), (3, 'EU', 30)",
        "CREATE TABLE main.sales.margins (id INT, margin INT)",
        "CREATE FUNCTION main.sales.by_region(region STRING) RETURNS BOOLEAN RETURN (region = 'EU' AND current_user() = 'alice@example.com') OR (region = 'US' AND current_user() = 'bob@example.com') OR is_account_group_member('admins')",
        "ALTER TABLE main.sales.orders SET ROW FILTER main.sales.by_region ON (region)",
    ] {
        h.admin_sql(&warehouse, statement).await;
    }
    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    let bob = h.new_user_token("bob@example.com", &["all-apis"]).await;
    let carol = h.new_user_token("carol@example.com", &["all-apis"]).await;
    for principal in ["alice@example.com", "bob@example.com"] {
        for (kind, name, privilege) in [
            ("catalog", "main", "USE_CATALOG"),
            ("schema", "main.sales", "USE_SCHEMA"),
            ("table", "main.sales.orders", "SELECT"),
            ("table", "main.sales.margins", "SELECT"),
        ] {
            let path = format!("/api/2.1/unity-catalog/permissions/{kind}/{name}");
            let change = json!({ "changes": [{ "principal": principal, "add": [privilege] }] });
            admin(&h, Method::PATCH, &path, change).await;
        }
    }
    let acl = json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_USE" }] });
    let path = format!("/api/2.0/permissions/warehouses/{warehouse}");
    admin(&h, Method::PATCH, &path, acl).await;

    let model = fake_model().await;
    let endpoint = json!({ "name": "fake-llm", "config": { "served_entities": [{ "external_model": {
        "name": "fake", "provider": "openai", "task": "llm/v1/chat",
        "openai_config": { "openai_api_base": model.base_url, "openai_api_key_plaintext": "test-key" } } }] } });
    admin(&h, Method::POST, "/api/2.0/serving-endpoints", endpoint).await;
    let obo = json!({ "obo-enabled": true });
    admin(&h, Method::PATCH, "/api/2.0/deputy/settings", obo).await;
    World {
        h,
        model,
        warehouse,
        alice,
        bob,
        carol,
    }
}

impl World {
    /// The YAML of an agent with a SQL tool over the orders.
    fn orders_agent(&self, on_missing_access: &str, user_scopes: &str) -> String {
        format!(
            "model: fake-llm\ninstructions: Answer from the orders.\non_missing_access: {on_missing_access}\n\
             user_scopes: [{user_scopes}]\ntools:\n  - sql: {{warehouse_id: '{}', tables: [main.sales.orders], \
             description: Reads orders.}}\n",
            self.warehouse
        )
    }

    /// Deploys `yaml` as the endpoint `name` that every user may query; returns the deploy answer.
    async fn deploy(&self, name: &str, yaml: &str) -> Value {
        let reply = self.try_deploy(name, yaml).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let path = format!(
            "/api/2.0/permissions/serving-endpoints/{}",
            reply.body["id"].as_str().unwrap()
        );
        let acl = json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_QUERY" }] });
        admin(&self.h, Method::PATCH, &path, acl).await;
        reply.body
    }

    async fn try_deploy(&self, name: &str, yaml: &str) -> support::Reply {
        let path = self.h.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let body = json!({ "name": name, "source_path": path });
        self.h
            .call(
                Method::POST,
                "/api/2.0/deputy/agents",
                Some(&self.h.admin_token),
                Some(body),
            )
            .await
    }

    async fn ask(&self, token: &str, endpoint: &str, question: &str) -> support::Reply {
        let path = format!("/serving-endpoints/{endpoint}/invocations");
        let body = json!({ "messages": [{ "role": "user", "content": question }] });
        self.h
            .call(Method::POST, &path, Some(token), Some(body))
            .await
    }

    async fn audit(&self) -> Vec<Value> {
        let reply = self
            .h
            .call(
                Method::GET,
                "/api/2.0/deputy/audit?limit=1000",
                Some(&self.h.admin_token),
                None,
            )
            .await;
        reply.body["events"].as_array().unwrap().clone()
    }
}

fn final_answer(reply: &Value) -> String {
    reply["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

const SQL: &str = "sql.statement-execution";
const ORDERS_QUERY: &str = "query_sql: SELECT region, amount FROM main.sales.orders ORDER BY id";

#[tokio::test]
async fn each_user_gets_their_own_rows_through_the_agents_sql_tool_and_every_call_is_audited() {
    let w = world().await;
    let deployed = w.deploy("orders", &w.orders_agent("fail", SQL)).await;
    let agent = &deployed["config"]["served_entities"][0]["deputy_agent"];
    assert_eq!(agent["kind"], "declarative");
    assert_eq!(agent["user_api_scopes"], json!(["sql.statement-execution"]));
    assert_eq!(
        agent["system_resources"],
        json!(["serving_endpoint:fake-llm"])
    );
    let principal = agent["service_principal"].as_str().unwrap().to_owned();

    let alice = w.ask(&w.alice, "orders", ORDERS_QUERY).await;
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.body);
    let answer = final_answer(&alice.body);
    assert!(answer.starts_with("ANSWER: "), "{answer}");
    assert!(
        answer.contains("[\"EU\",\"10\"],[\"EU\",\"30\"]"),
        "{answer}"
    );
    assert!(!answer.contains("US"), "{answer}");
    assert_eq!(
        alice.body["choices"][0]["message"]["content"],
        answer.as_str()
    );
    // The assistant's tool call, the tool's output, the final answer; each with its own id.
    let messages = alice.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", alice.body);
    assert_eq!(
        messages[0]["tool_calls"][0]["function"]["name"],
        "query_sql"
    );
    assert_eq!(messages[1]["role"], "tool");
    assert_eq!(
        messages[1]["tool_call_id"],
        messages[0]["tool_calls"][0]["id"]
    );
    assert_ne!(messages[0]["id"], messages[1]["id"]);
    assert_eq!(alice.body["custom_outputs"]["tools"], json!(["query_sql"]));

    // The OpenAI Responses dialect reaches the same loop: `input` in, `output` messages out.
    let responses =
        w.h.call(
            Method::POST,
            "/serving-endpoints/responses",
            Some(&w.alice),
            Some(json!({ "model": "orders", "input": ORDERS_QUERY })),
        )
        .await;
    assert_eq!(responses.status, StatusCode::OK, "{}", responses.body);
    assert_eq!(responses.body["object"], "response");
    let output = responses.body["output"].as_array().unwrap();
    let text = output.last().unwrap()["content"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(text, answer, "{}", responses.body);

    let bob = w.ask(&w.bob, "orders", ORDERS_QUERY).await;
    let answer = final_answer(&bob.body);
    assert!(answer.contains("[\"US\",\"20\"]"), "{answer}");
    assert!(!answer.contains("EU"), "{answer}");

    // The model saw the instructions first and the tool in OpenAI's format.
    let first = w.model.requests.lock().unwrap()[0].clone();
    assert_eq!(
        first["messages"][0],
        json!({ "role": "system", "content": "Answer from the orders." })
    );
    assert_eq!(first["tools"][0]["type"], "function");
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["required"],
        json!(["statement"])
    );

    // Each user's statement went through the statement API as that user, with the agent as the actor.
    let events = w.audit().await;
    for user in ["alice@example.com", "bob@example.com"] {
        let statement = events
            .iter()
            .find(|event| {
                event["user_name"] == user && event["api"] == "POST /api/2.0/sql/statements"
            })
            .unwrap_or_else(|| panic!("no audited statement for {user}: {events:?}"));
        assert_eq!(statement["actors"], json!([principal]));
        assert_eq!(statement["endpoint"], "orders");
        assert_eq!(statement["allowed"], true);
        let access = events
            .iter()
            .find(|event| event["user_name"] == user && event["api"] == "agent.tool-access")
            .unwrap();
        assert_eq!(access["allowed"], true);
        assert_eq!(access["actors"], json!([principal]));
        assert_eq!(access["request_id"], statement["request_id"]);
    }

    // Streaming sends each message as a ChatAgent chunk (and an OpenAI chunk), then `[DONE]`.
    let body = json!({ "messages": [{ "role": "user", "content": ORDERS_QUERY }], "stream": true });
    let streamed =
        w.h.call(
            Method::POST,
            "/serving-endpoints/orders/invocations",
            Some(&w.alice),
            Some(body),
        )
        .await;
    let text = streamed.body.as_str().unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(chunks[1]["delta"]["role"], "tool");
    assert!(
        chunks[2]["delta"]["content"]
            .as_str()
            .unwrap()
            .contains("EU")
    );
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["content"],
        chunks[2]["delta"]["content"]
    );
    assert_eq!(
        chunks.last().unwrap()["custom_outputs"]["tools"],
        json!(["query_sql"])
    );
}

#[tokio::test]
async fn a_tool_the_user_cannot_use_is_skipped_or_refuses_the_request() {
    let w = world().await;
    w.deploy("orders-skip", &w.orders_agent("skip", SQL)).await;
    w.deploy("orders-fail", &w.orders_agent("fail", SQL)).await;

    // skip: carol gets an answer without the tool, told which tool was left out and why.
    let skipped = w.ask(&w.carol, "orders-skip", "hello").await;
    assert_eq!(skipped.status, StatusCode::OK, "{}", skipped.body);
    assert_eq!(final_answer(&skipped.body), "no tool");
    let left_out = &skipped.body["custom_outputs"]["skipped_tools"][0];
    assert_eq!(left_out["tool"], "query_sql");
    assert!(
        left_out["reason"]
            .as_str()
            .unwrap()
            .contains("table `main.sales.orders`"),
        "{left_out}"
    );
    let offered = w.model.requests.lock().unwrap().last().unwrap().clone();
    assert!(offered.get("tools").is_none(), "{offered}");

    // A model that calls the skipped tool anyway is refused, and the refusal is audited.
    let forced = w.ask(&w.carol, "orders-skip", ORDERS_QUERY).await;
    let answer = final_answer(&forced.body);
    assert!(answer.contains("does not offer"), "{answer}");
    let events = w.audit().await;
    let refused = events
        .iter()
        .find(|event| event["api"] == "agent.tool-call")
        .unwrap();
    assert_eq!(refused["allowed"], false);
    assert_eq!(refused["user_name"], "carol@example.com");
    let denied = events
        .iter()
        .find(|event| {
            event["api"] == "agent.tool-access" && event["user_name"] == "carol@example.com"
        })
        .unwrap();
    assert_eq!(denied["allowed"], false);
    assert_eq!(
        denied["securable"],
        format!("sql_warehouse:{} table:main.sales.orders", w.warehouse)
    );
    assert!(
        !events
            .iter()
            .any(|event| event["user_name"] == "carol@example.com"
                && event["api"] == "POST /api/2.0/sql/statements")
    );

    // fail: carol is refused with 403 naming what is missing; alice is served.
    let refused = w.ask(&w.carol, "orders-fail", ORDERS_QUERY).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error_code"], "PERMISSION_DENIED");
    let message = refused.body["message"].as_str().unwrap();
    assert!(
        message.contains("tool `query_sql`") && message.contains("SELECT"),
        "{message}"
    );
    let served = w.ask(&w.alice, "orders-fail", ORDERS_QUERY).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);

    // With on-behalf-of access off, the tools act as the agent's own principal, which holds no grant on the orders.
    let off = json!({ "obo-enabled": false });
    admin(&w.h, Method::PATCH, "/api/2.0/deputy/settings", off).await;
    let system = w.ask(&w.alice, "orders-fail", ORDERS_QUERY).await;
    assert_eq!(system.status, StatusCode::FORBIDDEN, "{}", system.body);
    assert!(
        system.body["message"]
            .as_str()
            .unwrap()
            .contains("main.sales.orders")
    );
}

#[tokio::test]
async fn tool_calls_stay_within_the_declared_scopes_and_tables() {
    let w = world().await;
    w.deploy("orders", &w.orders_agent("skip", SQL)).await;

    // A query outside the listed tables, or one that writes, never runs.
    for (question, expected) in [
        (
            "query_sql: SELECT * FROM main.sales.margins",
            "may read only main.sales.orders",
        ),
        ("query_sql: DELETE FROM main.sales.orders", "only a query"),
    ] {
        let reply = w.ask(&w.alice, "orders", question).await;
        let answer = final_answer(&reply.body);
        assert!(answer.contains(expected), "{question}: {answer}");
    }
    // The admin passes the row filter: the same tool shows them every region.
    let everything = w.ask(&w.h.admin_token, "orders", ORDERS_QUERY).await;
    assert!(
        final_answer(&everything.body).contains("[\"US\",\"20\"]"),
        "{}",
        everything.body
    );

    // A caller whose token shares no scope with the agent's declaration cannot be acted for at all.
    let narrow =
        w.h.new_user_token("dave@example.com", &["serving.serving-endpoints"])
            .await;
    let refused = w.ask(&narrow, "orders", "hello").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    // One that shares some: the agent's token holds only those, and the SQL tool is skipped for lack of its scope.
    let wide = w.orders_agent("skip", "sql.statement-execution, serving.serving-endpoints");
    let wide_principal = w.deploy("orders-wide", &wide).await["config"]["served_entities"][0]["deputy_agent"]
        ["service_principal"]
        .clone();
    let reply = w.ask(&narrow, "orders-wide", "hello").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reason = reply.body["custom_outputs"]["skipped_tools"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("scope sql.statement-execution not in token"),
        "{reason}"
    );

    // Along an agent chain scopes only narrow: `front` may only query endpoints, so the orders agent it calls for
    // alice gets a token without the SQL scope, although alice and that agent both hold it.
    let front = "model: fake-llm\non_missing_access: skip\nuser_scopes: [serving.serving-endpoints]\ntools:\n  \
                 - endpoint: {name: orders-wide, description: Asks the orders agent.}\n";
    let front_principal = w.deploy("front", front).await["config"]["served_entities"][0]["deputy_agent"]
        ["service_principal"]
        .clone();
    let reply = w
        .ask(
            &w.alice,
            "front",
            &format!("ask_orders-wide: {ORDERS_QUERY}"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answer = final_answer(&reply.body);
    assert!(answer.starts_with("ANSWER: ANSWER: error:"), "{answer}");
    assert!(answer.contains("does not offer"), "{answer}");
    assert!(!answer.contains("EU"), "{answer}");
    let events = w.audit().await;
    let inner = events
        .iter()
        .rev()
        .find(|event| event["api"] == "agent.tool-access" && event["endpoint"] == "orders-wide")
        .unwrap();
    assert_eq!(inner["allowed"], false);
    assert_eq!(inner["user_name"], "alice@example.com");
    assert_eq!(
        inner["actors"],
        json!([wide_principal, front_principal]),
        "{inner}"
    );
    assert!(
        inner["reason"]
            .as_str()
            .unwrap()
            .contains("sql.statement-execution"),
        "{inner}"
    );
    let call = events
        .iter()
        .find(|event| event["api"] == "POST /serving-endpoints/{name}/invocations")
        .unwrap();
    assert_eq!(call["actors"], json!([front_principal]));
    assert_eq!(call["user_name"], "alice@example.com");
}

#[tokio::test]
async fn deploying_checks_the_file() {
    let w = world().await;
    let good = w.orders_agent("skip", SQL);
    for (yaml, expected) in [
        (
            format!("{good}temperature: 1\n"),
            "unknown field `temperature`",
        ),
        (
            good.replace("sql.statement-execution", "sql.everything"),
            "sql.everything",
        ),
        (
            good.replace("model: fake-llm\n", ""),
            "missing field `model`",
        ),
        (
            good.replace("[sql.statement-execution]", "[serving.serving-endpoints]"),
            "needs the user API scope `sql.statement-execution`",
        ),
        (good.replace("fake-llm", "no-such-model"), "no-such-model"),
    ] {
        let reply = w.try_deploy("bad", &yaml).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{expected}: {}",
            reply.body
        );
        assert_eq!(reply.body["error_code"], "INVALID_PARAMETER_VALUE");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // Scopes are declared in the file, not also on the request.
    let path = w.h.dir.path().join("scoped.yaml");
    std::fs::write(&path, &good).unwrap();
    let body = json!({ "name": "scoped", "source_path": path, "user_scopes": ["sql"] });
    let reply =
        w.h.call(
            Method::POST,
            "/api/2.0/deputy/agents",
            Some(&w.h.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // Only admins deploy agents (a deploy names a file the server runs), so carol is refused before the check that
    // the deployer may query the agent's model.
    let body = json!({ "name": "carols", "source_path": path });
    let reply =
        w.h.call(
            Method::POST,
            "/api/2.0/deputy/agents",
            Some(&w.carol),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(
        reply.body["message"].as_str().unwrap().contains("admins"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn the_vector_index_tool_searches_as_the_user_under_the_source_tables_row_filter() {
    let w = world().await;
    for statement in [
        "CREATE SCHEMA main.docs",
        "CREATE TABLE main.docs.chunks (id INT, region STRING, body STRING, emb STRING)",
        "INSERT INTO main.docs.chunks VALUES (1, 'EU', 'alpha report', '[1.0, 0.0]'), (2, 'US', 'alpha memo', '[0.0, 1.0]')",
        "ALTER TABLE main.docs.chunks SET ROW FILTER main.sales.by_region ON (region)",
    ] {
        w.h.admin_sql(&w.warehouse, statement).await;
    }
    let endpoint = json!({ "name": "rag", "endpoint_type": "STANDARD" });
    admin(
        &w.h,
        Method::POST,
        "/api/2.0/vector-search/endpoints",
        endpoint,
    )
    .await;
    let index = json!({
        "name": "main.docs.chunks_index", "endpoint_name": "rag", "primary_key": "id", "index_type": "DELTA_SYNC",
        "delta_sync_index_spec": { "source_table": "main.docs.chunks", "pipeline_type": "TRIGGERED",
            "embedding_vector_columns": [{ "name": "emb", "embedding_dimension": 2 }] },
    });
    admin(&w.h, Method::POST, "/api/2.0/vector-search/indexes", index).await;
    for principal in ["alice@example.com", "bob@example.com"] {
        for (kind, name, privilege) in [
            ("schema", "main.docs", "USE_SCHEMA"),
            ("table", "main.docs.chunks_index", "SELECT"),
        ] {
            let path = format!("/api/2.1/unity-catalog/permissions/{kind}/{name}");
            let change = json!({ "changes": [{ "principal": principal, "add": [privilege] }] });
            admin(&w.h, Method::PATCH, &path, change).await;
        }
    }
    let yaml = "model: fake-llm\nuser_scopes: [vectorsearch.vector-search-indexes]\ntools:\n  - vector_index: \
                {name: main.docs.chunks_index, columns: [id, body], num_results: 3, description: Searches the docs.}\n";
    w.deploy("docs", yaml).await;
    for (token, user, seen, hidden) in [
        (&w.alice, "alice@example.com", "alpha report", "alpha memo"),
        (&w.bob, "bob@example.com", "alpha memo", "alpha report"),
    ] {
        let reply = w
            .ask(token, "docs", "main__docs__chunks_index: alpha")
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let answer = final_answer(&reply.body);
        assert!(
            answer.contains(seen) && !answer.contains(hidden),
            "{user}: {answer}"
        );
        let events = w.audit().await;
        let query = events
            .iter()
            .find(|event| {
                event["user_name"] == user
                    && event["api"] == "POST /api/2.0/vector-search/indexes/{name}/query"
            })
            .unwrap();
        assert_eq!(
            query["securable"],
            "/api/2.0/vector-search/indexes/main.docs.chunks_index/query"
        );
        assert_eq!(query["endpoint"], "docs");
    }
    // carol holds no grant on the index: the default `fail` refuses her request.
    let refused = w
        .ask(&w.carol, "docs", "main__docs__chunks_index: alpha")
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
}

#[tokio::test]
async fn the_mcp_tool_calls_a_managed_mcp_server_as_the_user() {
    let w = world().await;
    let yaml = "model: fake-llm\ninstructions: Answer from the orders.\nuser_scopes: [sql, mcp.sql]\ntools:\n  \
                - mcp: {server: /api/2.0/mcp/sql, tool: execute_sql_read_only, description: Reads orders.}\n";
    let deployed = w.deploy("mcp-orders", yaml).await;
    let principal = deployed["config"]["served_entities"][0]["deputy_agent"]["service_principal"]
        .as_str()
        .unwrap()
        .to_owned();
    let question =
        "execute_sql_read_only: SELECT region, amount FROM main.sales.orders ORDER BY id";
    let alice = w.ask(&w.alice, "mcp-orders", question).await;
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.body);
    let answer = final_answer(&alice.body);
    assert!(
        answer.contains("[\"EU\",\"10\"],[\"EU\",\"30\"]") && !answer.contains("US"),
        "{answer}"
    );
    let bob = w.ask(&w.bob, "mcp-orders", question).await;
    let answer = final_answer(&bob.body);
    assert!(
        answer.contains("[\"US\",\"20\"]") && !answer.contains("EU"),
        "{answer}"
    );
    // The model was offered the server's own schema for the tool.
    let first = w.model.requests.lock().unwrap()[0].clone();
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["required"],
        json!(["query"])
    );

    let events = w.audit().await;
    for user in ["alice@example.com", "bob@example.com"] {
        let call = events
            .iter()
            .find(|event| event["user_name"] == user && event["api"] == "mcp tools/call")
            .unwrap_or_else(|| panic!("no audited MCP call for {user}: {events:?}"));
        assert_eq!(call["actors"], json!([principal]));
        assert_eq!(call["allowed"], true);
    }

    // A server path that is not an MCP server's is refused at deploy time.
    let wrong = yaml.replace("/api/2.0/mcp/sql", "/api/2.0/sql/statements");
    assert_eq!(
        w.try_deploy("mcp-wrong", &wrong).await.status,
        StatusCode::BAD_REQUEST
    );
}

/// Each answer names its request in `x-request-id`, the id of the audit events of the agent's calls for it, which the
/// user reads with their own token; streamed and refused answers too.
#[tokio::test]
async fn an_answer_names_its_request_and_the_user_reads_its_audit_events() {
    let w = world().await;
    let deployed = w.deploy("orders", &w.orders_agent("fail", SQL)).await;
    let principal = &deployed["config"]["served_entities"][0]["deputy_agent"]["service_principal"];
    let audited = |token: String, request_id: String| {
        let h = &w.h;
        async move {
            let path = format!("/api/2.0/deputy/audit?request_id={request_id}");
            let reply = h.call(Method::GET, &path, Some(&token), None).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body["events"].as_array().unwrap().clone()
        }
    };
    let request_id =
        |reply: &support::Reply| reply.headers["x-request-id"].to_str().unwrap().to_owned();

    let answered = w.ask(&w.alice, "orders", ORDERS_QUERY).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    let id = request_id(&answered);
    let events = audited(w.alice.clone(), id.clone()).await;
    let apis: Vec<&str> = events
        .iter()
        .map(|event| event["api"].as_str().unwrap())
        .collect();
    for api in [
        "serving.on-behalf-of-token",
        "agent.tool-access",
        "POST /api/2.0/sql/statements",
    ] {
        assert!(apis.contains(&api), "{api} not in {apis:?}");
    }
    for event in &events {
        assert_eq!(event["request_id"], id.as_str());
        assert_eq!(event["user_name"], "alice@example.com");
    }
    let statement = events
        .iter()
        .find(|event| event["api"] == "POST /api/2.0/sql/statements")
        .unwrap();
    assert_eq!(statement["actors"], json!([principal]));

    let body = json!({ "messages": [{ "role": "user", "content": ORDERS_QUERY }], "stream": true });
    let path = "/serving-endpoints/orders/invocations";
    let streamed =
        w.h.call(Method::POST, path, Some(&w.alice), Some(body))
            .await;
    assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.body);
    let streamed_id = request_id(&streamed);
    assert_ne!(streamed_id, id);
    let events = audited(w.alice.clone(), streamed_id).await;
    assert!(
        events
            .iter()
            .any(|event| event["api"] == "POST /api/2.0/sql/statements"),
        "{events:?}"
    );

    let refused = w.ask(&w.carol, "orders", ORDERS_QUERY).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let events = audited(w.carol.clone(), request_id(&refused)).await;
    let denied = events
        .iter()
        .find(|event| event["api"] == "agent.tool-access")
        .unwrap_or_else(|| panic!("no audited tool access: {events:?}"));
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["user_name"], "carol@example.com");
}
