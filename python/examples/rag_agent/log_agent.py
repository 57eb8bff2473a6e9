"""Saves the seed's agent as an MLflow model directory whose MLmodel declares what the agent may do.

    python log_agent.py OUTPUT_DIR

`user_auth_policy.api_scopes` are the APIs the agent may call as its user (Deputy narrows each request's token to
them); `system_auth_policy.resources` are what the endpoint's own service principal is granted at deployment.
"""

import sys
from pathlib import Path

import mlflow
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
from mlflow.models.resources import DatabricksServingEndpoint

HERE = Path(__file__).parent


def main(output: str) -> None:
    mlflow.pyfunc.save_model(
        path=output,
        python_model=str(HERE / "agent.py"),
        pip_requirements=[],  # the worker's environment is prepared by Deputy's scripts, not by MLflow
        auth_policy=AuthPolicy(
            user_auth_policy=UserAuthPolicy(
                api_scopes=[
                    "vectorsearch.vector-search-indexes",
                    "serving.serving-endpoints",
                ]
            ),
            system_auth_policy=SystemAuthPolicy(resources=[DatabricksServingEndpoint(endpoint_name="deputy-chat-smollm2")]),
        ),
    )


if __name__ == "__main__":
    main(sys.argv[1])
