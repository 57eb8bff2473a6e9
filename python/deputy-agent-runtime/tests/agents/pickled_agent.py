"""A ChatAgent class without set_model: the tests pickle an instance (mlflow.pyfunc.save_model(python_model=obj))
and ship this file as a code path, the pre-models-from-code way of logging an agent."""

from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class PickledAgent(ChatAgent):
    def __init__(self, greeting: str):
        self.greeting = greeting

    def predict(self, messages, context=None, custom_inputs=None):
        who = context.user_id if context else None
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=f"{self.greeting}, {who}", id="p1")]
        )
