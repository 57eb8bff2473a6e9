"""Where the invoker's token lives while one request is handled, and nowhere else.

Two slots are read by the real client libraries:
  * threading.main_thread().__dict__["invokers_token"]  (databricks-sdk 0.162.0 ModelServingAuthProvider.
    _get_invokers_token, and databricks-ai-bridge's fallback);
  * `_current` below, served by mlflowserving.scoring_server.agent_utils.fetch_obo_token (ai-bridge's first choice).
Both are process-wide on purpose: agent frameworks run tools on pool threads, and the SDK reads the main thread's
dict from whichever thread it runs on. The worker handles one request at a time, so process-wide is per-request.
"""

import threading
from typing import Optional

MAIN_THREAD_KEY = "invokers_token"

_current: Optional[str] = None


def current_user_token() -> Optional[str]:
    return _current


def set_user_token(token: Optional[str]) -> None:
    """Install `token` for the request about to run; None leaves every slot empty."""
    global _current
    clear_user_token()
    if token is None:
        return
    _current = token
    threading.main_thread().__dict__[MAIN_THREAD_KEY] = token


def clear_user_token() -> None:
    global _current
    _current = None
    threading.main_thread().__dict__.pop(MAIN_THREAD_KEY, None)
