"""Evaluation beyond the core metrics: lift and calibration (binary), per-class table, SHAP.

Plain functions on numpy/pandas/sklearn/matplotlib; figures are returned, not saved.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_fscore_support

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.ml.metrics import Predictions, positive_scores, task_metrics

CALIBRATION_BINS = 10
SHAP_TOP_FEATURES = 20


def lift_table(truth: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Cumulative lift per share of rows taken by descending score: precision of the top share
    over the base rate (1.0 is a random ranking)."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(truth[order])
    taken = np.arange(1, len(truth) + 1)
    base = truth.mean() if len(truth) else 0.0
    lift = (hits / taken) / base if base > 0 else np.ones(len(truth))
    return pd.DataFrame({"share": taken / len(truth), "lift": lift, "gain": hits / max(hits[-1], 1)})


def plot_lift_curve(y_true: np.ndarray, preds: Predictions, positive_class: str | None) -> Figure:
    """Cumulative lift of the positive class against the share of rows targeted."""
    truth, score, pos = positive_scores(y_true, preds, positive_class)
    table = lift_table(truth, score)
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.plot(table["share"], table["lift"], label=f"model ({pos})")
    ax.axhline(1.0, color="grey", linestyle="--", label="random")
    ax.set(xlabel="Share of rows (by descending score)", ylabel="Lift", title="Lift curve (test)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def brier_score(y_true: np.ndarray, preds: Predictions, positive_class: str | None) -> float:
    """Mean squared error of the positive class's probability (the calibration's Brier score)."""
    return task_metrics("binary", y_true, preds, positive_class, ("brier_score",))["brier_score"]


def plot_calibration_curve(y_true: np.ndarray, preds: Predictions, positive_class: str | None) -> Figure:
    """Observed share of positives against mean predicted probability, in quantile bins."""
    truth, score, pos = positive_scores(y_true, preds, positive_class)
    observed, predicted = calibration_curve(truth, score, n_bins=CALIBRATION_BINS, strategy="quantile")
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.plot(
        predicted,
        observed,
        marker="o",
        label=f"model (Brier {brier_score(y_true, preds, positive_class):.4f})",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(
        xlabel=f"Mean predicted probability of {pos}",
        ylabel="Observed share of positives",
        title="Calibration curve (test)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def per_class_metrics(y_true: np.ndarray, preds: Predictions) -> pd.DataFrame:
    """Precision, recall, f1 and support of every class (indexed by class, as text)."""
    assert preds.classes is not None
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, preds.y_pred, labels=preds.classes, zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
        index=pd.Index([str(c) for c in preds.classes], name="class"),
    )


def example_counts(n_train: int, n_test: int) -> dict[str, float]:
    """The example count of each split, as metrics."""
    return {"train_example_count": float(n_train), "test_example_count": float(n_test)}


def require_shap() -> None:
    """Raise the project's error, naming the package, when ``shap`` is not installed."""
    if importlib.util.find_spec("shap") is None:
        raise ExperimentInputError(
            "`shap: true` needs the optional package `shap`, which is not installed: "
            "`pip install shap` in this environment, or set `shap: false`."
        )


def shap_sample(X: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most ``size`` rows of ``X``, drawn without replacement with ``seed``."""
    if len(X) <= size:
        return X
    return X.sample(n=size, random_state=seed)


def shap_importance(pipeline: Any, X: pd.DataFrame, task: str, seed: int) -> pd.Series:
    """Mean |SHAP value| per raw input column (model-agnostic permutation explainer), descending.

    The explainer sees the whole pipeline, so attributions are to the columns a user knows.
    """
    require_shap()
    import shap

    if task == "regression":

        def predict_fn(rows: Any) -> Any:
            return pipeline.predict(pd.DataFrame(rows, columns=X.columns))
    else:

        def predict_fn(rows: Any) -> Any:
            return pipeline.predict_proba(pd.DataFrame(rows, columns=X.columns))

    masker = shap.maskers.Independent(X, max_samples=len(X))
    explainer = shap.Explainer(predict_fn, masker, seed=seed)
    values = np.abs(np.asarray(explainer(X).values))
    per_column = values.mean(axis=tuple(i for i in range(values.ndim) if i != 1))
    return pd.Series(per_column, index=X.columns, name="mean_abs_shap").sort_values(ascending=False)


def plot_shap_summary(importance: pd.Series) -> Figure:
    """Bars of the mean |SHAP value| of the top columns."""
    top = importance.head(SHAP_TOP_FEATURES)[::-1]
    fig = Figure(figsize=(7, max(3.0, 0.3 * len(top) + 1)))
    ax = fig.add_subplot()
    ax.barh([str(i) for i in top.index], top.to_numpy())
    ax.set(xlabel="mean |SHAP value|", title=f"SHAP summary (top {len(top)}, test sample)")
    fig.tight_layout()
    return fig
