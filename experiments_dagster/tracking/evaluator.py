"""Class-probability metrics in ``mlflow.models.evaluate`` for the models this project logs.

MLflow's built-in classifier evaluator finds ``predict_proba`` only on models whose pyfunc
loader is ``mlflow.sklearn``, ``mlflow.xgboost`` or ``mlflow.catboost`` (its
``_extract_raw_model``); for a ``python_model`` such as ours (pyfunc_model.py) it computes label
metrics only, and roc_auc, log_loss and the PR AUC are missing (mlflow/mlflow#5337, open). The
sklearn flavor is no way out: MLflow 3.17 loads it only with MLFLOW_ALLOW_PICKLE_DESERIALIZATION
set, and its pyfunc ignores ``params={"predict_method": ...}``.

So this module is an evaluator plugin, MLflow's public extension point (the
``mlflow.model_evaluator`` entry point, ``ModelEvaluator``): installed with this package, it
runs beside the built-in evaluators whenever ``mlflow.models.evaluate(..., model_type=
"classifier")`` is called without ``evaluators=``, and for the models this project logged only
(their model-from-code file is ``pyfunc_model.py`` and takes ``predict_method``). It asks the loaded model
for probabilities through the same documented parameter every client uses and computes the
metrics with scikit-learn, under the names MLflow's built-in evaluator uses (``roc_auc``,
``log_loss``, ``precision_recall_auc``) and the ones this project logs (``pr_auc`` = average
precision, ``roc_auc_ovr`` = macro one-vs-rest). Nothing here imports the rest of the project.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator
from sklearn import metrics as skm

EVALUATOR_NAME = "experiments_dagster"
OUR_MODEL_CODE = "pyfunc_model.py"  # the model-from-code file of every model this project logs


def is_our_model(model: Any) -> bool:
    """A pyfunc model logged by this project: its code file and its ``predict_method`` param."""
    metadata = getattr(model, "metadata", None)
    if metadata is None:
        return False
    flavor = metadata.flavors.get("python_function", {})
    params = metadata.signature.params if metadata.signature is not None else None
    names = {p.name for p in params.params} if params is not None else set()
    # A model from code records where its code file was saved from (model_code_path); the file
    # itself travels in the model folder under the same name.
    code = str(flavor.get("model_code_path") or "").replace("\\", "/").rsplit("/", 1)[-1]
    return code == OUR_MODEL_CODE and "predict_method" in names


def probability_metrics(y_true: np.ndarray, proba: pd.DataFrame, config: dict[str, Any]) -> dict[str, float]:
    """The class-probability metrics of one evaluation; classes are compared as text."""
    classes = np.asarray(proba.columns, dtype=str)
    y = np.asarray(y_true).astype(str)
    p = proba.to_numpy()  # as the model gave them (XGBoost: float32), as the pipeline scored them
    metrics = {"log_loss": float(skm.log_loss(y, p, labels=classes))}
    if len(classes) == 2:
        positive = str(config.get("pos_label", sorted(classes)[-1]))
        p_pos = p[:, list(classes).index(positive)]
        y_bin = (y == positive).astype(int)
        precision, recall, _ = skm.precision_recall_curve(y_bin, p_pos)
        metrics |= {
            "roc_auc": float(skm.roc_auc_score(y_bin, p_pos)),
            "pr_auc": float(skm.average_precision_score(y_bin, p_pos)),
            "precision_recall_auc": float(skm.auc(recall, precision)),
        }
        return metrics
    average = config.get("average", "weighted")
    metrics["roc_auc"] = float(skm.roc_auc_score(y, p, multi_class="ovr", labels=classes, average=average))
    metrics["roc_auc_ovr"] = float(skm.roc_auc_score(y, p, multi_class="ovr", labels=classes))
    return metrics


class ProbabilityEvaluator(ModelEvaluator):
    """roc_auc, log_loss and PR AUC for this project's classifiers in ``mlflow.models.evaluate``."""

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "classifier"

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None, **kwargs):
        if model is None or not is_our_model(model) or dataset.labels_data is None:
            return None  # another kind of model: MLflow's own evaluators have it
        proba = model.predict(dataset.features_data, params={"predict_method": "predict_proba"})
        metrics = probability_metrics(dataset.labels_data, proba, evaluator_config or {})
        if run_id is not None:
            client = MlflowClient()
            timestamp = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, timestamp, 0) for k, v in metrics.items()])
        return EvaluationResult(metrics=metrics, artifacts={}, run_id=run_id)
