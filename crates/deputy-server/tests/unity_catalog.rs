//! Router-level tests of Unity Catalog and permissions: securables, grants, who may grant, revocation, ownership,
//! deleted principals, hostile names, workspace-object ACLs and `why`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Harness, SCIM, harness};

const UC: &str = "/api/2.1/unity-catalog";

struct Workspace {
    h: Harness,
    alice: String,
    alice_token: String,
    bob_id: String,
    bob_token: String,
}

impl Workspace {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let reply = self
            .h
            .call(method.clone(), path, Some(&self.h.admin_token), body)
            .await;
        assert!(
            reply.status.is_success(),
            "{method} {path}: {:?}",
            reply.body
        );
        reply.body
    }

    async fn grant(&self, securable: &str, principal: &str, privileges: &[&str]) {
        let body = json!({ "changes": [{ "principal": principal, "add": privileges }] });
        self.admin(
            Method::PATCH,
            &format!("{UC}/permissions/{securable}"),
            Some(body),
        )
        .await;
    }
}

/// main.sales.orders owned by the admin, a group `analysts` holding alice, and bob on his own.
async fn workspace() -> Workspace {
    let h = harness().await;
    let alice = h.create_user("alice@example.com").await;
    let bob = h.create_user("bob@example.com").await;
    let alice_token = h
        .token_for(alice["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let bob_token = h
        .token_for(bob["id"].as_str().unwrap(), &["all-apis"])
        .await;
    let w = Workspace {
        alice: alice["userName"].as_str().unwrap().to_owned(),
        alice_token,
        bob_id: bob["id"].as_str().unwrap().to_owned(),
        bob_token,
        h,
    };
    w.admin(
        Method::POST,
        &format!("{SCIM}/Groups"),
        Some(json!({ "displayName": "analysts", "members": [{ "value": alice["id"] }] })),
    )
    .await;
    w.admin(
        Method::POST,
        &format!("{UC}/catalogs"),
        Some(json!({ "name": "main", "comment": "prod" })),
    )
    .await;
    w.admin(
        Method::POST,
        &format!("{UC}/schemas"),
        Some(json!({ "name": "sales", "catalog_name": "main" })),
    )
    .await;
    let table = json!({
        "name": "orders", "catalog_name": "main", "schema_name": "sales", "table_type": "MANAGED",
        "columns": [{ "name": "id", "type_name": "LONG", "type_text": "bigint" }, { "name": "region", "type_name": "STRING" }],
    });
    w.admin(Method::POST, &format!("{UC}/tables"), Some(table))
        .await;
    w
}

#[tokio::test]
async fn securables_are_created_with_the_sdk_shapes_and_the_creator_owns_them() {
    let w = workspace().await;
    let catalog = w
        .admin(Method::GET, &format!("{UC}/catalogs/MAIN"), None)
        .await;
    assert_eq!(catalog["name"], "main");
    assert_eq!(catalog["owner"], "admin");
    assert_eq!(catalog["securable_type"], "CATALOG");
    assert_eq!(catalog["comment"], "prod");
    let table = w
        .admin(Method::GET, &format!("{UC}/tables/main.sales.orders"), None)
        .await;
    assert_eq!(table["full_name"], "main.sales.orders");
    assert_eq!(table["table_type"], "MANAGED");
    assert_eq!(table["columns"][1]["name"], "region");
    let exists = w
        .admin(
            Method::GET,
            &format!("{UC}/tables/main.sales.orders/exists"),
            None,
        )
        .await;
    assert_eq!(exists["table_exists"], true);

    let function = json!({ "function_info": {
        "name": "is_eu", "catalog_name": "main", "schema_name": "sales", "data_type": "BOOLEAN",
        "routine_body": "SQL", "routine_definition": "region = 'EU'",
        "input_params": { "parameters": [{ "name": "region", "type_name": "STRING", "type_text": "string" }] },
    }});
    let created = w
        .admin(Method::POST, &format!("{UC}/functions"), Some(function))
        .await;
    assert_eq!(created["full_name"], "main.sales.is_eu");
    assert_eq!(created["input_params"]["parameters"][0]["name"], "region");

    let connection = json!({ "name": "crm", "connection_type": "HTTP", "options": { "host": "https://crm.example", "bearer_token": "s3cret" } });
    let created = w
        .admin(Method::POST, &format!("{UC}/connections"), Some(connection))
        .await;
    assert_eq!(created["credential_type"], "BEARER_TOKEN");
    let fetched = w
        .admin(Method::GET, &format!("{UC}/connections/crm"), None)
        .await;
    assert!(
        !fetched.to_string().contains("s3cret"),
        "a connection secret was returned: {fetched}"
    );
    let listed = w
        .admin(
            Method::GET,
            &format!("{UC}/connections?max_results=0"),
            None,
        )
        .await;
    assert_eq!(listed["connections"].as_array().unwrap().len(), 1);
    // Catalogs and connections both hang off the metastore; each listing shows only its own kind.
    let catalogs = w
        .admin(Method::GET, &format!("{UC}/catalogs?max_results=0"), None)
        .await;
    let names: Vec<&str> = catalogs["catalogs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["main"]);

    let duplicate =
        w.h.call(
            Method::POST,
            &format!("{UC}/catalogs"),
            Some(&w.h.admin_token),
            Some(json!({ "name": "Main" })),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn what_a_user_cannot_use_is_invisible_until_granted() {
    let w = workspace().await;
    let get_table = |token: String| {
        let h = &w.h;
        async move {
            h.call(
                Method::GET,
                &format!("{UC}/tables/main.sales.orders"),
                Some(&token),
                None,
            )
            .await
        }
    };
    assert_eq!(
        get_table(w.alice_token.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    let catalogs =
        w.h.call(
            Method::GET,
            &format!("{UC}/catalogs"),
            Some(&w.alice_token),
            None,
        )
        .await;
    assert_eq!(catalogs.body["catalogs"], json!([]));

    w.grant("catalog/main", "analysts", &["USE_CATALOG", "SELECT"])
        .await;
    w.grant("schema/main.sales", "analysts", &["USE_SCHEMA"])
        .await;
    assert_eq!(
        get_table(w.alice_token.clone()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_table(w.bob_token.clone()).await.status,
        StatusCode::NOT_FOUND,
        "bob is not in analysts"
    );

    let effective =
        w.h.call(
            Method::GET,
            &format!("{UC}/effective-permissions/table/main.sales.orders?principal=analysts"),
            Some(&w.alice_token),
            None,
        )
        .await;
    assert_eq!(
        effective.body["privilege_assignments"][0]["privileges"],
        json!([{ "privilege": "SELECT", "inherited_from_type": "CATALOG", "inherited_from_name": "main" }])
    );

    // Revocation takes effect on the very next request.
    let revoke = json!({ "changes": [{ "principal": "analysts", "remove": ["USE_SCHEMA"] }] });
    w.admin(
        Method::PATCH,
        &format!("{UC}/permissions/schema/main.sales"),
        Some(revoke),
    )
    .await;
    assert_eq!(
        get_table(w.alice_token.clone()).await.status,
        StatusCode::NOT_FOUND
    );

    let why = w.admin(Method::GET, &format!("/api/2.0/deputy/authz/why?principal={}&action=select&securable=table:main.sales.orders", w.alice), None).await;
    assert_eq!(why["allowed"], false);
    assert!(
        why["decision"]
            .as_str()
            .unwrap()
            .contains("USE_SCHEMA on main.sales"),
        "{why}"
    );
}

#[tokio::test]
async fn only_owners_managers_and_admins_grant() {
    let w = workspace().await;
    w.grant("catalog/main", "analysts", &["USE_CATALOG"]).await;
    w.grant("schema/main.sales", "analysts", &["USE_SCHEMA", "SELECT"])
        .await;
    let attempt = json!({ "changes": [{ "principal": "bob@example.com", "add": ["SELECT"] }] });
    let refused =
        w.h.call(
            Method::PATCH,
            &format!("{UC}/permissions/table/main.sales.orders"),
            Some(&w.alice_token),
            Some(attempt.clone()),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("MANAGE or ownership"),
        "{:?}",
        refused.body
    );

    // Owning the parent schema is enough to grant on the table in it.
    w.admin(
        Method::PATCH,
        &format!("{UC}/schemas/main.sales"),
        Some(json!({ "owner": w.alice })),
    )
    .await;
    let allowed =
        w.h.call(
            Method::PATCH,
            &format!("{UC}/permissions/table/main.sales.orders"),
            Some(&w.alice_token),
            Some(attempt),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{:?}", allowed.body);
    let grants = w
        .admin(
            Method::GET,
            &format!("{UC}/permissions/table/main.sales.orders"),
            None,
        )
        .await;
    assert_eq!(
        grants["privilege_assignments"],
        json!([{ "principal": "bob@example.com", "privileges": ["SELECT"] }])
    );

    // A privilege that does not apply to the kind is refused, and nothing is stored.
    let wrong = json!({ "changes": [{ "principal": "bob@example.com", "add": ["EXECUTE"] }] });
    let reply =
        w.h.call(
            Method::PATCH,
            &format!("{UC}/permissions/table/main.sales.orders"),
            Some(&w.h.admin_token),
            Some(wrong),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let unknown = json!({ "changes": [{ "principal": "nobody@example.com", "add": ["SELECT"] }] });
    let reply =
        w.h.call(
            Method::PATCH,
            &format!("{UC}/permissions/table/main.sales.orders"),
            Some(&w.h.admin_token),
            Some(unknown),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// A deleted owner's securables keep its id as owner (ids are never reused). Rebuilding the snapshot once refused
/// them, so every publish after such a deletion failed, and so did the next start.
#[tokio::test]
async fn a_deleted_owner_leaves_the_workspace_writable_and_restartable() {
    let w = workspace().await;
    w.admin(
        Method::PATCH,
        &format!("{UC}/schemas/main.sales"),
        Some(json!({ "owner": "bob@example.com" })),
    )
    .await;
    w.admin(Method::DELETE, &format!("{SCIM}/Users/{}", w.bob_id), None)
        .await;
    w.grant("catalog/main", &w.alice, &["USE_CATALOG", "BROWSE"])
        .await;
    let seen =
        w.h.call(
            Method::GET,
            &format!("{UC}/catalogs/main"),
            Some(&w.alice_token),
            None,
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    let restarted =
        deputy_server::prepare(w.h.dir.path(), w.h.database.as_deref(), support::BASE_URL).await;
    assert!(restarted.is_ok(), "{:?}", restarted.err());
}

#[tokio::test]
async fn a_deleted_principal_loses_its_grants() {
    let w = workspace().await;
    w.grant(
        "catalog/main",
        "bob@example.com",
        &["USE_CATALOG", "BROWSE"],
    )
    .await;
    let seen =
        w.h.call(
            Method::GET,
            &format!("{UC}/catalogs/main"),
            Some(&w.bob_token),
            None,
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    w.admin(Method::DELETE, &format!("{SCIM}/Users/{}", w.bob_id), None)
        .await;
    let grants = w
        .admin(Method::GET, &format!("{UC}/permissions/catalog/main"), None)
        .await;
    assert_eq!(grants["privilege_assignments"], json!([]));
    assert_eq!(
        w.h.call(
            Method::GET,
            &format!("{UC}/catalogs/main"),
            Some(&w.bob_token),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_is_stored() {
    let w = workspace().await;
    for name in [
        "..",
        "a/b",
        "a\\b",
        "`x`",
        "a.b",
        "",
        "mаin",
        "drop table",
        &"x".repeat(256),
    ] {
        let reply =
            w.h.call(
                Method::POST,
                &format!("{UC}/catalogs"),
                Some(&w.h.admin_token),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name:?}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error_code"], "INVALID_PARAMETER_VALUE");
    }
    let reply =
        w.h.call(
            Method::POST,
            &format!("{UC}/schemas"),
            Some(&w.h.admin_token),
            Some(json!({ "name": "../etc", "catalog_name": "main" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let catalogs = w.admin(Method::GET, &format!("{UC}/catalogs"), None).await;
    assert_eq!(catalogs["catalogs"].as_array().unwrap().len(), 1);
    // The server keeps publishing after refused names: a later write still works.
    w.admin(
        Method::POST,
        &format!("{UC}/catalogs"),
        Some(json!({ "name": "dev" })),
    )
    .await;
}

#[tokio::test]
async fn deleting_a_non_empty_catalog_needs_force_and_renames_carry_children() {
    let w = workspace().await;
    let refused =
        w.h.call(
            Method::DELETE,
            &format!("{UC}/catalogs/main"),
            Some(&w.h.admin_token),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error_code"], "INVALID_STATE");
    w.admin(
        Method::PATCH,
        &format!("{UC}/catalogs/main"),
        Some(json!({ "new_name": "prod" })),
    )
    .await;
    let table = w
        .admin(Method::GET, &format!("{UC}/tables/prod.sales.orders"), None)
        .await;
    assert_eq!(table["catalog_name"], "prod");
    w.admin(
        Method::DELETE,
        &format!("{UC}/catalogs/prod?force=true"),
        None,
    )
    .await;
    let gone =
        w.h.call(
            Method::GET,
            &format!("{UC}/tables/prod.sales.orders"),
            Some(&w.h.admin_token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn listings_page_with_tokens() {
    let w = workspace().await;
    for name in ["a", "b", "c"] {
        w.admin(
            Method::POST,
            &format!("{UC}/schemas"),
            Some(json!({ "name": name, "catalog_name": "main" })),
        )
        .await;
    }
    let first = w
        .admin(
            Method::GET,
            &format!("{UC}/schemas?catalog_name=main&max_results=2"),
            None,
        )
        .await;
    assert_eq!(first["schemas"].as_array().unwrap().len(), 2);
    let token = first["next_page_token"].as_str().unwrap();
    let rest = w
        .admin(
            Method::GET,
            &format!("{UC}/schemas?catalog_name=main&max_results=2&page_token={token}"),
            None,
        )
        .await;
    let names: Vec<&str> = rest["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["c", "sales"]);
}

#[tokio::test]
async fn workspace_object_acls_follow_their_levels() {
    let w = workspace().await;
    let id = w.h.default_warehouse().await;
    let path = format!("/api/2.0/permissions/warehouses/{id}");
    // Alice cannot see the warehouse yet.
    assert_eq!(
        w.h.call(Method::GET, &path, Some(&w.alice_token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let levels = w
        .admin(Method::GET, &format!("{path}/permissionLevels"), None)
        .await;
    assert_eq!(levels["permission_levels"].as_array().unwrap().len(), 5);

    let bad = json!({ "access_control_list": [{ "group_name": "analysts", "permission_level": "CAN_QUERY" }] });
    let reply =
        w.h.call(Method::PATCH, &path, Some(&w.h.admin_token), Some(bad))
            .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "CAN_QUERY is not a warehouse level"
    );

    let grant = json!({ "access_control_list": [{ "group_name": "analysts", "permission_level": "CAN_USE" }] });
    let acl = w.admin(Method::PATCH, &path, Some(grant)).await;
    assert_eq!(acl["object_id"], format!("/warehouses/{id}"));
    let analysts = acl["access_control_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group_name"] == "analysts")
        .unwrap()
        .clone();
    assert_eq!(
        analysts["all_permissions"][0]["permission_level"],
        "CAN_USE"
    );
    let admins = acl["access_control_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group_name"] == "admins")
        .unwrap()
        .clone();
    assert_eq!(admins["all_permissions"][0]["inherited"], true);

    // Alice may now see it but not change it.
    assert_eq!(
        w.h.call(Method::GET, &path, Some(&w.alice_token), None)
            .await
            .status,
        StatusCode::OK
    );
    let escalate = json!({ "access_control_list": [{ "user_name": w.alice, "permission_level": "CAN_MANAGE" }] });
    let reply =
        w.h.call(Method::PATCH, &path, Some(&w.alice_token), Some(escalate))
            .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let why = w.admin(Method::GET, &format!("/api/2.0/deputy/authz/why?principal={}&action=use&securable=warehouses:{id}&level=CAN_USE", w.alice), None).await;
    assert_eq!(why["allowed"], true, "{why}");

    // PUT replaces the list: analysts lose their entry.
    w.admin(
        Method::PUT,
        &path,
        Some(json!({ "access_control_list": [] })),
    )
    .await;
    assert_eq!(
        w.h.call(Method::GET, &path, Some(&w.alice_token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn warehouses_are_created_edited_started_stopped_and_deleted_under_their_acl() {
    let w = workspace().await;
    let created = w
        .admin(
            Method::POST,
            "/api/2.0/sql/warehouses",
            Some(json!({ "name": "analytics", "cluster_size": "Small" })),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/2.0/sql/warehouses/{id}");
    assert_eq!(
        w.h.call(Method::GET, &path, Some(&w.alice_token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let refused =
        w.h.call(
            Method::POST,
            "/api/2.0/sql/warehouses",
            Some(&w.alice_token),
            Some(json!({ "name": "mine" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let grant =
        json!({ "access_control_list": [{ "user_name": w.alice, "permission_level": "CAN_USE" }] });
    w.admin(
        Method::PATCH,
        &format!("/api/2.0/permissions/warehouses/{id}"),
        Some(grant),
    )
    .await;
    let seen =
        w.h.call(Method::GET, &path, Some(&w.alice_token), None)
            .await;
    assert_eq!(seen.body["cluster_size"], "Small");
    assert_eq!(
        w.h.call(
            Method::POST,
            &format!("{path}/start"),
            Some(&w.alice_token),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let stop =
        w.h.call(
            Method::POST,
            &format!("{path}/stop"),
            Some(&w.alice_token),
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::FORBIDDEN);
    assert!(
        stop.body["message"]
            .as_str()
            .unwrap()
            .contains("CAN_MANAGE"),
        "{:?}",
        stop.body
    );

    w.admin(Method::POST, &format!("{path}/stop"), None).await;
    w.admin(
        Method::POST,
        &format!("{path}/edit"),
        Some(json!({ "cluster_size": "Large", "auto_stop_mins": 5 })),
    )
    .await;
    let edited = w.admin(Method::GET, &path, None).await;
    assert_eq!(
        (
            edited["state"].as_str(),
            edited["cluster_size"].as_str(),
            edited["auto_stop_mins"].as_i64()
        ),
        (Some("STOPPED"), Some("Large"), Some(5))
    );
    let bad =
        w.h.call(
            Method::POST,
            &format!("{path}/edit"),
            Some(&w.h.admin_token),
            Some(json!({ "auto_stop_mins": -1 })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    w.admin(Method::DELETE, &path, None).await;
    assert_eq!(
        w.h.call(Method::GET, &path, Some(&w.h.admin_token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let remaining = w.admin(Method::GET, "/api/2.0/sql/warehouses", None).await;
    assert_eq!(
        remaining["warehouses"].as_array().unwrap().len(),
        1,
        "the default warehouse stays"
    );
}
