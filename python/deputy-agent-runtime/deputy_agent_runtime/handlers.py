"""Turn a request payload (the HTTP body the client sent) into a call on the loaded model, and its result into JSON."""

import dataclasses
import math
from typing import Any, Iterator, Optional

from .loader import LoadedModel


class BadRequest(Exception):
    """The payload does not fit the model's interface (answered with error_code BAD_REQUEST)."""


# Keys of a native ChatAgentRequest; a payload with other top-level keys is read as an OpenAI chat-completions body.
_CHAT_AGENT_KEYS = {"messages", "context", "custom_inputs", "stream"}
_MESSAGE_KEYS = ("role", "content", "name", "id", "tool_calls", "tool_call_id", "attachments")


class Handler:
    def __init__(self, loaded: LoadedModel):
        self.flavor = loaded.flavor
        self.model = loaded.model
        if self.flavor == "chat_agent":
            from mlflow.pyfunc.loaders.chat_agent import _ChatAgentPyfuncWrapper

            # Only its response -> dict helper is used; inputs are built here (user_id comes from the request line).
            self._wrapper = _ChatAgentPyfuncWrapper(self.model)
        elif self.flavor == "responses_agent":
            from mlflow.pyfunc.loaders.responses_agent import _ResponsesAgentPyfuncWrapper

            self._wrapper = _ResponsesAgentPyfuncWrapper(self.model, None)

    # -- non-streaming -------------------------------------------------------------------------------------------
    def predict(self, payload: Any, user_id: Optional[str]) -> Any:
        if self.flavor == "chat_agent":
            from mlflow.types.agent import ChatAgentResponse

            messages, context, custom_inputs = self._chat_inputs(payload, user_id)
            response = self.model.predict(messages, context, custom_inputs)
            return self._wrapper._response_to_dict(response, ChatAgentResponse)
        if self.flavor == "responses_agent":
            from mlflow.types.responses import ResponsesAgentResponse

            request = self._responses_request(payload, user_id)
            response = self.model.predict(request)
            return self._wrapper._response_to_dict(response, ResponsesAgentResponse)
        model_input, params = self._pyfunc_input(payload)
        return {"predictions": to_jsonable(self.model.predict(model_input, params=params))}

    # -- streaming -----------------------------------------------------------------------------------------------
    def predict_stream(self, payload: Any, user_id: Optional[str]) -> Iterator[Any]:
        if self.flavor == "chat_agent":
            yield from self._chat_stream(payload, user_id)
        elif self.flavor == "responses_agent":
            yield from self._responses_stream(payload, user_id)
        else:
            model_input, params = self._pyfunc_input(payload)
            if not hasattr(self.model, "predict_stream"):
                raise BadRequest("this model does not support streaming")
            for chunk in self.model.predict_stream(model_input, params=params):
                yield to_jsonable(chunk)

    def _chat_stream(self, payload, user_id):
        from mlflow.pyfunc import ChatAgent
        from mlflow.types.agent import ChatAgentChunk, ChatAgentResponse

        messages, context, custom_inputs = self._chat_inputs(payload, user_id)
        if type(self.model).predict_stream is ChatAgent.predict_stream:
            # The agent only implements predict: one chunk per response message; the last also carries the
            # response's custom outputs (a ChatAgentChunk field), so a streaming client loses nothing.
            response = self._wrapper._response_to_dict(
                self.model.predict(messages, context, custom_inputs), ChatAgentResponse
            )
            answer = response.get("messages", [])
            for index, message in enumerate(answer):
                chunk = {"delta": message}
                if index == len(answer) - 1 and response.get("custom_outputs") is not None:
                    chunk["custom_outputs"] = response["custom_outputs"]
                yield chunk
            return
        for chunk in self.model.predict_stream(messages, context, custom_inputs):
            yield self._wrapper._response_to_dict(chunk, ChatAgentChunk)

    def _responses_stream(self, payload, user_id):
        from mlflow.pyfunc import ResponsesAgent
        from mlflow.types.responses import ResponsesAgentResponse, ResponsesAgentStreamEvent

        request = self._responses_request(payload, user_id)
        if type(self.model).predict_stream is ResponsesAgent.predict_stream:
            response = self._wrapper._response_to_dict(self.model.predict(request), ResponsesAgentResponse)
            for index, item in enumerate(response.get("output", [])):
                yield {"type": "response.output_item.done", "output_index": index, "item": item}
            return
        for event in self.model.predict_stream(request):
            yield self._wrapper._response_to_dict(event, ResponsesAgentStreamEvent)

    # -- inputs --------------------------------------------------------------------------------------------------
    def _chat_inputs(self, payload, user_id):
        import pydantic
        from mlflow.types.agent import ChatAgentMessage, ChatContext

        if isinstance(payload, dict) and "messages" not in payload and "input" in payload:
            payload = _messages_from_responses_input(payload)
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise BadRequest("a ChatAgent request needs a JSON object with a `messages` list")
        try:
            messages = [ChatAgentMessage(**_chat_message(m)) for m in payload["messages"]]
            context = _context(payload.get("context"), user_id)
            custom_inputs = payload.get("custom_inputs")
            if custom_inputs is not None and not isinstance(custom_inputs, dict):
                raise BadRequest("`custom_inputs` must be a JSON object")
        except (pydantic.ValidationError, TypeError, ValueError) as e:
            raise BadRequest(f"invalid ChatAgent request: {e}") from e
        return messages, (ChatContext(**context) if context else None), custom_inputs

    def _responses_request(self, payload, user_id):
        import pydantic
        from mlflow.types.responses import ResponsesAgentRequest

        if not isinstance(payload, dict) or "input" not in payload:
            raise BadRequest("a ResponsesAgent request needs a JSON object with an `input`")
        body = {k: v for k, v in payload.items() if k not in ("stream", "context")}
        if isinstance(body["input"], str):  # the Responses API also takes a bare string
            body["input"] = [{"role": "user", "content": body["input"]}]
        try:
            context = _context(payload.get("context"), user_id)
            if context:
                body["context"] = context
            return ResponsesAgentRequest(**body)
        except (pydantic.ValidationError, TypeError, ValueError) as e:
            raise BadRequest(f"invalid ResponsesAgent request: {e}") from e

    def _pyfunc_input(self, payload):
        """Databricks serving bodies: {"inputs"|"instances": ..., "params"?} or {"dataframe_split"|
        "dataframe_records": ...}; anything else goes to predict unchanged."""
        if isinstance(payload, dict):
            params = payload.get("params")
            rest = set(payload) - {"params"}
            if rest == {"inputs"} or rest == {"instances"}:
                return payload[rest.pop()], params
            if rest == {"dataframe_split"} or rest == {"dataframe_records"}:
                import pandas

                if "dataframe_split" in payload:
                    split = payload["dataframe_split"]
                    if not isinstance(split, dict):
                        raise BadRequest("`dataframe_split` must be a JSON object")
                    return pandas.DataFrame(**split), params
                return pandas.DataFrame.from_records(payload["dataframe_records"]), params
        return payload, None


def _chat_message(m: Any) -> dict:
    """A ChatAgent message, or an OpenAI chat-completions message mapped to one (content parts joined as text)."""
    if not isinstance(m, dict):
        raise BadRequest("every message must be a JSON object")
    out = {k: m[k] for k in _MESSAGE_KEYS if k in m and m[k] is not None}
    content = out.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise BadRequest("only text content parts are supported in chat messages")
        out["content"] = "".join(texts)
    return out


def _context(client_context: Any, user_id: Optional[str]) -> Optional[dict]:
    """conversation_id from the client; user_id only from the request line (the authenticated user)."""
    if client_context is not None and not isinstance(client_context, dict):
        raise BadRequest("`context` must be a JSON object")
    conversation_id = (client_context or {}).get("conversation_id")
    if conversation_id is None and user_id is None:
        return None
    return {"conversation_id": conversation_id, "user_id": user_id}


def to_jsonable(value: Any) -> Any:
    """Model outputs (pandas, numpy, pydantic, dataclasses) as plain JSON values; NaN and infinities become null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(exclude_none=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    module = type(value).__module__
    if module.startswith("pandas"):
        if hasattr(value, "to_dict") and hasattr(value, "columns"):
            return to_jsonable(value.to_dict(orient="records"))
        if hasattr(value, "tolist"):
            return to_jsonable(value.tolist())
    if module.startswith("numpy"):
        if hasattr(value, "tolist"):
            return to_jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "__iter__"):
        return [to_jsonable(v) for v in value]
    return str(value)


def _messages_from_responses_input(payload):
    """A Responses-API body (`input`: a string or message items, optional `instructions`) for a ChatAgent."""
    items = payload["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BadRequest("`input` must be a string or a list of messages")
    messages = [{"role": "system", "content": payload["instructions"]}] if payload.get("instructions") else []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each `input` item must be a message object")
        content = item.get("content")
        if isinstance(content, list):  # input_text / output_text parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        messages.append({"role": item.get("role", "user"), "content": content})
    rest = {key: value for key, value in payload.items() if key in ("context", "custom_inputs", "stream")}
    return {**rest, "messages": messages}
