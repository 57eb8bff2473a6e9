"""Vector search with the real clients: databricks-sdk (endpoints, indexes, upsert, query, delete), the
databricks-vectorsearch client (GET-with-body queries, filters),
all against one direct-access index; and a text query embedded by the built-in model when it is installed."""

import json
import os
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import vectorsearch as vs

ENDPOINT = "py-vs"
INDEX = "vsdemo.docs.notes"
ROWS = [
    {"id": "apple", "text": "apples grow on trees", "colour": "red", "vec": [1.0, 0.0, 0.0]},
    {"id": "banana", "text": "bananas are yellow", "colour": "yellow", "vec": [0.0, 1.0, 0.0]},
    {"id": "cherry", "text": "cherries are small and red", "colour": "red", "vec": [0.9, 0.1, 0.0]},
    {"id": "plum", "text": "plums make jam", "colour": "purple", "vec": [0.0, 0.0, 1.0]},
]


@pytest.fixture(scope="module")
def index(admin: WorkspaceClient):
    endpoint = admin.vector_search_endpoints.create_endpoint_and_wait(name=ENDPOINT, endpoint_type=vs.EndpointType.STANDARD)
    assert endpoint.endpoint_status.state == vs.EndpointStatusState.ONLINE
    admin.catalogs.create(name="vsdemo")
    admin.schemas.create(name="docs", catalog_name="vsdemo")
    created = admin.vector_search_indexes.create_index(
        name=INDEX,
        endpoint_name=ENDPOINT,
        primary_key="id",
        index_type=vs.VectorIndexType.DIRECT_ACCESS,
        direct_access_index_spec=vs.DirectAccessVectorIndexSpec(
            embedding_vector_columns=[vs.EmbeddingVectorColumn(name="vec", embedding_dimension=3)],
            schema_json=json.dumps({"id": "string", "text": "string", "colour": "string", "vec": "array<float>"}),
        ),
    )
    assert created.name == INDEX
    upserted = admin.vector_search_indexes.upsert_data_vector_index(index_name=INDEX, inputs_json=json.dumps(ROWS))
    assert upserted.status == vs.UpsertDataStatus.SUCCESS
    assert upserted.result.success_row_count == len(ROWS)
    return INDEX


def test_sdk_endpoints_and_index_metadata(admin: WorkspaceClient, index):
    endpoint = admin.vector_search_endpoints.get_endpoint(ENDPOINT)
    assert endpoint.name == ENDPOINT and endpoint.num_indexes == 1
    assert ENDPOINT in [e.name for e in admin.vector_search_endpoints.list_endpoints()]
    info = admin.vector_search_indexes.get_index(index)
    assert info.index_type == vs.VectorIndexType.DIRECT_ACCESS
    assert info.primary_key == "id"
    assert info.status.ready and info.status.indexed_row_count == len(ROWS)
    assert index in [i.name for i in admin.vector_search_indexes.list_indexes(endpoint_name=ENDPOINT)]


def test_sdk_query_upsert_and_delete(admin: WorkspaceClient, index):
    result = admin.vector_search_indexes.query_index(
        index_name=index, columns=["id", "colour"], query_vector=[1.0, 0.05, 0.0], num_results=2
    )
    assert [c.name for c in result.manifest.columns] == ["id", "colour", "score"]
    assert [row[0] for row in result.result.data_array] == ["apple", "cherry"]
    assert result.result.data_array[0][-1] > result.result.data_array[1][-1]

    filtered = admin.vector_search_indexes.query_index(
        index_name=index, columns=["id"], query_vector=[1.0, 0.0, 0.0], num_results=5,
        filters_json=json.dumps({"colour NOT": "red"}),
    )
    assert {row[0] for row in filtered.result.data_array} == {"banana", "plum"}

    extra = [{"id": "kiwi", "text": "kiwis are green", "colour": "green", "vec": [0.0, 0.7, 0.7]}]
    admin.vector_search_indexes.upsert_data_vector_index(index_name=index, inputs_json=json.dumps(extra))
    deleted = admin.vector_search_indexes.delete_data_vector_index(index_name=index, primary_keys=["kiwi"])
    assert deleted.status == vs.DeleteDataStatus.SUCCESS
    after = admin.vector_search_indexes.query_index(index_name=index, columns=["id"], query_vector=[0.0, 0.7, 0.7], num_results=10)
    assert "kiwi" not in [row[0] for row in after.result.data_array]

    with pytest.raises(Exception) as bad:
        admin.vector_search_indexes.query_index(index_name=index, columns=["id"], query_vector=[1.0, 0.0, 0.0], filters_json='{"colour ~": 1}')
    assert "invalid filter" in str(bad.value)


def test_vectorsearch_client_similarity_search(server, index):
    from databricks.vector_search.client import VectorSearchClient

    client = VectorSearchClient(workspace_url=server.host, personal_access_token=server.admin_token, disable_notice=True)
    found = client.get_index(endpoint_name=ENDPOINT, index_name=index)
    response = found.similarity_search(columns=["id", "text"], query_vector=[0.0, 0.0, 1.0], num_results=1)
    assert response["result"]["data_array"][0][:2] == ["plum", "plums make jam"]
    red = found.similarity_search(columns=["id"], query_vector=[0.0, 1.0, 0.0], filters={"colour": "red"}, num_results=5)
    assert [row[0] for row in red["result"]["data_array"]] == ["cherry", "apple"]
    text = found.similarity_search(columns=["id"], query_text="jam", query_type="FULL_TEXT", num_results=3)
    assert [row[0] for row in text["result"]["data_array"]] == ["plum"]


@pytest.mark.skipif(
    not (Path(os.environ.get("DEPUTY_MODEL_CACHE") or Path.home() / ".cache/deputy/models") / "all-minilm-l6-v2").is_dir(),
    reason="the built-in embedding model is not installed",
)
def test_query_text_through_the_built_in_embedding_model(admin: WorkspaceClient, index):
    admin.vector_search_indexes.create_index(
        name="vsdemo.docs.sentences",
        endpoint_name=ENDPOINT,
        primary_key="id",
        index_type=vs.VectorIndexType.DIRECT_ACCESS,
        direct_access_index_spec=vs.DirectAccessVectorIndexSpec(
            embedding_source_columns=[vs.EmbeddingSourceColumn(name="text", embedding_model_endpoint_name="deputy-embed-minilm")],
            schema_json=json.dumps({"id": "string", "text": "string"}),
        ),
    )
    sentences = [
        {"id": "1", "text": "The cat sleeps on the sofa."},
        {"id": "2", "text": "Stock markets fell sharply today."},
        {"id": "3", "text": "A kitten naps on the couch."},
    ]
    admin.vector_search_indexes.upsert_data_vector_index(index_name="vsdemo.docs.sentences", inputs_json=json.dumps(sentences))
    result = admin.vector_search_indexes.query_index(
        index_name="vsdemo.docs.sentences", columns=["id"], query_text="a sleeping cat", num_results=2
    )
    assert {row[0] for row in result.result.data_array} == {"1", "3"}
