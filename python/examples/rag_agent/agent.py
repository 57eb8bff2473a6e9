"""The seed's agent: a ChatAgent that answers from documents retrieved on behalf of the user who asks.

Written as the Databricks on-behalf-of page writes it: the user's client is built inside `predict` (the user is only
known per request), the `VectorSearchRetrieverTool` gets that client, and its creation sits in a try/except so a user
who may not read the index still gets a best-effort answer without it. The answer comes from a chat model endpoint,
also called as the user. `custom_outputs` lists the sources, so callers can see what each user was allowed to read.

Logged with `log_agent.py` (models-from-code); deployed with `deputy agents deploy`.
"""

import ast
import logging
import os
import re

import mlflow
from databricks.sdk import WorkspaceClient
from databricks.sdk.credentials_provider import ModelServingUserCredentials
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
from databricks_langchain import VectorSearchRetrieverTool
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

        vector_search_tools = []
        # Exclude exception handling if you want the agent to fail when users lack access to the index.
        try:
            tool = VectorSearchRetrieverTool(
                index_name=INDEX_NAME,
                description="Company documents",
                tool_name="documents",
                columns=["id", "title", "body"],
                num_results=3,
                workspace_client=user_client,  # Specify the user authenticated client
            )
            vector_search_tools.append(tool)
        except Exception as error:
            _logger.debug("Skipping adding tool as user does not have permissions: %s", error)
            skipped = f"{type(error).__name__}: {error}"
        else:
            skipped = None

        sources = []
        for tool in vector_search_tools:
            sources.extend(_documents(tool.invoke({"query": question})))

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
                "skipped_tool": skipped,
            },
        )


def _documents(tool_output):
    """The sources in the retriever tool's output: the `repr` of LangChain `Document`s (the tool's JSON fallback), from
    which each document's metadata dict (`id`, `title`) and `page_content` are read back."""
    found = []
    for match in _DOCUMENT.finditer(tool_output):
        metadata = ast.literal_eval(match.group("metadata"))
        found.append({"title": metadata.get("title", ""), "body": ast.literal_eval(match.group("content"))})
    return found


_DOCUMENT = re.compile(r"Document\((?:id=[^,]*, )?metadata=(?P<metadata>\{.*?\}), page_content=(?P<content>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


mlflow.models.set_model(RagAgent())
