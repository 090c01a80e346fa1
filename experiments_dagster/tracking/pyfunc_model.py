"""MLflow "model from code": the fitted preprocessor plus the estimator.

The preprocessor is a skops file. XGBoost estimators are stored in XGBoost's own UBJ format,
other scikit-learn estimators as skops files. Nothing here unpickles anything. The file imports
no project module, so the model loads anywhere its pinned requirements are installed.

The skops files are loaded trusting only ``TRUSTED_TYPES``, which is fixed here in code. Nothing
read from the model's artifacts (meta.json included) can add to that list.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

# Types that skops does not trust by default but our preprocessor and the supported estimators
# hold. This is the whole list: the saving side refuses any other type, and loading passes only
# this list. The names are strings that skops compares against the types in the file. Nothing
# here imports them (some live in scikit-learn's private modules, which is where skops reports
# them).
TRUSTED_TYPES = (
    "numpy.dtype",  # OneHotEncoder's ``dtype`` parameter
    "sklearn.tree._tree.Tree",  # decision trees, random forests, extra trees, gradient boosting
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # HistGradientBoosting*
    "sklearn.neighbors._kd_tree.KDTree",  # KNeighbors* (default algorithm)
    "sklearn.neighbors._ball_tree.BallTree",  # KNeighbors* (algorithm="ball_tree")
    "sklearn.metrics._dist_metrics.EuclideanDistance64",  # KNeighbors* (default metric)
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # MLP* (solver="adam")
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",  # MLP* (solver="sgd")
)
# XGBoost classes the UBJ estimator may be rebuilt as. meta.json names one, and may name no other.
XGBOOST_CLASSES = ("XGBClassifier", "XGBRegressor")


def _skops_load(path: str):
    import skops.io as sio  # imported here so that importing this file stays cheap

    return sio.load(path, trusted=list(TRUSTED_TYPES))


class PipelineModel(PythonModel):
    """Preprocess, then predict labels/values or (``predict_method=predict_proba``) probabilities."""

    def load_context(self, context):
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.preprocessor = _skops_load(context.artifacts["preprocessor"])
        if meta["estimator_format"] == "xgboost-ubj":
            import xgboost

            if meta["estimator_class"] not in XGBOOST_CLASSES:
                raise ValueError(
                    f"estimator_class {meta['estimator_class']!r} is not one of {XGBOOST_CLASSES}"
                )
            self.estimator = getattr(xgboost, meta["estimator_class"])()
            self.estimator.load_model(context.artifacts["estimator"])
        elif meta["estimator_format"] == "skops":
            self.estimator = _skops_load(context.artifacts["estimator"])
        else:
            raise ValueError(f"unknown estimator_format {meta['estimator_format']!r}")
        classes = meta["classes"]
        self.classes = None if classes is None else np.asarray(classes)

    def _aligned(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """The columns the preprocessor was fitted on, in its order. A left-out optional column
        is missing values. Columns the signature leaves untyped (``Any``: integers, and columns
        that had gaps in training) are made numbers or categories again: a 1-row frame with a
        gap gives float64 NaN, a JSON body may give ints as floats."""
        frame = pd.DataFrame(model_input).reindex(columns=self.preprocessor.feature_names_in_)
        for name, _, columns in self.preprocessor.transformers_:
            for column in columns if name in ("num", "cat") else ():
                values = frame[column]
                if name == "num" and values.dtype == object:
                    frame[column] = pd.to_numeric(values, errors="raise")
                elif name == "cat" and values.dtype != object:
                    frame[column] = values.astype(object).where(values.notna(), None)
        return frame

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        method = (params or {}).get("predict_method", "predict")
        features = self.preprocessor.transform(self._aligned(model_input))
        if self.classes is None:
            return np.asarray(self.estimator.predict(features))
        if method == "predict_proba":
            proba = self.estimator.predict_proba(features)
            return pd.DataFrame(proba, columns=[str(c) for c in self.classes])
        return self.classes[np.asarray(self.estimator.predict(features)).astype(int)]


mlflow.models.set_model(PipelineModel())
