//! `external-function`: an HTTP request through a Unity Catalog HTTP connection, as the SDK's
//! `serving_endpoints.http_request` (and SQL's `http_request`) make it.
//!
//! The caller needs `USE_CONNECTION` on the connection (as the token's end user) and the API scope
//! `catalog.connections`. The request goes to the connection's origin and base path only (see [`crate::http`]), with
//! the connection's credential.
//!
//! **Invariant:** every call is audited (user, actor chain, connection, method and URL path, allowed or why not)
//! before anything is sent upstream, and nothing about the request is looked at before the caller is known to be
//! allowed to use the connection.

use crate::http::{
    ConnectionError, HttpConnection, UpstreamRequest, UpstreamResponse, Upstreams, request_headers,
};
use deputy_access::error::decode_stored;
use deputy_access::{Access, Caller, Error};
use deputy_authz::{Action, SecurableKind, SecurableRef};
use deputy_core::ApiScope;
use deputy_store::specs::ConnectionSpec;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The SDK sends `headers`, `json` and `params` as JSON-encoded strings; plain JSON values are taken too.
#[derive(Debug, Deserialize)]
pub struct ExternalFunctionRequest {
    connection_name: Option<String>,
    method: Option<String>,
    path: Option<String>,
    headers: Option<Value>,
    json: Option<Value>,
    params: Option<Value>,
    sub_domain: Option<String>,
}

/// A call that passed every check, ready to send.
struct Prepared {
    connection_id: i64,
    connection: HttpConnection,
    request: UpstreamRequest,
}

/// Checks, audits and sends one request through a connection for `caller`; the answer is the upstream's, whatever
/// its status. An upstream that cannot be reached is a `BAD_GATEWAY`.
pub async fn call_through_connection(
    access: &Access,
    upstreams: &Upstreams,
    caller: &Caller,
    body: ExternalFunctionRequest,
) -> Result<UpstreamResponse, Error> {
    // Only a name that could be a connection's goes into the audit trail, never arbitrary caller text.
    let connection_name = body
        .connection_name
        .clone()
        .filter(|name| deputy_authz::validate_name(name).is_ok())
        .unwrap_or_else(|| "<invalid name>".into());
    let prepared = prepare(access, caller, body).await;
    let entry = access
        .audit_entry(caller, "connection.http-request")
        .scope(ApiScope::CatalogConnections)
        .securable(format!("connections/{connection_name}"));
    let event = match &prepared {
        Ok(call) => entry.allowed(HttpConnection::describe(
            &call.request.url,
            &call.request.method,
        )),
        Err(error) => entry.denied(error.message.clone()),
    };
    access.record(&[event]).await?;
    let call = prepared?;
    upstreams
        .call(call.connection_id, &call.connection, &call.request)
        .await
        .map_err(|error| Error::bad_gateway(error.0))
}

/// Finds the connection, checks `USE_CONNECTION`, then the request: nothing about the request is looked at before
/// the caller is known to be allowed to use the connection.
async fn prepare(
    access: &Access,
    caller: &Caller,
    body: ExternalFunctionRequest,
) -> Result<Prepared, Error> {
    let name = required(body.connection_name, "connection_name")?;
    let record = access
        .store()
        .find_securable(
            deputy_catalog::namespace_of(SecurableKind::Connection),
            &name,
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("connection `{name}` does not exist")))?;
    access.authorize(
        caller,
        ApiScope::CatalogConnections,
        Action::UseConnection(SecurableRef::new(SecurableKind::Connection, &name)),
    )?;
    let spec: ConnectionSpec = decode_stored("connection spec", &record.spec)?;
    if !spec.connection_type.eq_ignore_ascii_case("HTTP") {
        return Err(Error::invalid_parameter(format!(
            "connection `{name}` is of type {}; external functions need an HTTP connection",
            spec.connection_type
        )));
    }
    let refused = |error: ConnectionError| match error {
        ConnectionError::Options(message) => {
            Error::invalid_state(format!("connection `{name}` cannot be used: {message}"))
        }
        ConnectionError::Request(message) => Error::invalid_parameter(message),
    };
    let connection = HttpConnection::from_options(&spec.options).map_err(refused)?;
    let method = match required(body.method, "method")?
        .to_ascii_uppercase()
        .as_str()
    {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            return Err(Error::invalid_parameter(format!(
                "`method` must be GET, POST, PUT, PATCH or DELETE, not `{other}`"
            )));
        }
    };
    let path = body.path.unwrap_or_default();
    let params = string_pairs(body.params, "params")?;
    let headers = string_pairs(body.headers, "headers")?
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    let url = connection
        .url(body.sub_domain.as_deref(), &path, &params)
        .map_err(refused)?;
    let headers = request_headers(&headers).map_err(refused)?;
    let json = match body.json {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            serde_json::from_str::<Value>(&text).map_err(|error| {
                Error::invalid_parameter(format!("`json` is not a JSON document: {error}"))
            })?;
            Some(text)
        }
        Some(value) => Some(value.to_string()),
    };
    Ok(Prepared {
        connection_id: record.id.0,
        connection,
        request: UpstreamRequest {
            method,
            url,
            headers,
            json,
        },
    })
}

fn required(value: Option<String>, field: &str) -> Result<String, Error> {
    value
        .filter(|text| !text.is_empty())
        .ok_or_else(|| Error::invalid_parameter(format!("`{field}` is required")))
}

/// `headers` or `params`: a JSON object (or its JSON-encoded string) whose values are strings, numbers or booleans.
fn string_pairs(value: Option<Value>, field: &str) -> Result<Vec<(String, String)>, Error> {
    let invalid =
        || Error::invalid_parameter(format!("`{field}` must be a JSON object of strings"));
    let object = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(text)) => serde_json::from_str::<Value>(&text).map_err(|_| invalid())?,
        Some(value) => value,
    };
    let Value::Object(map) = object else {
        return Err(invalid());
    };
    map.into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            Value::Number(number) => Ok((key, number.to_string())),
            Value::Bool(flag) => Ok((key, flag.to_string())),
            _ => Err(invalid()),
        })
        .collect()
}
