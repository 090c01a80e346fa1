"""A user's own asset: it trains with its own code, logs through dagster-mlflow's
``mlflow_tracking`` resource, and gets experiments_dagster's completeness check attached.

Run it with ``dagster dev -f examples/dagster_mlflow_user/definitions.py`` (MLflow store from
``MLFLOW_TRACKING_URI``). Materialize ``user_model``; its check
``user_model_mlflow_logged_completely`` lists anything of the chosen standard the run lacks. Set
``log_confusion_matrix: false`` in the launchpad to see it fail, naming ``confusion_matrix.png``.
"""

import dagster as dg
import numpy as np
from dagster_mlflow import mlflow_tracking
from matplotlib.figure import Figure
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from experiments_dagster import mlflow_completeness_checks

# The part of the logging standard this user commits to (names as in tracking/standard.py).
USER_STANDARD = [
    "model_type",  # the param, and every hyperparameter of that estimator class
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "model",
    "feature_importance.png",
    "confusion_matrix.png",
]


class TrainConfig(dg.Config):
    """What the user's training logs."""

    log_confusion_matrix: bool = True


@dg.asset(required_resource_keys={"mlflow"})
def user_model(context: dg.AssetExecutionContext, config: TrainConfig) -> dg.MaterializeResult:
    """A logistic regression trained and logged by the user's own code."""
    mlflow = context.resources.mlflow  # dagster-mlflow: the mlflow module, its run already active
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    proba = model.predict_proba(X_test)[:, 1]
    y_pred = model.predict(X_test)
    mlflow.log_params({"model_type": "sklearn.linear_model.LogisticRegression", **model.get_params()})
    mlflow.log_metrics(
        {
            "accuracy": accuracy_score(y_test, y_pred),
            "precision": precision_score(y_test, y_pred),
            "recall": recall_score(y_test, y_pred),
            "f1": f1_score(y_test, y_pred),
            "roc_auc": roc_auc_score(y_test, proba),
            "log_loss": log_loss(y_test, model.predict_proba(X_test)),
        }
    )
    mlflow.sklearn.log_model(model, name="model", input_example=X_test.head(3))
    importance = Figure(figsize=(6, 8))
    importance.subplots().barh(list(X.columns), np.abs(model.coef_[0]))
    mlflow.log_figure(importance, "feature_importance.png")
    if config.log_confusion_matrix:
        matrix = Figure(figsize=(5, 5))
        ConfusionMatrixDisplay.from_predictions(y_test, y_pred, ax=matrix.subplots())
        mlflow.log_figure(matrix, "confusion_matrix.png")
    run_id = mlflow.active_run().info.run_id
    mlflow.end_run()  # the next materialization opens its own run
    return dg.MaterializeResult(metadata={"mlflow_run_id_logged": run_id})


user_model_checks = mlflow_completeness_checks(user_model, task="binary", standard=USER_STANDARD)

defs = dg.Definitions(
    assets=[user_model],
    asset_checks=user_model_checks,
    resources={
        "mlflow": mlflow_tracking.configured(
            {"experiment_name": "user_model", "mlflow_tracking_uri": {"env": "MLFLOW_TRACKING_URI"}}
        )
    },
)
