//! Vector search under `/api/2.0/vector-search`, in the shapes of both Python clients: the SDK POSTs queries, the
//! vector-search client sends GET with a JSON body; `delete-data` takes a body or query parameters. The service is
//! `deputy_vector_search`; these handlers only move its answers on and off the wire, and lend it the serving
//! endpoints' models as its [`Embedder`].

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use deputy_access::{Caller, Error};
use deputy_core::ApiScope;
use deputy_serving::Serving;
use deputy_vector_search::VectorSearch;
use deputy_vector_search::{
    CreateEndpoint, CreateIndex, DeleteData, Embedder, ListIndexes, NextPage, QueryRequest,
    ScanRequest, UpsertData,
};
use serde_json::Value;
use std::sync::Arc;

const ENDPOINTS: Requires = Requires::Scope(ApiScope::VectorSearchEndpoints);
const INDEXES: Requires = Requires::Scope(ApiScope::VectorSearchIndexes);

/// The serving endpoints' models, as vector search's embedder: each call decides as the caller, like a query.
struct ServingEmbedder<'a>(&'a Serving);

#[async_trait::async_trait]
impl Embedder for ServingEmbedder<'_> {
    async fn embed(
        &self,
        caller: &Caller,
        endpoint_name: &str,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        deputy_serving::embed_texts(self.0, caller, endpoint_name, texts).await
    }
}

type Answer = Result<Json<Value>, ApiError>;

pub fn routes(router: ApiRouter) -> ApiRouter {
    index_routes(endpoint_routes(router))
}

fn endpoint_routes(router: ApiRouter) -> ApiRouter {
    router
        .post(
            "/api/2.0/vector-search/endpoints",
            ENDPOINTS,
            create_endpoint,
        )
        .get(
            "/api/2.0/vector-search/endpoints",
            ENDPOINTS,
            list_endpoints,
        )
        .get(
            "/api/2.0/vector-search/endpoints/{name}",
            ENDPOINTS,
            get_endpoint,
        )
        .delete(
            "/api/2.0/vector-search/endpoints/{name}",
            ENDPOINTS,
            delete_endpoint,
        )
        .post(
            "/api/2.0/vector-search/endpoints/{name}/start",
            ENDPOINTS,
            |s, c, p| set_endpoint_state(s, c, p, "ONLINE"),
        )
        .post(
            "/api/2.0/vector-search/endpoints/{name}/stop",
            ENDPOINTS,
            |s, c, p| set_endpoint_state(s, c, p, "OFFLINE"),
        )
}

fn index_routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/vector-search/indexes", INDEXES, |s, v, c, b| {
            create_index(s, v, c, None, b)
        })
        .get("/api/2.0/vector-search/indexes", INDEXES, |s, c, q| {
            list_indexes(s, c, q, None)
        })
        .post(
            "/api/2.0/vector-search/endpoints/{endpoint}/indexes",
            INDEXES,
            |s, v, c, Path(endpoint): Path<String>, b| create_index(s, v, c, Some(endpoint), b),
        )
        .get(
            "/api/2.0/vector-search/endpoints/{endpoint}/indexes",
            INDEXES,
            |s, c, q, Path(endpoint): Path<String>| list_indexes(s, c, q, Some(endpoint)),
        )
        .get("/api/2.0/vector-search/indexes/{name}", INDEXES, get_index)
        .get(
            "/api/2.0/vector-search/endpoints/{endpoint}/indexes/{name}",
            INDEXES,
            |s, c, Path((_, name)): Path<(String, String)>| get_index(s, c, Path(name)),
        )
        .delete(
            "/api/2.0/vector-search/indexes/{name}",
            INDEXES,
            delete_index,
        )
        .delete(
            "/api/2.0/vector-search/endpoints/{endpoint}/indexes/{name}",
            INDEXES,
            |s, c, Path((_, name)): Path<(String, String)>| delete_index(s, c, Path(name)),
        )
        .post(
            "/api/2.0/vector-search/indexes/{name}/query",
            INDEXES,
            query,
        )
        .get(
            "/api/2.0/vector-search/indexes/{name}/query",
            INDEXES,
            query,
        )
        .post(
            "/api/2.0/vector-search/indexes/{name}/query-next-page",
            INDEXES,
            query_next_page,
        )
        .get(
            "/api/2.0/vector-search/indexes/{name}/query-next-page",
            INDEXES,
            query_next_page,
        )
        .post("/api/2.0/vector-search/indexes/{name}/scan", INDEXES, scan)
        .get("/api/2.0/vector-search/indexes/{name}/scan", INDEXES, scan)
        .post(
            "/api/2.0/vector-search/indexes/{name}/upsert-data",
            INDEXES,
            upsert_data,
        )
        .delete(
            "/api/2.0/vector-search/indexes/{name}/delete-data",
            INDEXES,
            delete_data,
        )
        .post(
            "/api/2.0/vector-search/indexes/{name}/delete-data",
            INDEXES,
            delete_data,
        )
        .post("/api/2.0/vector-search/indexes/{name}/sync", INDEXES, sync)
}

async fn create_endpoint(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Answer {
    let service = &vector_search;
    Ok(Json(
        deputy_vector_search::create_endpoint(service, &caller, body).await?,
    ))
}

async fn list_endpoints(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
) -> Answer {
    Ok(Json(
        deputy_vector_search::list_endpoints(&vector_search, &caller).await?,
    ))
}

async fn get_endpoint(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Answer {
    Ok(Json(
        deputy_vector_search::get_endpoint(&vector_search, &caller, name).await?,
    ))
}

async fn delete_endpoint(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Answer {
    Ok(Json(
        deputy_vector_search::delete_endpoint(&vector_search, &caller, name).await?,
    ))
}

async fn set_endpoint_state(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    endpoint_state: &'static str,
) -> Answer {
    let service = &vector_search;
    let answer =
        deputy_vector_search::set_endpoint_state(service, &caller, name, endpoint_state).await?;
    Ok(Json(answer))
}

async fn create_index(
    State(serving): State<Arc<Serving>>,
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    endpoint: Option<String>,
    ApiJson(body): ApiJson<CreateIndex>,
) -> Answer {
    let (service, embedder) = (&vector_search, ServingEmbedder(&serving));
    let answer =
        deputy_vector_search::create_index(service, &caller, endpoint, body, &embedder).await?;
    Ok(Json(answer))
}

async fn list_indexes(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListIndexes>,
    endpoint: Option<String>,
) -> Answer {
    let service = &vector_search;
    Ok(Json(
        deputy_vector_search::list_indexes(service, &caller, query, endpoint).await?,
    ))
}

async fn get_index(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Answer {
    Ok(Json(
        deputy_vector_search::get_index(&vector_search, &caller, name).await?,
    ))
}

async fn delete_index(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Answer {
    Ok(Json(
        deputy_vector_search::delete_index(&vector_search, &caller, name).await?,
    ))
}

async fn query(
    State(serving): State<Arc<Serving>>,
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Answer {
    let (service, embedder) = (&vector_search, ServingEmbedder(&serving));
    let answer = deputy_vector_search::query(service, &caller, name, request, &embedder).await?;
    Ok(Json(answer))
}

async fn query_next_page(
    State(serving): State<Arc<Serving>>,
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NextPage>,
) -> Answer {
    let (service, embedder) = (&vector_search, ServingEmbedder(&serving));
    let answer =
        deputy_vector_search::query_next_page(service, &caller, name, body, &embedder).await?;
    Ok(Json(answer))
}

async fn scan(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ScanRequest>,
) -> Answer {
    Ok(Json(
        deputy_vector_search::scan(&vector_search, &caller, name, body).await?,
    ))
}

async fn upsert_data(
    State(serving): State<Arc<Serving>>,
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpsertData>,
) -> Answer {
    let (service, embedder) = (&vector_search, ServingEmbedder(&serving));
    let answer = deputy_vector_search::upsert_data(service, &caller, name, body, &embedder).await?;
    Ok(Json(answer))
}

async fn delete_data(
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    RawQuery(raw_query): RawQuery,
    ApiJson(body): ApiJson<DeleteData>,
) -> Answer {
    let service = &vector_search;
    let answer = deputy_vector_search::delete_data(service, &caller, name, raw_query, body).await?;
    Ok(Json(answer))
}

async fn sync(
    State(serving): State<Arc<Serving>>,
    State(vector_search): State<Arc<VectorSearch>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Answer {
    let (service, embedder) = (&vector_search, ServingEmbedder(&serving));
    Ok(Json(
        deputy_vector_search::sync(service, &caller, name, &embedder).await?,
    ))
}
