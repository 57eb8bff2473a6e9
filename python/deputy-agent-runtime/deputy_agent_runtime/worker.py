"""The worker: JSON lines in on stdin, JSON lines out on the original stdout; see README.md for the protocol."""

import argparse
import json
import os
import platform
import sys
import traceback
from typing import Any, Optional

from . import tokens

ERROR_BAD_REQUEST = "BAD_REQUEST"
ERROR_INTERNAL = "INTERNAL_ERROR"
_MAX_MESSAGE = 4000


class Protocol:
    """Owns the real stdin/stdout. Agent code sees fd 0 as /dev/null and fd 1 (and sys.stdout) as stderr."""

    def __init__(self) -> None:
        out_fd = os.dup(1)
        in_fd = os.dup(0)
        sys.stdout.flush()
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout = sys.stderr
        self._out = os.fdopen(out_fd, "wb", buffering=0)
        self._in = os.fdopen(in_fd, "rb")

    def send(self, message: dict) -> None:
        try:
            line = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            # The model produced something JSON cannot carry: report that instead of dying.
            line = json.dumps(
                {
                    "id": message.get("id"),
                    "type": "error",
                    "error_code": ERROR_INTERNAL,
                    "message": f"response is not JSON-serialisable: {type(e).__name__}: {e}",
                },
                separators=(",", ":"),
            )
        self._out.write(line.encode("utf-8") + b"\n")  # unbuffered: each line is flushed as written

    def lines(self):
        for raw in self._in:
            yield raw


def _redact(text: str, secrets: list) -> str:
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[REDACTED]")
    return text


def _system_token() -> Optional[str]:
    """Read only to keep it out of error messages; never cached."""
    directory = os.environ.get("SERVING_CREDENTIALS_DIR", "").strip()
    if not directory:
        return None
    try:
        with open(os.path.join(directory, "model-dependencies-oauth-token")) as f:
            return json.load(f)["OAUTH_TOKEN"][0]["oauthTokenValue"]
    except Exception:
        return None


def _error(request_id: Any, exc: BaseException, user_token: Optional[str]) -> dict:
    from .handlers import BadRequest

    if isinstance(exc, BadRequest):
        code = ERROR_BAD_REQUEST
    else:
        code = ERROR_INTERNAL
        try:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException) and isinstance(exc.error_code, str) and exc.error_code:
                code = exc.error_code
        except ImportError:
            pass
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, BadRequest):
        message = text
    message = _redact(message, [user_token, _system_token()])
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return {"id": request_id, "type": "error", "error_code": code, "message": message}


def _log_exception(request_id: Any, user_token: Optional[str]) -> None:
    text = _redact(traceback.format_exc(), [user_token, _system_token()])
    sys.stderr.write(f"deputy-agent-runtime: request {request_id} failed:\n{text}")
    sys.stderr.flush()


def _parse(raw: bytes):
    """Returns (request dict, None) or (None, error line)."""
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        return None, {"id": None, "type": "error", "error_code": ERROR_BAD_REQUEST, "message": f"malformed request line: {e}"}
    if not isinstance(request, dict):
        return None, {"id": None, "type": "error", "error_code": ERROR_BAD_REQUEST, "message": "request line is not a JSON object"}
    request_id = request.get("id")
    problem = None
    if not isinstance(request_id, str):
        problem = "`id` must be a string"
    elif "payload" not in request:
        problem = "missing `payload`"
    elif not isinstance(request.get("stream", False), bool):
        problem = "`stream` must be a boolean"
    elif not isinstance(request.get("user_token"), (str, type(None))):
        problem = "`user_token` must be a string or null"
    elif not isinstance(request.get("user_id"), (str, type(None))):
        problem = "`user_id` must be a string or null"
    if problem:
        rid = request_id if isinstance(request_id, (str, int)) else None
        return None, {"id": rid, "type": "error", "error_code": ERROR_BAD_REQUEST, "message": f"malformed request: {problem}"}
    return request, None


def _serve_one(protocol: Protocol, handler, request: dict) -> None:
    request_id = request["id"]
    user_token = request.get("user_token") or None
    user_id = request.get("user_id")
    payload = request["payload"]
    tokens.set_user_token(user_token)
    try:
        if request.get("stream", False):
            for chunk in handler.predict_stream(payload, user_id):
                protocol.send({"id": request_id, "type": "chunk", "data": chunk})
            protocol.send({"id": request_id, "type": "done"})
        else:
            data = handler.predict(payload, user_id)
            protocol.send({"id": request_id, "type": "result", "data": data})
    except (Exception, SystemExit) as exc:  # agent code failed (even sys.exit()): answer and keep serving
        _log_exception(request_id, user_token)
        protocol.send(_error(request_id, exc, user_token))
    finally:
        tokens.clear_user_token()


def _hide_developer_config_file() -> None:
    """Databricks Model Serving has no ~/.databrickscfg. If the worker's HOME has one (a developer's machine), its
    DEFAULT profile would outrank the serving credentials of a plain WorkspaceClient() and, worse, set the host that
    user clients send the invoker's token to. Then point the SDK at an empty config file. Only then: the variable
    shows up in the SDK's error messages, which otherwise stay word for word those of Databricks."""
    if "DATABRICKS_CONFIG_FILE" in os.environ:
        return
    if os.path.exists(os.path.expanduser("~/.databrickscfg")):
        os.environ["DATABRICKS_CONFIG_FILE"] = os.devnull
        sys.stderr.write("deputy-agent-runtime: ignoring ~/.databrickscfg (DATABRICKS_CONFIG_FILE=/dev/null)\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deputy_agent_runtime")
    parser.add_argument("--model", required=True, help="MLflow model directory (with MLmodel) or models-from-code .py file")
    parser.add_argument("--flavor", default="auto", help="auto (default), chat_agent, responses_agent or pyfunc")
    args = parser.parse_args(argv)

    protocol = Protocol()
    tokens.clear_user_token()
    _hide_developer_config_file()
    try:
        import mlflow

        from .handlers import Handler
        from .loader import load

        loaded = load(args.model, args.flavor)
        handler = Handler(loaded)
    except BaseException as exc:  # noqa: BLE001 - any failure to load is fatal, including SystemExit from user code
        traceback.print_exc(file=sys.stderr)
        message = _redact(f"{type(exc).__name__}: {exc}", [_system_token()])[:_MAX_MESSAGE]
        protocol.send({"type": "fatal", "message": f"cannot load model {args.model}: {message}"})
        return 1
    finally:
        tokens.clear_user_token()

    protocol.send(
        {"type": "ready", "flavor": loaded.flavor, "python": platform.python_version(), "mlflow": mlflow.__version__}
    )
    for raw in protocol.lines():
        if not raw.strip():
            continue
        request, problem = _parse(raw)
        if problem is not None:
            protocol.send(problem)
            continue
        _serve_one(protocol, handler, request)
    return 0
