"""Stand-in for the private `mlflowserving` package of Databricks Model Serving.

Only `mlflowserving.scoring_server.agent_utils.fetch_obo_token` exists: databricks-ai-bridge imports it to read the
invoker's (on-behalf-of-user) token. Deputy's agent runtime serves it from the request being handled.
"""
