"""Load an MLflow model (an MLmodel directory or a models-from-code .py file) and decide its flavor."""

import os
import sys
from dataclasses import dataclass
from typing import Any

FLAVORS = ("chat_agent", "responses_agent", "pyfunc")


@dataclass
class LoadedModel:
    flavor: str  # one of FLAVORS
    # chat_agent: the ChatAgent instance; responses_agent: the ResponsesAgent instance;
    # pyfunc: an object with predict(model_input, params=None) (mlflow's PyFuncModel or its wrapper).
    model: Any


def load(path: str, flavor: str = "auto") -> LoadedModel:
    if flavor not in ("auto",) + FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}: expected auto, chat_agent, responses_agent or pyfunc")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "MLmodel")):
            raise FileNotFoundError(f"{path} is a directory without an MLmodel file")
        loaded = _load_model_dir(path)
    elif os.path.isfile(path) and path.endswith(".py"):
        loaded = _load_code_file(path)
    elif os.path.isfile(path) and os.path.basename(path) == "MLmodel":
        loaded = _load_model_dir(os.path.dirname(path))
    else:
        raise FileNotFoundError(f"{path} is neither an MLflow model directory nor a .py models-from-code file")
    if flavor != "auto" and flavor != loaded.flavor:
        raise ValueError(f"model at {path} is a {loaded.flavor} model, not {flavor}")
    return loaded


def _classify(raw: Any, pyfunc: Any) -> LoadedModel:
    from mlflow.pyfunc import ChatAgent, ResponsesAgent

    if isinstance(raw, ChatAgent):
        return LoadedModel("chat_agent", raw)
    if isinstance(raw, ResponsesAgent):
        return LoadedModel("responses_agent", raw)
    return LoadedModel("pyfunc", pyfunc)


def _load_model_dir(path: str) -> LoadedModel:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(path)
    impl = getattr(model, "_model_impl", None)
    raw = None
    if impl is not None and hasattr(impl, "get_raw_model"):
        raw = impl.get_raw_model()
    elif impl is not None:
        raw = getattr(impl, "python_model", None)
    return _classify(raw, model)


def _load_code_file(path: str) -> LoadedModel:
    """A models-from-code file: executing it calls mlflow.models.set_model(AGENT)."""
    import mlflow.models.model
    from mlflow.models.utils import _load_model_code_path
    from mlflow.pyfunc.model import (
        PythonModel,
        PythonModelContext,
        _FunctionPythonModel,
        _PythonModelPyfuncWrapper,
    )

    # Code models commonly import modules that sit beside them.
    here = os.path.dirname(path)
    if here not in sys.path:
        sys.path.insert(0, here)
    mlflow.models.model.__mlflow_model__ = None
    raw = _load_model_code_path(path, None)
    if not isinstance(raw, PythonModel) and callable(raw):
        raw = _FunctionPythonModel(raw)
    context = PythonModelContext(artifacts={}, model_config={})
    if isinstance(raw, PythonModel):
        raw.load_context(context)
    loaded = _classify(raw, None)
    if loaded.flavor == "pyfunc":
        loaded.model = _PythonModelPyfuncWrapper(raw, context, None)
    return loaded
