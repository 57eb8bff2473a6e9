"""A ChatAgent written the way the Databricks on-behalf-of page writes them: the user's client is built inside
predict (never at load time), tools that the user cannot use are skipped with a try/except, and the answer says
what the agent could see as that user.

It answers with one JSON object so the tests can check each part: who the user client says the user is, the rows of
`agents_demo.hr.notes` the user may read (a row filter keeps each user to their own rows), what happened when the
agent tried an API outside its declared scopes, and for a question `sql: STATEMENT` the statement's rows as the user.
"""

import json
import os
import uuid

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class SqlAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        question = messages[-1].content
        if question == "crash":
            os._exit(3)
        answer = {"context_user": getattr(context, "user_id", None)}
        try:
            user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())
            answer["user"] = user_client.current_user.me().user_name
        except Exception as error:  # OBO off: the documented failure, reported instead of crashing
            answer["user_client_error"] = f"{type(error).__name__}: {error}"
            return self._reply(answer)
        try:
            warehouse = next(iter(user_client.warehouses.list())).id
            result = user_client.statement_execution.execute_statement(
                statement="SELECT note FROM agents_demo.hr.notes ORDER BY note",
                warehouse_id=warehouse,
                wait_timeout="30s",
            )
            if result.status.error:
                answer["rows_error"] = result.status.error.message
            else:
                answer["rows"] = [row[0] for row in (result.result.data_array or [])]
        except Exception as error:
            answer["rows_error"] = f"{type(error).__name__}: {error}"
        if question.startswith("sql: "):
            # Any statement, run as the user: tables and UC functions are decided by the user's own grants.
            try:
                warehouse = next(iter(user_client.warehouses.list())).id
                result = user_client.statement_execution.execute_statement(
                    statement=question[len("sql: "):], warehouse_id=warehouse, wait_timeout="30s"
                )
                if result.status.error:
                    answer["sql_error"] = result.status.error.message
                else:
                    answer["sql_rows"] = [row for row in (result.result.data_array or [])]
            except Exception as error:
                answer["sql_error"] = f"{type(error).__name__}: {error}"
        try:
            user_client.catalogs.list().__next__()
            answer["catalogs"] = "allowed"
        except StopIteration:
            answer["catalogs"] = "allowed"
        except Exception as error:
            answer["catalogs"] = f"{type(error).__name__}: {error}"
        if question.startswith("ask "):
            # Call another agent endpoint with the user's token: the next agent gets the intersection again.
            other = question.split(" ", 1)[1]
            reply = user_client.serving_endpoints.query(
                name=other, messages=[ChatMessage(role=ChatMessageRole.USER, content="token-info")]
            )
            answer["inner"] = reply.as_dict()
        if question == "token-info":
            answer["token_info"] = user_client.api_client.do("GET", "/api/2.0/deputy/token-info")
        system = WorkspaceClient()
        answer["system"] = system.current_user.me().display_name
        return self._reply(answer)

    @staticmethod
    def _reply(answer):
        message = ChatAgentMessage(role="assistant", content=json.dumps(answer), id=str(uuid.uuid4()))
        return ChatAgentResponse(messages=[message])


mlflow.models.set_model(SqlAgent())
