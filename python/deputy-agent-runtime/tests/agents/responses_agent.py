"""A ResponsesAgent that echoes the user text and says which token its user client would send."""

import uuid
from typing import Generator

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


def _text(request: ResponsesAgentRequest) -> str:
    last = request.input[-1]
    content = getattr(last, "content", None)
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content or [])


def _who() -> str:
    user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())
    return user_client.config.authenticate()["Authorization"]


class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = f"echo: {_text(request)} | {_who()} | user_id={request.context.user_id if request.context else None}"
        item = self.create_text_output_item(text=text, id=str(uuid.uuid4()))
        return ResponsesAgentResponse(output=[item], custom_outputs={"seen": _text(request)})

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        item_id = str(uuid.uuid4())
        words = ["echo:", _text(request), _who()]
        for word in words:
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word + " ", item_id=item_id))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done",
            item=self.create_text_output_item(text=" ".join(words), id=item_id),
        )


mlflow.models.set_model(EchoResponsesAgent())
