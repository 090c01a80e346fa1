"""MLflow "model from code": the fitted preprocessor plus the estimator.

The preprocessor is a JSON state applied by the ``preprocessor_state.py`` shipped next to it in
the model's artifacts (verified bit for bit against scikit-learn when saved), or, for a structure
that state does not cover, a skops file. XGBoost estimators are stored in XGBoost's own UBJ
format; other scikit-learn estimators with skops. Nothing here pickles code, and the file
imports no project module, so the model loads wherever its pinned requirements are installed.
"""

import importlib.util
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def _load_state_preprocessor(code_path: str, state_path: str):
    # The model's own copy of the code, not the project's: it is what the state was verified with.
    spec = importlib.util.spec_from_file_location("_model_preprocessor_state", code_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StatePreprocessor(json.loads(Path(state_path).read_text()))


class PipelineModel(PythonModel):
    """Preprocess, then predict labels/values or (``predict_method=predict_proba``) probabilities."""

    def load_context(self, context):
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        if meta.get("preprocessor_format", "skops") == "state-json":
            self.preprocessor = _load_state_preprocessor(
                context.artifacts["preprocessor_code"], context.artifacts["preprocessor"]
            )
        else:
            import skops.io as sio  # its import takes seconds: only for models that need it

            self.preprocessor = sio.load(
                context.artifacts["preprocessor"], trusted=meta["preprocessor_trusted_types"]
            )
        if meta["estimator_format"] == "xgboost-ubj":
            import xgboost

            self.estimator = getattr(xgboost, meta["estimator_class"])()
            self.estimator.load_model(context.artifacts["estimator"])
        else:
            import skops.io as sio

            self.estimator = sio.load(context.artifacts["estimator"], trusted=meta["estimator_trusted_types"])
        classes = meta["classes"]
        self.classes = None if classes is None else np.asarray(classes)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        method = (params or {}).get("predict_method", "predict")
        features = self.preprocessor.transform(model_input)
        if self.classes is None:
            return np.asarray(self.estimator.predict(features))
        if method == "predict_proba":
            proba = self.estimator.predict_proba(features)
            return pd.DataFrame(proba, columns=[str(c) for c in self.classes])
        return self.classes[np.asarray(self.estimator.predict(features)).astype(int)]


mlflow.models.set_model(PipelineModel())
