"""The worker protocol end to end: a real subprocess, the real databricks-sdk, mlflow and (if installed)
databricks-ai-bridge reading credentials exactly as in Databricks Model Serving."""

import json
import os
import platform

import pytest
import yaml
from conftest import AGENTS_DIR, Worker, write_system_token

OBO_AGENT = os.path.join(AGENTS_DIR, "obo_chat_agent.py")
RESPONSES_AGENT = os.path.join(AGENTS_DIR, "responses_agent.py")
PYFUNC_MODEL = os.path.join(AGENTS_DIR, "plain_pyfunc.py")

try:
    import databricks_ai_bridge  # noqa: F401

    HAVE_AI_BRIDGE = True
except ImportError:
    HAVE_AI_BRIDGE = False


def ask(worker, command="whoami", user_token=None, user_id=None, request_id="r", **payload_extra):
    reply = worker.call(
        {"messages": [{"role": "user", "content": command}], **payload_extra},
        user_token=user_token,
        user_id=user_id,
        request_id=request_id,
    )
    assert reply["id"] == request_id, reply
    assert reply["type"] == "result", reply
    (message,) = reply["data"]["messages"]
    return json.loads(message["content"])


def assert_user_token(report, token):
    assert report["user"] == f"Bearer {token}"
    assert report["fetch_obo_token"] == token
    if HAVE_AI_BRIDGE:
        assert report["ai_bridge_user"] == f"Bearer {token}"


def assert_no_user_token(report):
    # databricks-sdk 0.162.0: the visitor logs RuntimeError("Unable to read Invokers Token in Databricks Model
    # Serving") and ModelServingUserCredentials raises this ValueError while the client is built.
    assert report["user"] == {
        "error": "ValueError: model_serving_user_credentials auth: Unable to authenticate using user_credentials "
        "in Databricks Model Serving Environment"
    }
    assert report["fetch_obo_token"] == {
        "error": "RuntimeError: Unable to read Invokers Token in Databricks Model Serving"
    }
    if HAVE_AI_BRIDGE:
        assert report["ai_bridge_user"]["error"].startswith(
            "ValueError: model_serving_user_credentials auth: Unable to detect credentials for user authorization."
        )


def test_ready_line(start_worker):
    import mlflow

    w = start_worker(OBO_AGENT)
    assert w.hello == {
        "type": "ready",
        "flavor": "chat_agent",
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
    }
    assert w.close() == 0  # stdin EOF: clean exit


def test_user_and_system_clients_see_their_tokens(shared_obo_worker):
    w = shared_obo_worker
    report = ask(
        w,
        user_token="user-token-alice-0001",
        user_id="alice@example.com",
        context={"conversation_id": "conv-7", "user_id": "mallory@example.com"},
        custom_inputs={"k": 1},
    )
    assert_user_token(report, "user-token-alice-0001")
    assert report["system"] == "Bearer system-token-generation-1"
    assert report["system_auth_type"] == "model-serving"
    assert report["host"] == "http://127.0.0.1:9"
    # user_id is the authenticated user from the request line, never the client's claim.
    assert report["user_id"] == "alice@example.com"
    assert report["conversation_id"] == "conv-7"
    assert report["custom_inputs"] == {"k": 1}


def test_rewritten_system_token_file_is_picked_up(start_worker, creds_dir):
    w = start_worker(OBO_AGENT)
    assert ask(w)["system"] == "Bearer system-token-generation-1"
    write_system_token(creds_dir, "system-token-generation-2")
    assert ask(w)["system"] == "Bearer system-token-generation-2"


def test_developer_databrickscfg_is_ignored(start_worker, creds_dir):
    # A developer's ~/.databrickscfg must neither replace the system credentials nor redirect the user's token.
    with open(os.path.join(creds_dir, ".databrickscfg"), "w") as f:
        f.write("[DEFAULT]\nhost = https://elsewhere.invalid\ntoken = dapi-developer-token\n")
    w = start_worker(OBO_AGENT)
    report = ask(w, user_token="tok-cfg-123456789")
    assert report["system"] == "Bearer system-token-generation-1"
    assert report["host"] == "http://127.0.0.1:9"
    assert_user_token(report, "tok-cfg-123456789")


def test_request_without_token_fails_as_documented(shared_obo_worker):
    w = shared_obo_worker
    report = ask(w, user_token=None, user_id=None)
    assert_no_user_token(report)
    # The system client is unaffected, and there is no silent fallback from user to system credentials.
    assert report["system"] == "Bearer system-token-generation-1"
    assert report["user_id"] is None
    # The client's own user_id claim is dropped too.
    assert ask(w, context={"user_id": "mallory"})["user_id"] is None


def test_alternating_users_never_see_each_other(shared_obo_worker):
    w = shared_obo_worker
    sequence = [
        ("tok-alice-aaaaaaaa", "alice"),
        ("tok-bob-bbbbbbbbbb", "bob"),
        (None, None),
        ("tok-alice-aaaaaaaa", "alice"),
        (None, "carol"),  # an authenticated user but OBO disabled for the endpoint
        ("tok-bob-bbbbbbbbbb", "bob"),
        (None, None),
    ]
    for i, (token, user) in enumerate(sequence):
        report = ask(w, user_token=token, user_id=user, request_id=f"req-{i}")
        if token is None:
            assert_no_user_token(report)
        else:
            assert_user_token(report, token)
        assert report["user_id"] == user
    # And with errors in between: a failed request's token is cleared too.
    assert w.call({"messages": [{"role": "user", "content": "raise"}]}, user_token="tok-dave-dddddddd")["type"] == "error"
    assert_no_user_token(ask(w))
    stream = w.call({"messages": [{"role": "user", "content": "raise"}]}, user_token="tok-erin-eeeeeeee", stream=True)
    assert stream[-1]["type"] == "error"
    assert_no_user_token(ask(w))


def test_agent_printing_does_not_corrupt_the_protocol(start_worker):
    w = start_worker(OBO_AGENT)
    report = ask(w, "print", user_token="tok-print-12345678")
    assert_user_token(report, "tok-print-12345678")
    assert ask(w, request_id="after")["system"] == "Bearer system-token-generation-1"
    assert w.close() == 0
    assert all(line.startswith(b"{") for line in w.raw)
    assert "agent chatter on stdout {not json" in w.stderr_text()
    assert "more chatter" in w.stderr_text()
    assert "raw write to fd 1" in w.stderr_text()


def test_exception_gives_error_line_and_worker_continues(shared_obo_worker):
    w = shared_obo_worker
    reply = w.call({"messages": [{"role": "user", "content": "raise"}]}, user_token="tok-x-123456789", request_id="e1")
    assert reply == {
        "id": "e1",
        "type": "error",
        "error_code": "INTERNAL_ERROR",
        "message": "ValueError: the agent failed on purpose",
    }
    # sys.exit() in agent code is an error too, not the end of the worker.
    reply = w.call({"messages": [{"role": "user", "content": "exit"}]}, request_id="e2")
    assert reply["type"] == "error" and reply["message"].startswith("SystemExit")
    assert_user_token(ask(w, user_token="tok-y-123456789", request_id="ok"), "tok-y-123456789")
    assert "the agent failed on purpose" in w.stderr_text()  # the traceback is logged on stderr


def test_error_messages_do_not_echo_tokens(shared_obo_worker):
    w = shared_obo_worker
    reply = w.call({"messages": [{"role": "user", "content": "leak"}]}, user_token="tok-secret-9876543210")
    assert reply["type"] == "error"
    assert reply["message"] == "PermissionError: upstream rejected token [REDACTED]"
    assert "tok-secret-9876543210" not in w.stderr_text()


def test_streaming_yields_chunks_then_done(shared_obo_worker):
    w = shared_obo_worker
    lines = w.call(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
        user_token="tok-stream-1234567",
        user_id="sam",
        request_id="s1",
        stream=True,
    )
    assert [m["type"] for m in lines] == ["chunk"] * 4 + ["done"]
    assert all(m["id"] == "s1" for m in lines)
    assert "".join(m["data"]["delta"]["content"] for m in lines[:3]) == "one two three"
    assert lines[0]["data"]["delta"]["id"] == lines[2]["data"]["delta"]["id"]
    assert lines[3]["data"]["finish_reason"] == "stop"
    assert_user_token(json.loads(lines[3]["data"]["delta"]["content"]), "tok-stream-1234567")
    failing = w.call({"messages": [{"role": "user", "content": "raise"}]}, request_id="s2", stream=True)
    assert [m["type"] for m in failing] == ["chunk"] * 3 + ["error"]
    assert failing[-1]["message"] == "RuntimeError: failed mid-stream"


def test_openai_chat_completions_payload(shared_obo_worker):
    w = shared_obo_worker
    reply = w.call(
        {
            "model": "my-agent",
            "temperature": 0.2,
            "max_tokens": 10,
            "stream": False,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"type": "text", "text": "who"}, {"type": "text", "text": "ami"}]},
            ],
        },
        user_token="tok-openai-1234567",
        user_id="olga",
    )
    assert reply["type"] == "result", reply
    report = json.loads(reply["data"]["messages"][0]["content"])
    assert report["n_messages"] == 2
    assert_user_token(report, "tok-openai-1234567")
    assert report["user_id"] == "olga"


def test_responses_api_payload_reaches_a_chat_agent(shared_obo_worker):
    w = shared_obo_worker
    reply = w.call(
        {
            "model": "my-agent",
            "instructions": "be brief",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "who am I"}]}],
        },
        user_token="tok-responses-12345",
        user_id="rita",
    )
    assert reply["type"] == "result", reply
    report = json.loads(reply["data"]["messages"][0]["content"])
    assert report["n_messages"] == 2  # the instructions became a system message
    assert_user_token(report, "tok-responses-12345")


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": "not a list"},
        {"messages": [{"role": "user"}]},  # neither content nor tool_calls
        {"messages": [{"role": "tool", "content": "x"}]},  # tool message without name / tool_call_id
        {"messages": [{"role": "user", "content": "hi"}], "context": "nope"},
        {"messages": [{"role": "user", "content": "hi"}], "custom_inputs": [1]},
        ["not", "an", "object"],
        {"input": 3},
        {"input": ["not a message"]},
    ],
)
def test_invalid_chat_payload_is_bad_request(shared_obo_worker, payload):
    w = shared_obo_worker
    reply = w.call(payload, user_token="tok-bad-123456789", request_id="b")
    assert reply["id"] == "b" and reply["type"] == "error" and reply["error_code"] == "BAD_REQUEST", reply
    assert ask(w)["system"] == "Bearer system-token-generation-1"


def test_malformed_lines_get_error_lines(shared_obo_worker):
    w = shared_obo_worker
    w.send_line(b"this is not json\n")
    assert w.read() == {
        "id": None,
        "type": "error",
        "error_code": "BAD_REQUEST",
        "message": "malformed request line: Expecting value: line 1 column 1 (char 0)",
    }
    w.send_line(b"[1, 2]\n")
    assert w.read()["error_code"] == "BAD_REQUEST"
    w.send_line(b"\xff\xfe\n")
    assert w.read()["error_code"] == "BAD_REQUEST"
    w.send({"id": "m1", "stream": False})  # no payload
    assert w.read() == {"id": "m1", "type": "error", "error_code": "BAD_REQUEST", "message": "malformed request: missing `payload`"}
    w.send({"id": "m2", "payload": {}, "user_token": 12})
    reply = w.read()
    assert reply["id"] == "m2" and reply["error_code"] == "BAD_REQUEST"
    w.send_line(b"\n")  # blank lines are ignored
    assert ask(w, request_id="fine")["system"] == "Bearer system-token-generation-1"


def test_responses_agent(start_worker):
    w = start_worker(RESPONSES_AGENT)
    assert w.hello["flavor"] == "responses_agent"
    reply = w.call(
        {"input": [{"role": "user", "content": "hello"}], "context": {"user_id": "mallory"}},
        user_token="tok-resp-123456789",
        user_id="rita",
        request_id="q1",
    )
    assert reply["type"] == "result", reply
    data = reply["data"]
    assert data["custom_outputs"] == {"seen": "hello"}
    (item,) = data["output"]
    assert item["type"] == "message"
    assert item["content"][0]["text"] == "echo: hello | Bearer tok-resp-123456789 | user_id=rita"

    # A bare-string input, as the OpenAI Responses API allows.
    reply = w.call({"input": "plain", "model": "x"}, user_token="tok-resp-2-12345678", request_id="q2")
    assert reply["type"] == "result", reply
    assert reply["data"]["output"][0]["content"][0]["text"].startswith("echo: plain | Bearer tok-resp-2-12345678")

    lines = w.call(
        {"input": [{"role": "user", "content": "streamed"}], "stream": True},
        user_token="tok-resp-3-12345678",
        request_id="q3",
        stream=True,
    )
    assert [m["type"] for m in lines] == ["chunk"] * 4 + ["done"]
    assert [m["data"]["type"] for m in lines[:-1]] == ["response.output_text.delta"] * 3 + ["response.output_item.done"]
    assert lines[2]["data"]["delta"] == "Bearer tok-resp-3-12345678 "
    assert lines[3]["data"]["item"]["content"][0]["text"] == "echo: streamed Bearer tok-resp-3-12345678"

    bad = w.call({"messages": []}, request_id="q4")
    assert bad["type"] == "error" and bad["error_code"] == "BAD_REQUEST"


def test_generic_pyfunc(start_worker):
    w = start_worker(PYFUNC_MODEL)
    assert w.hello["flavor"] == "pyfunc"
    assert w.call({"inputs": [1, 2, 3]}) == {"id": "r", "type": "result", "data": {"predictions": [2, 4, 6]}}
    assert w.call({"inputs": [1.5], "params": {"scale": 3}})["data"] == {"predictions": [4.5]}
    assert w.call([4])["data"] == {"predictions": [8]}


def _save_model(path, **kwargs):
    import mlflow.pyfunc
    from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
    from mlflow.models.resources import DatabricksServingEndpoint, DatabricksSQLWarehouse, DatabricksVectorSearchIndex

    auth_policy = AuthPolicy(
        user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints", "vectorsearch.vector-search-indexes"]),
        system_auth_policy=SystemAuthPolicy(
            resources=[
                DatabricksServingEndpoint(endpoint_name="databricks-meta-llama"),
                DatabricksVectorSearchIndex(index_name="main.docs.index"),
                DatabricksSQLWarehouse(warehouse_id="wh-1"),
            ]
        ),
    )
    mlflow.pyfunc.save_model(path, auth_policy=auth_policy, pip_requirements=["mlflow-skinny"], **kwargs)
    with open(os.path.join(path, "MLmodel")) as f:
        return yaml.safe_load(f)


def test_mlmodel_directory_models_from_code(start_worker, tmp_path, monkeypatch):
    monkeypatch.delenv("IS_IN_DB_MODEL_SERVING_ENV", raising=False)
    model_dir = str(tmp_path / "obo_model")
    mlmodel = _save_model(model_dir, python_model=OBO_AGENT)
    assert mlmodel["auth_policy"] == {
        "user_auth_policy": {"api_scopes": ["serving.serving-endpoints", "vectorsearch.vector-search-indexes"]},
        "system_auth_policy": {
            "resources": {
                "api_version": "1",
                "databricks": {
                    "serving_endpoint": [{"name": "databricks-meta-llama"}],
                    "vector_search_index": [{"name": "main.docs.index"}],
                    "sql_warehouse": [{"name": "wh-1"}],
                },
            }
        },
    }
    assert mlmodel["flavors"]["python_function"]["model_code_path"].endswith("obo_chat_agent.py")
    w = start_worker(model_dir)
    assert w.hello["flavor"] == "chat_agent"
    report = ask(w, user_token="tok-dir-123456789", user_id="dora")
    assert_user_token(report, "tok-dir-123456789")
    assert report["user_id"] == "dora"
    assert_no_user_token(ask(w))
    w.close()
    # The MLmodel file itself also names the model.
    w2 = start_worker(os.path.join(model_dir, "MLmodel"))
    assert w2.hello["flavor"] == "chat_agent"


def test_mlmodel_directory_pickled_agent(start_worker, tmp_path, monkeypatch):
    import sys

    monkeypatch.delenv("IS_IN_DB_MODEL_SERVING_ENV", raising=False)
    monkeypatch.syspath_prepend(AGENTS_DIR)
    from pickled_agent import PickledAgent

    model_dir = str(tmp_path / "pickled_model")
    _save_model(model_dir, python_model=PickledAgent("hello"), code_paths=[os.path.join(AGENTS_DIR, "pickled_agent.py")])
    sys.modules.pop("pickled_agent", None)
    w = start_worker(model_dir)
    assert w.hello["flavor"] == "chat_agent"
    reply = w.call({"messages": [{"role": "user", "content": "hi"}]}, user_id="pat")
    assert reply["data"]["messages"][0]["content"] == "hello, pat"


def test_load_failures_are_fatal(creds_dir, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('no such dependency: langgraph')\n")
    no_model = tmp_path / "no_model.py"
    no_model.write_text("x = 1\n")
    cases = [
        ([str(tmp_path / "missing")], "neither an MLflow model directory"),
        ([str(broken)], "no such dependency: langgraph"),
        ([str(no_model)], "set_model"),
        ([OBO_AGENT, "--flavor", "responses_agent"], "is a chat_agent model, not responses_agent"),
    ]
    for args, expected in cases:
        w = Worker(args[0], creds_dir, args[1:])
        assert w.hello["type"] == "fatal", w.hello
        assert expected in w.hello["message"]
        assert w.close() != 0


def test_stream_falls_back_to_predict(start_worker, tmp_path):
    chat = start_worker(os.path.join(AGENTS_DIR, "trivial_chat_agent.py"))
    lines = chat.call({"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert lines == [
        {"id": "r", "type": "chunk", "data": {"delta": {"role": "assistant", "content": "ok", "id": "m1"}}},
        {"id": "r", "type": "done"},
    ]
    with_outputs = tmp_path / "predict_only_chat_with_sources.py"
    with_outputs.write_text(
        "import mlflow\n"
        "from mlflow.pyfunc import ChatAgent\n"
        "from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse\n"
        "class A(ChatAgent):\n"
        "    def predict(self, messages, context=None, custom_inputs=None):\n"
        "        return ChatAgentResponse(\n"
        "            messages=[ChatAgentMessage(role='assistant', content='looking', id='m1'),\n"
        "                      ChatAgentMessage(role='assistant', content='found', id='m2')],\n"
        "            custom_outputs={'sources': ['doc a']})\n"
        "mlflow.models.set_model(A())\n"
    )
    lines = start_worker(str(with_outputs)).call({"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    chunks = [line["data"] for line in lines if line["type"] == "chunk"]
    # The response's custom outputs ride on the last chunk only, as a ChatAgentChunk's own field.
    assert [chunk.get("custom_outputs") for chunk in chunks] == [None, {"sources": ["doc a"]}]
    code = tmp_path / "predict_only_responses.py"
    code.write_text(
        "import mlflow\n"
        "from mlflow.pyfunc import ResponsesAgent\n"
        "from mlflow.types.responses import ResponsesAgentResponse\n"
        "class A(ResponsesAgent):\n"
        "    def predict(self, request):\n"
        "        return ResponsesAgentResponse(output=[self.create_text_output_item(text='hi', id='i1')])\n"
        "mlflow.models.set_model(A())\n"
    )
    responses = start_worker(str(code))
    lines = responses.call({"input": "x"}, stream=True)
    assert [m["type"] for m in lines] == ["chunk", "done"]
    assert lines[0]["data"]["type"] == "response.output_item.done"
    assert lines[0]["data"]["output_index"] == 0
    assert lines[0]["data"]["item"]["content"][0]["text"] == "hi"
