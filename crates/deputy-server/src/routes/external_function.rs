//! `POST /api/2.0/external-function`: the wire side of [`deputy_connections::external_function`]. The answer is the
//! upstream's raw body with its status and `Content-Type`.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use deputy_access::Access;
use deputy_connections::external_function::{ExternalFunctionRequest, call_through_connection};
use deputy_connections::http::Upstreams;
use deputy_core::ApiScope;
use std::sync::Arc;

pub fn routes(router: ApiRouter) -> ApiRouter {
    router.post(
        "/api/2.0/external-function",
        Requires::Scope(ApiScope::CatalogConnections),
        external_function,
    )
}

async fn external_function(
    State(access): State<Arc<Access>>,
    State(upstreams): State<Arc<Upstreams>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<ExternalFunctionRequest>,
) -> Result<Response, ApiError> {
    let answer = call_through_connection(&access, &upstreams, &caller, body).await?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().extend(answer.headers);
    Ok(response)
}
