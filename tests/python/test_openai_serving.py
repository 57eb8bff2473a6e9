"""Serving endpoints that run models, called with the real `openai` client and `databricks-sdk`.

The upstream provider is a test double: a tiny OpenAI-compatible HTTP server on 127.0.0.1 written here, which
records what it receives. The built-in local models are exercised when their files are installed (`deputy models
install`, which `.ci/run` runs); without them the server must say so with a 503.
"""

import http.server
import json
import threading

import openai
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import iam, serving

UPSTREAM_KEY = "sk-test-upstream-key-123"


class _FakeOpenAi(http.server.BaseHTTPRequestHandler):
    """Answers chat completions (plain and streamed) and embeddings; remembers each request's headers and body."""

    received: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAi.received.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        if self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0]} for i, text in enumerate(inputs)]
            return self._json({"object": "list", "model": body["model"], "data": data, "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        answer = "echo: " + body["messages"][-1]["content"]
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for index, word in enumerate(answer.split(" ")):
                chunk = {
                    "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": word if index == 0 else " " + word}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            final = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            return None
        return self._json({
            "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        })

    def _json(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def upstream():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAi)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _create_external(w: WorkspaceClient, name: str, base: str, task: str, model: str):
    external = serving.ExternalModel(
        provider=serving.ExternalModelProvider.OPENAI,
        name=model,
        task=task,
        openai_config=serving.OpenAiConfig(openai_api_base=base, openai_api_key_plaintext=UPSTREAM_KEY),
    )
    entity = serving.ServedEntityInput(name=f"{name}-entity", external_model=external)
    return w.serving_endpoints.create(name=name, config=serving.EndpointCoreConfigInput(name=name, served_entities=[entity]))


def test_external_chat_through_the_openai_client(server, admin, upstream):
    created = _create_external(admin, "ext-chat", upstream, "llm/v1/chat", "gpt-test")
    assert created.name == "ext-chat"
    fetched = admin.serving_endpoints.get("ext-chat")
    assert fetched.state.ready.value == "READY"
    assert UPSTREAM_KEY not in json.dumps(fetched.as_dict()), "the provider key must never be returned"

    client = openai.OpenAI(base_url=server.url("/serving-endpoints"), api_key=server.admin_token)
    answer = client.chat.completions.create(model="ext-chat", messages=[{"role": "user", "content": "hello there"}])
    assert answer.choices[0].message.content == "echo: hello there"
    last = _FakeOpenAi.received[-1]
    assert last["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert last["body"]["model"] == "gpt-test", "the endpoint's model name replaces the endpoint name upstream"

    stream = client.chat.completions.create(model="ext-chat", messages=[{"role": "user", "content": "a b c"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "echo: a b c"


def test_responses_api_through_the_openai_client(server, admin, upstream):
    _create_external(admin, "ext-responses", upstream, "llm/v1/chat", "gpt-test")
    client = openai.OpenAI(base_url=server.url("/serving-endpoints"), api_key=server.admin_token)
    answer = client.responses.create(model="ext-responses", instructions="be brief", input="hello there")
    assert answer.output_text == "echo: hello there"
    sent = _FakeOpenAi.received[-1]["body"]["messages"]
    assert sent == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]

    events = list(client.responses.create(model="ext-responses", input=[{"role": "user", "content": "a b c"}], stream=True))
    assert events[0].type == "response.created"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == "echo: a b c"
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "echo: a b c"

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="ext-responses", input=[{"role": "tool", "content": "x"}])
    assert "role" in str(refused.value)


def test_mlflow_deployments_client(server, admin, upstream, monkeypatch):
    from mlflow.deployments import get_deploy_client

    _create_external(admin, "ext-mlflow", upstream, "llm/v1/chat", "gpt-test")
    monkeypatch.setenv("DATABRICKS_HOST", server.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", server.admin_token)
    client = get_deploy_client("databricks")
    assert client.get_endpoint("ext-mlflow")["name"] == "ext-mlflow"
    assert "ext-mlflow" in [endpoint["name"] for endpoint in client.list_endpoints()]
    answer = client.predict(endpoint="ext-mlflow", inputs={"messages": [{"role": "user", "content": "hi mlflow"}]})
    assert answer["choices"][0]["message"]["content"] == "echo: hi mlflow"
    chunks = list(client.predict_stream(endpoint="ext-mlflow", inputs={"messages": [{"role": "user", "content": "x y"}]}))
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == "echo: x y"


def test_streams_send_only_data_lines_and_end_with_done(server, admin, upstream):
    _create_external(admin, "ext-stream", upstream, "llm/v1/chat", "gpt-test")
    response = requests.post(
        server.url("/serving-endpoints/ext-stream/invocations"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={"messages": [{"role": "user", "content": "x y"}], "stream": True},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"


def test_external_embeddings_and_query_through_the_sdk(server, admin, upstream):
    _create_external(admin, "ext-embed", upstream, "llm/v1/embeddings", "embed-test")
    client = openai.OpenAI(base_url=server.url("/serving-endpoints"), api_key=server.admin_token)
    vectors = client.embeddings.create(model="ext-embed", input=["ab", "abcd"])
    assert [item.embedding for item in vectors.data] == [[2.0, 1.0], [4.0, 1.0]]
    queried = admin.serving_endpoints.query(name="ext-embed", input=["abc"])
    assert queried.data[0].embedding == [3.0, 1.0]


def test_querying_needs_can_query(server, admin, upstream):
    _create_external(admin, "ext-private", upstream, "llm/v1/chat", "gpt-test")
    user = admin.users.create(user_name="serving-user@example.com")
    token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=600).token_value
    client = openai.OpenAI(base_url=server.url("/serving-endpoints"), api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ext-private", messages=[{"role": "user", "content": "hi"}])
    endpoint = admin.serving_endpoints.get("ext-private")
    admin.permissions.update(
        request_object_type="serving-endpoints",
        request_object_id=endpoint.id,
        access_control_list=[
            iam.AccessControlRequest(user_name=user.user_name, permission_level=iam.PermissionLevel.CAN_QUERY)
        ],
    )
    answer = client.chat.completions.create(model="ext-private", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"
    # Querying is not managing: deleting still needs CAN_MANAGE.
    response = requests.delete(
        server.url("/api/2.0/serving-endpoints/ext-private"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "PERMISSION_DENIED"


def test_builtin_models_answer_or_say_they_are_not_installed(server, admin):
    client = openai.OpenAI(base_url=server.url("/serving-endpoints"), api_key=server.admin_token, max_retries=0)
    endpoint = admin.serving_endpoints.get("deputy-chat-smollm2")
    if endpoint.state.ready.value != "READY":
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="deputy-chat-smollm2", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 503
        pytest.fail("the built-in models are not installed: run `deputy models install` (as .ci/run does)")
    answer = client.chat.completions.create(
        model="deputy-chat-smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in answer.choices[0].message.content
    vectors = client.embeddings.create(model="deputy-embed-minilm", input=["a sentence"])
    assert len(vectors.data[0].embedding) == 384
