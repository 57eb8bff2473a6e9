"""A seed-style ChatAgent that uses Deputy's managed MCP servers with the end user's token, the way the Databricks
docs write MCP agents: `DatabricksMCPClient(server_url, WorkspaceClient(credentials_strategy=ModelServingUserCredentials()))`,
built inside predict. No model: the tool call is read off the user's message, so the answer is exactly what the tool
returned.

  `sql: STATEMENT`                      -> tool `execute_sql_read_only` of `{host}/api/2.0/mcp/sql`
  `function CATALOG.SCHEMA.NAME {json}` -> tool `CATALOG__SCHEMA__NAME` of `{host}/api/2.0/mcp/functions/CATALOG/SCHEMA`

The host is the workspace the user client points at (in serving: `DATABRICKS_MODEL_SERVING_HOST_URL`). The answer is
one JSON object: the server URL, the tools the user may see there, and the tool's text (parsed when it is JSON), or
what went wrong.
"""

import json
import uuid

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from databricks_mcp import DatabricksMCPClient
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


def _route(question):
    """(server path below /api/2.0/mcp/, tool name, arguments), or None for a message that names no tool."""
    if question.startswith("sql: "):
        return "sql", "execute_sql_read_only", {"query": question[len("sql: "):]}
    if question.startswith("function "):
        name, _, arguments = question[len("function "):].partition(" ")
        catalog, schema, function = name.split(".")
        return f"functions/{catalog}/{schema}", f"{catalog}__{schema}__{function}", json.loads(arguments or "{}")
    return None


def _describe(error):
    """An exception and, for the task groups the MCP client raises, the exceptions inside."""
    inner = getattr(error, "exceptions", None)
    if inner:
        return f"{type(error).__name__}: " + "; ".join(_describe(item) for item in inner)
    return f"{type(error).__name__}: {error}"


class McpAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        question = messages[-1].content
        route = _route(question)
        if route is None:
            return self._reply({"error": "ask `sql: STATEMENT` or `function CATALOG.SCHEMA.NAME {json}`"})
        path, tool, arguments = route
        user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())
        url = f"{user_client.config.host.rstrip('/')}/api/2.0/mcp/{path}"
        answer = {"server_url": url, "tool": tool}
        mcp = DatabricksMCPClient(url, user_client)
        try:
            answer["tools"] = sorted(listed.name for listed in mcp.list_tools())
            result = mcp.call_tool(tool, arguments)
            text = "".join(item.text for item in result.content if item.type == "text")
            answer["is_error"] = bool(result.isError)
            try:
                answer["result"] = json.loads(text)
            except ValueError:
                answer["result"] = text
        except Exception as error:  # refused by the server: reported, as a tool error would be to a model
            answer["mcp_error"] = _describe(error)
        return self._reply(answer)

    @staticmethod
    def _reply(answer):
        message = ChatAgentMessage(role="assistant", content=json.dumps(answer), id=str(uuid.uuid4()))
        return ChatAgentResponse(messages=[message])


mlflow.models.set_model(McpAgent())
