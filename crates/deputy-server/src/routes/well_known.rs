//! Discovery documents: host metadata for the Databricks SDK, OAuth authorization-server metadata (RFC 8414), JWKS.

use super::{ApiRouter, Requires};
use axum::Json;
use axum::extract::State;
use deputy_access::Access;
use deputy_core::ApiScope;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .get(
            "/.well-known/databricks-config",
            Requires::Public,
            databricks_config,
        )
        .get(
            "/oidc/.well-known/oauth-authorization-server",
            Requires::Public,
            authorization_server,
        )
        .get(
            "/oidc/.well-known/openid-configuration",
            Requires::Public,
            authorization_server,
        )
        .get(
            "/.well-known/openid-configuration",
            Requires::Public,
            authorization_server,
        )
        .get(
            "/.well-known/oauth-authorization-server",
            Requires::Public,
            authorization_server,
        )
        // RFC 8414 §3.1's own location for the issuer `{base}/oidc`, where MCP clients look first.
        .get(
            "/.well-known/oauth-authorization-server/oidc",
            Requires::Public,
            authorization_server,
        )
        .get("/oidc/v1/keys", Requires::Public, keys)
}

/// The SDK probes this before anything else; `oidc_endpoint` is how it finds the token endpoint for OAuth M2M, and
/// `workspace_id` makes it send `X-Databricks-Workspace-Id`.
async fn databricks_config(State(access): State<Arc<Access>>) -> Json<Value> {
    Json(json!({
        "oidc_endpoint": format!("{}/oidc", access.base_url()),
        "workspace_id": access.workspace_id().to_string(),
    }))
}

async fn authorization_server(State(access): State<Arc<Access>>) -> Json<Value> {
    let oidc = format!("{}/oidc", access.base_url());
    let mut scopes: Vec<&str> = vec![deputy_core::scopes::ALL_APIS, "offline_access"];
    scopes.extend(ApiScope::ALL.iter().map(|scope| scope.name()));
    Json(json!({
        "issuer": access.credentials().issuer(),
        "authorization_endpoint": format!("{oidc}/v1/authorize"),
        "token_endpoint": format!("{oidc}/v1/token"),
        "jwks_uri": format!("{oidc}/v1/keys"),
        "revocation_endpoint": format!("{oidc}/v1/revoke"),
        "introspection_endpoint": format!("{oidc}/v1/introspect"),
        "registration_endpoint": format!("{oidc}/v1/register"),
        // An https URL as `client_id` names the client's own metadata document, read at sign-in.
        "client_id_metadata_document_supported": true,
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        // RFC 9207: every authorization response names its issuer.
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": scopes,
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn keys(State(access): State<Arc<Access>>) -> Json<Value> {
    Json(access.credentials().jwks())
}
