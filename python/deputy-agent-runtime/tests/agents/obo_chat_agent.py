"""A ChatAgent written as on the Databricks on-behalf-of-user page: clients are built inside predict(), the user
client with ModelServingUserCredentials and the system client as a plain WorkspaceClient(). Instead of calling an
API it reports the Authorization header each client would send, so no server is needed.

The last user message is a command: "whoami" (default), "raise", "print", "exit", "leak".
"""

import json
import os
import sys
import uuid
from typing import Any, Generator, Optional

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse, ChatContext


def _try(fn):
    try:
        return fn()
    except Exception as e:  # report the failure as data
        return {"error": f"{type(e).__name__}: {e}"}


def _bearer(client: WorkspaceClient) -> str:
    return client.config.authenticate()["Authorization"]


def initialize_agent() -> dict:
    report: dict = {}
    report["user"] = _try(
        lambda: _bearer(WorkspaceClient(credentials_strategy=ModelServingUserCredentials()))
    )
    try:
        system_client = WorkspaceClient()
        report["system"] = _bearer(system_client)
        report["system_auth_type"] = system_client.config.auth_type
        report["host"] = system_client.config.host
    except Exception as e:  # outside serving (mlflow validates the model at save time) there may be no credentials
        report["system"] = {"error": f"{type(e).__name__}: {e}"}

    def fetch():
        from mlflowserving.scoring_server.agent_utils import fetch_obo_token

        return fetch_obo_token()

    report["fetch_obo_token"] = _try(fetch)
    try:
        from databricks_ai_bridge.model_serving_obo_credential_strategy import (
            ModelServingUserCredentials as BridgeUserCredentials,
        )

        report["ai_bridge_user"] = _try(
            lambda: _bearer(WorkspaceClient(credentials_strategy=BridgeUserCredentials()))
        )
    except ImportError:
        report["ai_bridge_user"] = None
    return report


class OboChatAgent(ChatAgent):
    def predict(
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> ChatAgentResponse:
        command = (messages[-1].content or "whoami").strip()
        if command == "raise":
            raise ValueError("the agent failed on purpose")
        if command == "exit":
            sys.exit(3)
        if command == "leak":
            from mlflowserving.scoring_server.agent_utils import fetch_obo_token

            raise PermissionError(f"upstream rejected token {fetch_obo_token()}")
        if command == "print":
            print("agent chatter on stdout {not json")
            sys.stdout.write("more chatter\n")
            sys.stdout.flush()
            os.write(1, b"raw write to fd 1\n")
        report = initialize_agent()
        report["user_id"] = context.user_id if context else None
        report["conversation_id"] = context.conversation_id if context else None
        report["custom_inputs"] = custom_inputs
        report["n_messages"] = len(messages)
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=json.dumps(report), id=str(uuid.uuid4()))]
        )

    def predict_stream(
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> Generator[ChatAgentChunk, None, None]:
        message_id = str(uuid.uuid4())
        report = initialize_agent()
        for piece in ("one ", "two ", "three"):
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=piece, id=message_id))
        if (messages[-1].content or "").strip() == "raise":
            raise RuntimeError("failed mid-stream")
        yield ChatAgentChunk(
            delta=ChatAgentMessage(role="assistant", content=json.dumps(report), id=str(uuid.uuid4())),
            finish_reason="stop",
        )


AGENT = OboChatAgent()
mlflow.models.set_model(AGENT)
