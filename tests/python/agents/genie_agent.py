"""A ChatAgent that answers from a Genie space for the user who asks: databricks-langchain's `GenieAgent` is built
inside predict with the user's client (`ModelServingUserCredentials`), so Genie sees the invoking user and their SQL
runs with that user's grants and row filters. The space id comes in `custom_inputs`."""

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from databricks_langchain import GenieAgent
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class GenieChatAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())
        genie = GenieAgent((custom_inputs or {})["space_id"], client=user_client)
        result = genie.invoke({"messages": [{"role": m.role, "content": m.content} for m in messages]})
        answer = result["messages"][-1].content
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=answer, id="genie")])


mlflow.models.set_model(GenieChatAgent())
