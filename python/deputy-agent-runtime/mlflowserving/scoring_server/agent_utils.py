"""The hook that databricks-ai-bridge's ModelServingUserCredentials imports first:

    from mlflowserving.scoring_server.agent_utils import fetch_obo_token

It returns the downscoped user token of the request being handled by this worker. Outside a request, or when the
request carries no user token (on-behalf-of-user disabled), it raises RuntimeError, which ai-bridge turns into its
"Unable to detect credentials for user authorization" ValueError, as in Databricks Model Serving.
"""

from deputy_agent_runtime import tokens as _tokens


def fetch_obo_token() -> str:
    token = _tokens.current_user_token()
    if token is None:
        raise RuntimeError("Unable to read Invokers Token in Databricks Model Serving")
    return token
