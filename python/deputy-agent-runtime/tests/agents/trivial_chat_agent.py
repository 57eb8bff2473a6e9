"""The smallest ChatAgent: answers "ok". Used by bench_worker.py."""

import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class TrivialAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="ok", id="m1")])


mlflow.models.set_model(TrivialAgent())
