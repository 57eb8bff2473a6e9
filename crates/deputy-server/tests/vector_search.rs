//! Router-level tests of vector search: endpoints and their ACLs, indexes as Unity Catalog securables, queries as
//! the end user under the source table's row filter, filter errors, and durability across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use deputy_server::prepare;
use serde_json::{Value, json};
use support::{BASE_URL, Harness, harness};

const VS: &str = "/api/2.0/vector-search";

async fn grant(
    h: &Harness,
    securable_type: &str,
    name: &str,
    principal: &str,
    privileges: &[&str],
) {
    let reply = h
        .call(
            Method::PATCH,
            &format!("/api/2.1/unity-catalog/permissions/{securable_type}/{name}"),
            Some(&h.admin_token),
            Some(json!({ "changes": [{ "principal": principal, "add": privileges }] })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn create_endpoint(h: &Harness, name: &str) -> Value {
    let reply = h
        .call(
            Method::POST,
            &format!("{VS}/endpoints"),
            Some(&h.admin_token),
            Some(json!({ "name": name, "endpoint_type": "STANDARD" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

fn ids(reply: &Value) -> Vec<Value> {
    reply["result"]["data_array"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].clone())
        .collect()
}

#[tokio::test]
async fn users_query_a_delta_sync_index_through_the_source_tables_row_filter() {
    let h = harness().await;
    let warehouse = h.default_warehouse().await;
    for statement in [
        "CREATE CATALOG main",
        "CREATE SCHEMA main.docs",
        "CREATE TABLE main.docs.chunks (id INT, region STRING, body STRING, emb STRING)",
        "INSERT INTO main.docs.chunks VALUES (1, 'EU', 'alpha', '[1.0, 0.0]'), (2, 'US', 'beta', '[0.9, 0.1]'), (3, 'EU', 'gamma', '[0.0, 1.0]'), (4, 'US', 'delta', '[0.1, 0.9]')",
        "CREATE FUNCTION main.docs.by_region(region STRING) RETURNS BOOLEAN RETURN (region = 'EU' AND current_user() = 'alice@example.com') OR (region = 'US' AND current_user() = 'bob@example.com') OR is_account_group_member('admins')",
        "ALTER TABLE main.docs.chunks SET ROW FILTER main.docs.by_region ON (region)",
    ] {
        h.admin_sql(&warehouse, statement).await;
    }
    let endpoint = create_endpoint(&h, "rag").await;
    assert_eq!(endpoint["endpoint_status"]["state"], "ONLINE");
    let created = h
        .call(
            Method::POST,
            &format!("{VS}/indexes"),
            Some(&h.admin_token),
            Some(json!({
                "name": "main.docs.chunks_index", "endpoint_name": "rag", "primary_key": "id", "index_type": "DELTA_SYNC",
                "delta_sync_index_spec": { "source_table": "main.docs.chunks", "pipeline_type": "TRIGGERED",
                    "embedding_vector_columns": [{ "name": "emb", "embedding_dimension": 2 }] },
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["status"]["indexed_row_count"], 4);
    assert_eq!(
        created.body["status"]["detailed_state"],
        "ONLINE_NO_PENDING_UPDATE"
    );

    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    let bob = h.new_user_token("bob@example.com", &["all-apis"]).await;
    let carol = h.new_user_token("carol@example.com", &["all-apis"]).await;
    for principal in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        grant(&h, "catalog", "main", principal, &["USE_CATALOG"]).await;
        grant(&h, "schema", "main.docs", principal, &["USE_SCHEMA"]).await;
    }
    // SELECT on the index only: neither user may read the table itself.
    grant(
        &h,
        "table",
        "main.docs.chunks_index",
        "alice@example.com",
        &["SELECT"],
    )
    .await;
    grant(
        &h,
        "table",
        "main.docs.chunks_index",
        "bob@example.com",
        &["SELECT"],
    )
    .await;

    let path = format!("{VS}/indexes/main.docs.chunks_index/query");
    let body = json!({ "query_vector": [1.0, 0.0], "columns": ["id", "region", "body"], "num_results": 2 });
    let as_admin = h
        .call(
            Method::POST,
            &path,
            Some(&h.admin_token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(as_admin.status, StatusCode::OK, "{}", as_admin.body);
    assert_eq!(
        ids(&as_admin.body),
        vec![json!(1), json!(2)],
        "the two nearest rows"
    );
    let columns: Vec<&str> = as_admin.body["manifest"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        vec!["id", "region", "body", "score"],
        "score is last"
    );
    assert!(
        as_admin.body["result"]["data_array"][0][3]
            .as_f64()
            .unwrap()
            > 0.99
    );

    // The vector-search client's style: GET with a JSON body.
    let as_alice = h
        .call(Method::GET, &path, Some(&alice), Some(body.clone()))
        .await;
    assert_eq!(as_alice.status, StatusCode::OK, "{}", as_alice.body);
    assert_eq!(
        ids(&as_alice.body),
        vec![json!(1), json!(3)],
        "EU rows only, and still two of them"
    );
    let as_bob = h
        .call(Method::POST, &path, Some(&bob), Some(body.clone()))
        .await;
    assert_eq!(ids(&as_bob.body), vec![json!(2), json!(4)], "US rows only");

    let denied = h
        .call(Method::POST, &path, Some(&carol), Some(body.clone()))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert!(
        denied.body["message"]
            .as_str()
            .unwrap()
            .contains("SELECT on main.docs.chunks_index"),
        "{}",
        denied.body
    );

    // A reader whom the filter admits no row gets none, not every row.
    grant(
        &h,
        "table",
        "main.docs.chunks_index",
        "carol@example.com",
        &["SELECT"],
    )
    .await;
    let as_carol = h
        .call(Method::POST, &path, Some(&carol), Some(body.clone()))
        .await;
    assert_eq!(as_carol.status, StatusCode::OK, "{}", as_carol.body);
    assert_eq!(
        ids(&as_carol.body),
        Vec::<Value>::new(),
        "{}",
        as_carol.body
    );

    // Filters: valid ones narrow, invalid ones are the client's error.
    let filtered = h
        .call(Method::POST, &path, Some(&h.admin_token), Some(json!({ "query_vector": [1.0, 0.0], "columns": ["id"], "num_results": 5, "filters_json": "{\"id >\": 1, \"region NOT\": \"US\"}" })))
        .await;
    assert_eq!(ids(&filtered.body), vec![json!(3)]);
    for filters in ["{\"id ~\": 1}", "[1, 2]", "{\"nope\": 1}", "{not json"] {
        let bad = h
            .call(
                Method::POST,
                &path,
                Some(&alice),
                Some(json!({ "query_vector": [1.0, 0.0], "filters_json": filters })),
            )
            .await;
        assert_eq!(
            bad.status,
            StatusCode::BAD_REQUEST,
            "{filters}: {}",
            bad.body
        );
        assert_eq!(bad.body["error_code"], "INVALID_PARAMETER_VALUE");
    }

    // A scan shows each user only their rows too.
    let scan = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.docs.chunks_index/scan"),
            Some(&bob),
            Some(json!({ "num_results": 10 })),
        )
        .await;
    let scanned: Vec<Value> = scan.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["key"] == "id")
                .unwrap()["value"]["number_value"]
                .clone()
        })
        .collect();
    assert_eq!(scanned, vec![json!(2), json!(4)]);

    // Direct writes are refused on a delta-sync index; a sync re-reads the table.
    h.admin_sql(
        &warehouse,
        "INSERT INTO main.docs.chunks VALUES (5, 'EU', 'epsilon', '[0.95, 0.05]')",
    )
    .await;
    let synced = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.docs.chunks_index/sync"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(synced.status, StatusCode::OK, "{}", synced.body);
    let as_alice = h.call(Method::GET, &path, Some(&alice), Some(body)).await;
    assert_eq!(ids(&as_alice.body), vec![json!(1), json!(5)]);
    let upsert = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.docs.chunks_index/upsert-data"),
            Some(&h.admin_token),
            Some(json!({ "inputs_json": "[]" })),
        )
        .await;
    assert_eq!(upsert.status, StatusCode::BAD_REQUEST);
    let write_denied = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.docs.chunks_index/sync"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        write_denied.status,
        StatusCode::FORBIDDEN,
        "syncing needs MODIFY"
    );
}

#[tokio::test]
async fn endpoint_acls_and_scopes() {
    let h = harness().await;
    let endpoint = create_endpoint(&h, "ep").await;
    let alice = h.new_user_token("alice@example.com", &["all-apis"]).await;
    let missing = h
        .call(
            Method::GET,
            &format!("{VS}/endpoints/ep"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "an endpoint alice may not use"
    );
    let listed = h
        .call(Method::GET, &format!("{VS}/endpoints"), Some(&alice), None)
        .await;
    assert_eq!(listed.body["endpoints"], json!([]));
    let acl = h
        .call(
            Method::GET,
            &format!(
                "/api/2.0/permissions/vector-search-endpoints/{}",
                endpoint["id"].as_str().unwrap()
            ),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(acl.status, StatusCode::OK, "{}", acl.body);
    assert!(
        acl.body.to_string().contains("CAN_MANAGE"),
        "the creator manages it: {}",
        acl.body
    );
    let granted = h
        .call(
            Method::PATCH,
            &format!("/api/2.0/permissions/vector-search-endpoints/{}", endpoint["id"].as_str().unwrap()),
            Some(&h.admin_token),
            Some(json!({ "access_control_list": [{ "user_name": "alice@example.com", "permission_level": "CAN_USE" }] })),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let got = h
        .call(
            Method::GET,
            &format!("{VS}/endpoints/ep"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(got.body["name"], "ep");
    let stop = h
        .call(
            Method::POST,
            &format!("{VS}/endpoints/ep/stop"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        stop.status,
        StatusCode::FORBIDDEN,
        "stopping needs CAN_MANAGE"
    );
    let duplicate = h
        .call(
            Method::POST,
            &format!("{VS}/endpoints"),
            Some(&h.admin_token),
            Some(json!({ "name": "ep" })),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);

    let narrow = h.new_user_token("narrow@example.com", &["sql"]).await;
    let refused = h
        .call(Method::GET, &format!("{VS}/indexes"), Some(&narrow), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("vectorsearch.vector-search-indexes")
    );
}

#[tokio::test]
async fn direct_access_writes_survive_a_restart() {
    let h = harness().await;
    for (path, body) in [
        ("/api/2.1/unity-catalog/catalogs", json!({ "name": "main" })),
        (
            "/api/2.1/unity-catalog/schemas",
            json!({ "name": "rag", "catalog_name": "main" }),
        ),
    ] {
        let reply = h
            .call(Method::POST, path, Some(&h.admin_token), Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    create_endpoint(&h, "ep").await;
    let created = h
        .call(
            Method::POST,
            &format!("{VS}/endpoints/ep/indexes"),
            Some(&h.admin_token),
            Some(json!({
                "name": "main.rag.notes", "primary_key": "id", "index_type": "DIRECT_ACCESS",
                "direct_access_index_spec": { "embedding_vector_columns": [{ "name": "vec", "embedding_dimension": 3 }],
                    "schema_json": "{\"id\": \"string\", \"vec\": \"array<float>\", \"text\": \"string\", \"n\": \"int\"}" },
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(
        created.body["status"]["detailed_state"],
        "ONLINE_DIRECT_ACCESS"
    );
    let rows = json!([
        { "id": "a", "vec": [1.0, 0.0, 0.0], "text": "apples and pears", "n": 1 },
        { "id": "b", "vec": [0.0, 1.0, 0.0], "text": "bananas", "n": 2 },
        { "id": "c", "vec": [0.0, 0.0, 1.0], "text": "cherries and apples", "n": 3 },
        { "id": "d", "vec": [1.0], "text": "wrong dimension", "n": 4 },
    ]);
    let upsert = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.rag.notes/upsert-data"),
            Some(&h.admin_token),
            Some(json!({ "inputs_json": rows.to_string() })),
        )
        .await;
    assert_eq!(upsert.body["status"], "PARTIAL_SUCCESS", "{}", upsert.body);
    assert_eq!(upsert.body["result"]["failed_primary_keys"], json!(["d"]));
    let deleted = h
        .call(
            Method::DELETE,
            &format!("{VS}/indexes/main.rag.notes/delete-data?primary_keys=b"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(deleted.body["status"], "SUCCESS", "{}", deleted.body);

    let Harness {
        dir,
        database,
        state,
        admin_token,
    } = h;
    drop(state);
    let (state, _) = prepare(dir.path(), database.as_deref(), BASE_URL)
        .await
        .unwrap();
    let h = Harness {
        dir,
        database,
        state,
        admin_token,
    };

    let listed = h
        .call(
            Method::GET,
            &format!("{VS}/indexes?endpoint_name=ep"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(listed.body["vector_indexes"][0]["name"], "main.rag.notes");
    let index = h
        .call(
            Method::GET,
            &format!("{VS}/endpoints/ep/indexes/main.rag.notes"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(
        index.body["status"]["indexed_row_count"], 2,
        "{}",
        index.body
    );
    let query = format!("{VS}/indexes/main.rag.notes/query");
    let nearest = h
        .call(Method::POST, &query, Some(&h.admin_token), Some(json!({ "query_vector": [0.1, 0.9, 0.0], "columns": ["id", "n"], "num_results": 5 })))
        .await;
    assert_eq!(
        ids(&nearest.body),
        vec![json!("a"), json!("c")],
        "b was deleted before the restart"
    );
    let text = h
        .call(
            Method::POST,
            &query,
            Some(&h.admin_token),
            Some(json!({ "query_text": "cherries", "query_type": "FULL_TEXT", "columns": ["id"] })),
        )
        .await;
    assert_eq!(ids(&text.body), vec![json!("c")], "{}", text.body);
    let deleted = h
        .call(
            Method::DELETE,
            &format!("{VS}/indexes/main.rag.notes/delete-data"),
            Some(&h.admin_token),
            Some(json!({ "primary_keys": ["a"] })),
        )
        .await;
    assert_eq!(deleted.body["result"]["success_row_count"], 1);
    let dropped = h
        .call(
            Method::DELETE,
            &format!("{VS}/indexes/main.rag.notes"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(dropped.status, StatusCode::OK);
    let gone = h
        .call(
            Method::GET,
            &format!("{VS}/indexes/main.rag.notes"),
            Some(&h.admin_token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_delta_sync_index_shows_masked_columns_as_the_mask_shows_them_and_never_filters_on_them()
{
    let h = harness().await;
    let warehouse = h.default_warehouse().await;
    for statement in [
        "CREATE CATALOG main",
        "CREATE SCHEMA main.docs",
        "CREATE TABLE main.docs.notes (id INT, body STRING, code STRING, emb STRING)",
        "INSERT INTO main.docs.notes VALUES (1, 'alpha', 'A-1', '[1.0, 0.0]'), (2, 'beta', 'B-2', '[0.9, 0.1]')",
        "CREATE FUNCTION main.docs.hide_code(code STRING) RETURNS STRING RETURN CASE WHEN current_user() = 'bob@example.com' THEN 'masked' ELSE code END",
        "ALTER TABLE main.docs.notes ALTER COLUMN code SET MASK main.docs.hide_code",
    ] {
        h.admin_sql(&warehouse, statement).await;
    }
    create_endpoint(&h, "rag").await;
    let created = h
        .call(
            Method::POST,
            &format!("{VS}/indexes"),
            Some(&h.admin_token),
            Some(json!({
                "name": "main.docs.notes_index", "endpoint_name": "rag", "primary_key": "id", "index_type": "DELTA_SYNC",
                "delta_sync_index_spec": { "source_table": "main.docs.notes", "pipeline_type": "TRIGGERED",
                    "embedding_vector_columns": [{ "name": "emb", "embedding_dimension": 2 }] },
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let mut tokens = Vec::new();
    for principal in ["alice@example.com", "bob@example.com"] {
        tokens.push(h.new_user_token(principal, &["all-apis"]).await);
        grant(&h, "catalog", "main", principal, &["USE_CATALOG"]).await;
        grant(&h, "schema", "main.docs", principal, &["USE_SCHEMA"]).await;
        grant(&h, "table", "main.docs.notes_index", principal, &["SELECT"]).await;
    }
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let path = format!("{VS}/indexes/main.docs.notes_index/query");
    let body =
        json!({ "query_vector": [1.0, 0.0], "columns": ["id", "body", "code"], "num_results": 2 });
    let as_alice = h
        .call(Method::POST, &path, Some(alice), Some(body.clone()))
        .await;
    assert_eq!(
        as_alice.body["result"]["data_array"][0][2], "A-1",
        "{}",
        as_alice.body
    );
    let as_bob = h.call(Method::POST, &path, Some(bob), Some(body)).await;
    assert_eq!(as_bob.status, StatusCode::OK, "{}", as_bob.body);
    let rows = as_bob.body["result"]["data_array"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|row| row[2] == "masked" && row[1] != "masked"),
        "{}",
        as_bob.body
    );

    // Filtering on the hidden value would reveal it: refused for bob, allowed for alice.
    let probe = json!({ "query_vector": [1.0, 0.0], "columns": ["id"], "filters_json": "{\"code\": \"A-1\"}" });
    let refused = h
        .call(Method::POST, &path, Some(bob), Some(probe.clone()))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let filtered = h.call(Method::POST, &path, Some(alice), Some(probe)).await;
    assert_eq!(ids(&filtered.body), vec![json!(1)]);

    let scan = h
        .call(
            Method::POST,
            &format!("{VS}/indexes/main.docs.notes_index/scan"),
            Some(bob),
            Some(json!({ "num_results": 10 })),
        )
        .await;
    assert_eq!(scan.status, StatusCode::OK, "{}", scan.body);
    let text = scan.body.to_string();
    assert!(
        !text.contains("A-1") && !text.contains("B-2") && text.contains("masked"),
        "{text}"
    );
}
