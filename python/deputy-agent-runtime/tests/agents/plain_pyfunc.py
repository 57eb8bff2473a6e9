"""A generic pyfunc model (not an agent): doubles numbers."""

import mlflow
from mlflow.pyfunc import PythonModel


class Doubler(PythonModel):
    def predict(self, model_input, params=None):
        scale = (params or {}).get("scale", 2)
        return [x * scale for x in model_input]


mlflow.models.set_model(Doubler())
