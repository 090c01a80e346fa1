"""MLflow "model from code": the fitted preprocessor (skops) plus the estimator.

XGBoost estimators are stored in XGBoost's own UBJ format; other scikit-learn estimators
with skops. Nothing here pickles code, and the file imports no project module, so the
model loads wherever its pinned requirements are installed.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class PipelineModel(PythonModel):
    """Preprocess, then predict labels/values or (``predict_method=predict_proba``) probabilities."""

    def load_context(self, context):
        import skops.io as sio

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.preprocessor = sio.load(
            context.artifacts["preprocessor"], trusted=meta["preprocessor_trusted_types"]
        )
        if meta["estimator_format"] == "xgboost-ubj":
            import xgboost

            self.estimator = getattr(xgboost, meta["estimator_class"])()
            self.estimator.load_model(context.artifacts["estimator"])
        else:
            self.estimator = sio.load(
                context.artifacts["estimator"], trusted=meta["estimator_trusted_types"]
            )
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
