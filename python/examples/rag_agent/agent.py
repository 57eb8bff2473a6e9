"""The seed's agent: a ChatAgent that answers from documents retrieved on behalf of the user who asks.

Written as the Databricks on-behalf-of page writes it: the user's client is built inside `predict` (the user is only
known per request), the vector index is queried with that client, and the query sits in a try/except so a user who may
not read the index still gets a best-effort answer without documents. The answer comes from a chat model endpoint,
also called as the user. `custom_outputs` lists the sources, so callers can see what each user was allowed to read.

It needs only `databricks-sdk` and MLflow (the agent runtime's lock): databricks-langchain's
`VectorSearchRetrieverTool` would do the same query, but its declared dependencies do not resolve together with the
current `databricks-sdk`, so an environment with it cannot be locked consistently.

Logged with `log_agent.py` (models-from-code); deployed with `deputy agents deploy`.
"""

import logging
import os

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse

_logger = logging.getLogger(__name__)

INDEX_NAME = os.environ.get("RAG_AGENT_INDEX", "demo.docs.documents_index")
CHAT_ENDPOINT = os.environ.get("RAG_AGENT_CHAT_ENDPOINT", "deputy-chat-smollm2")


class RagAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        question = messages[-1].content
        # Built per request: this client holds the invoking user's downscoped token.
        user_client = WorkspaceClient(credentials_strategy=ModelServingUserCredentials())

        # Exclude exception handling if you want the agent to fail when users lack access to the index.
        try:
            sources = _search(user_client, question)
            skipped = None
        except Exception as error:
            _logger.debug("Answering without documents as the user may not read the index: %s", error)
            sources, skipped = [], f"{type(error).__name__}: {error}"

        # A small model follows a prompt best when the documents sit right before the question.
        documents = "\n".join(f"- {source['body']}" for source in sources) or "- (none that you may read)"
        prompt = f"Documents:\n{documents}\n\nQuestion: {question}\nAnswer in one sentence, from the documents only."
        reply = user_client.serving_endpoints.query(
            name=CHAT_ENDPOINT,
            messages=[ChatMessage(role=ChatMessageRole.USER, content=prompt)],
            max_tokens=40,
            temperature=0.0,
        )
        answer = reply.choices[0].message.content.strip()
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=answer, id="answer")],
            custom_outputs={
                "sources": [source["title"] for source in sources],
                "user": getattr(context, "user_id", None),
                "skipped_search": skipped,
            },
        )


def _search(client, question):
    """The three documents nearest the question that the user may read, as dicts of the requested columns."""
    response = client.vector_search_indexes.query_index(
        index_name=INDEX_NAME, columns=["id", "title", "body"], query_text=question, num_results=3
    )
    names = [column.name for column in response.manifest.columns]
    return [dict(zip(names, row)) for row in (response.result.data_array or [])]


mlflow.models.set_model(RagAgent())
