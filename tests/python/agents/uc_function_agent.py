"""A ChatAgent whose tools are Unity Catalog functions, written the way the Databricks docs write them:
`UCFunctionToolkit` (unitycatalog-langchain) over a `DatabricksFunctionClient` whose `WorkspaceClient` carries the END
USER's on-behalf-of token (`credentials_strategy=ModelServingUserCredentials()`), built inside predict, the functions
running on a SQL warehouse (`warehouse_id`). So each function runs as the user: their EXECUTE, and the row filters and
column masks of the tables its body reads applied for them.

No model: the tool call a model would make is read off the user's message, `TOOL_NAME {json arguments}` (the tool
names are the toolkit's, `catalog__schema__function`), so the answer is exactly what the tool returned. The functions
and the warehouse are the agent's configuration, sent as `custom_inputs`: `{"functions": [...], "warehouse_id": ...}`.

The answer is one JSON object: the invoking user (from the request's context), the tools the toolkit built for that
user, the tool called and its result (the toolkit's JSON: `format` and `value`, or `error`), or what went wrong.
"""

import json
import uuid

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse
from unitycatalog.ai.core.databricks import DatabricksFunctionClient
from unitycatalog.ai.langchain.toolkit import UCFunctionToolkit


class UcFunctionAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        config = custom_inputs or {}
        tool_name, _, arguments = messages[-1].content.partition(" ")
        if not arguments.startswith("{") or "functions" not in config or "warehouse_id" not in config:
            # MLflow runs the agent once on an example when it is logged: no user, no tool call.
            return self._reply({"error": "ask `TOOL_NAME {json arguments}` with custom_inputs functions, warehouse_id"})
        user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())
        answer = {"user": getattr(context, "user_id", None), "tool": tool_name}
        client = DatabricksFunctionClient(client=user_client, warehouse_id=config["warehouse_id"])
        try:
            toolkit = UCFunctionToolkit(
                function_names=config["functions"], client=client, filter_accessible_functions=True
            )
        except Exception as error:  # a function the user may not see, when the server does not answer 403
            answer["toolkit_error"] = f"{type(error).__name__}: {error}"
            return self._reply(answer)
        tools = {tool.name: tool for tool in toolkit.tools}
        answer["tools"] = sorted(tools)
        if tool_name not in tools:
            answer["error"] = f"no tool {tool_name}"
            return self._reply(answer)
        answer["result"] = json.loads(tools[tool_name].invoke(json.loads(arguments)))
        return self._reply(answer)

    @staticmethod
    def _reply(answer):
        message = ChatAgentMessage(role="assistant", content=json.dumps(answer), id=str(uuid.uuid4()))
        return ChatAgentResponse(messages=[message])


mlflow.models.set_model(UcFunctionAgent())
