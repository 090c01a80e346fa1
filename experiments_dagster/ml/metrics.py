"""Predictions and metrics per task, threshold sweeps and the business metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from experiments_dagster.core.errors import ExperimentInputError


@dataclass(frozen=True)
class Predictions:
    """What a fitted pipeline says about a frame: labels/values and class probabilities."""

    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: np.ndarray | None


def predict(pipeline: Any, X: pd.DataFrame, task: str) -> Predictions:
    """Run the pipeline; classification also returns ``predict_proba`` and ``classes_``."""
    if task == "regression":
        return Predictions(np.asarray(pipeline.predict(X), dtype=float), None, None)
    return Predictions(
        np.asarray(pipeline.predict(X)), np.asarray(pipeline.predict_proba(X)), pipeline.classes_
    )


def positive_label(classes: np.ndarray, positive_class: str | None) -> Any:
    """The positive class: the configured one (matched as text) or the last sorted class."""
    if positive_class is None:
        return classes[-1]
    for c in classes:
        if str(c) == str(positive_class):
            return c
    raise ExperimentInputError(
        f"positive_class {positive_class!r} is not one of the classes {list(classes)}; "
        "fix `positive_class` in experiment.yaml or the run config."
    )


@dataclass(frozen=True)
class Scored:
    """What a metric function sees: truth, predictions and, for binary, the positive class."""

    y_true: np.ndarray
    preds: Predictions
    y_bin: np.ndarray | None = None
    p_pos: np.ndarray | None = None
    pos: Any = None


def _avg(fn: Callable[..., float], avg: str) -> Callable[[Scored], float]:
    return lambda s: fn(s.y_true, s.preds.y_pred, average=avg, zero_division=0)


def _pos(fn: Callable[..., float]) -> Callable[[Scored], float]:
    return lambda s: fn(s.y_true, s.preds.y_pred, pos_label=s.pos, zero_division=0)


# Every metric the project can compute, by the name it is logged under. The logging standard
# (tracking/standard.py) picks which ones an experiment of each task must log.
METRIC_FUNCTIONS: dict[str, dict[str, Callable[[Scored], float]]] = {
    "binary": {
        "accuracy": lambda s: skm.accuracy_score(s.y_true, s.preds.y_pred),
        "balanced_accuracy": lambda s: skm.balanced_accuracy_score(s.y_true, s.preds.y_pred),
        "precision": _pos(skm.precision_score),
        "recall": _pos(skm.recall_score),
        "f1": _pos(skm.f1_score),
        "roc_auc": lambda s: skm.roc_auc_score(s.y_bin, s.p_pos),
        "pr_auc": lambda s: skm.average_precision_score(s.y_bin, s.p_pos),
        "log_loss": lambda s: skm.log_loss(s.y_true, s.preds.proba, labels=s.preds.classes),
        "brier_score": lambda s: skm.brier_score_loss(s.y_bin, s.p_pos),
        "matthews_corrcoef": lambda s: skm.matthews_corrcoef(s.y_true, s.preds.y_pred),
    },
    "multiclass": {
        "accuracy": lambda s: skm.accuracy_score(s.y_true, s.preds.y_pred),
        "balanced_accuracy": lambda s: skm.balanced_accuracy_score(s.y_true, s.preds.y_pred),
        **{
            f"{name}_{avg}": _avg(fn, avg)
            for avg in ("macro", "weighted")
            for name, fn in (
                ("precision", skm.precision_score),
                ("recall", skm.recall_score),
                ("f1", skm.f1_score),
            )
        },
        "roc_auc_ovr": lambda s: skm.roc_auc_score(
            s.y_true, s.preds.proba, multi_class="ovr", labels=s.preds.classes
        ),
        "log_loss": lambda s: skm.log_loss(s.y_true, s.preds.proba, labels=s.preds.classes),
    },
    "regression": {
        "rmse": lambda s: np.sqrt(skm.mean_squared_error(s.y_true, s.preds.y_pred)),
        "mae": lambda s: skm.mean_absolute_error(s.y_true, s.preds.y_pred),
        "r2": lambda s: skm.r2_score(s.y_true, s.preds.y_pred),
        "mape": lambda s: skm.mean_absolute_percentage_error(s.y_true, s.preds.y_pred),
        "median_ae": lambda s: skm.median_absolute_error(s.y_true, s.preds.y_pred),
        "explained_variance": lambda s: skm.explained_variance_score(s.y_true, s.preds.y_pred),
    },
}

# The test metrics of each task: what task_metrics computes when not told which names, and what
# the logging standard (tracking/standard.py) requires. Defined once, here.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss"),
    "multiclass": (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc_ovr",
        "log_loss",
    ),
    "regression": ("rmse", "mae", "r2", "mape"),
}


def task_metrics(
    task: str,
    y_true: np.ndarray,
    preds: Predictions,
    positive_class: str | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """The named metrics (default: DEFAULT_METRICS of the task), as plain floats."""
    names = names or DEFAULT_METRICS[task]
    unknown = [n for n in names if n not in METRIC_FUNCTIONS[task]]
    if unknown:
        raise KeyError(f"No metric function for {unknown} ({task}); add it to METRIC_FUNCTIONS.")
    y_true = np.asarray(y_true)
    scored = Scored(y_true, preds)
    if task == "binary":
        y_bin, p_pos, pos = positive_scores(y_true, preds, positive_class)
        scored = Scored(y_true, preds, y_bin, p_pos, pos)
    return {name: float(METRIC_FUNCTIONS[task][name](scored)) for name in names}


def positive_scores(y_true: np.ndarray, preds: Predictions, positive_class: str | None):
    """(0/1 truth for the positive class, its predicted probability, the positive label)."""
    assert preds.proba is not None and preds.classes is not None
    pos = positive_label(preds.classes, positive_class)
    idx = int(np.flatnonzero(preds.classes == pos)[0])
    return (np.asarray(y_true) == pos).astype(int), preds.proba[:, idx], pos


def threshold_name(metric: str, threshold: float) -> str:
    """``f1_threshold_0.3``: the metric name the standard uses for a threshold."""
    return f"{metric}_threshold_{threshold:g}"


def threshold_metrics(
    y_true: np.ndarray, preds: Predictions, thresholds: tuple[float, ...], positive_class: str | None
) -> dict[str, float]:
    """f1, precision and recall of the positive class when predicting ``p >= threshold``."""
    y_bin, p_pos, _ = positive_scores(y_true, preds, positive_class)
    out: dict[str, float] = {}
    for t in thresholds:
        y_hat = (p_pos >= t).astype(int)
        out[threshold_name("f1", t)] = float(skm.f1_score(y_bin, y_hat, zero_division=0))
        out[threshold_name("precision", t)] = float(skm.precision_score(y_bin, y_hat, zero_division=0))
        out[threshold_name("recall", t)] = float(skm.recall_score(y_bin, y_hat, zero_division=0))
    return out


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, positive: Any) -> dict[str, int]:
    """TP/FP/TN/FN of the positive class."""
    t = np.asarray(y_true) == positive
    p = np.asarray(y_pred) == positive
    return {
        "tp": int((t & p).sum()),
        "fp": int((~t & p).sum()),
        "tn": int((~t & ~p).sum()),
        "fn": int((t & ~p).sum()),
    }


def business_value(counts: dict[str, int], values: dict[str, float]) -> float:
    """Sum of value per outcome times its count: ``revenue_impact_usd``."""
    return float(sum(counts[k] * float(values[k]) for k in ("tp", "fp", "tn", "fn")))


def summarize_folds(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """``cv_<metric>_mean`` and ``cv_<metric>_std`` over folds (population std, ddof=0)."""
    table = pd.DataFrame(fold_metrics)
    out: dict[str, float] = {}
    for name in table.columns:
        out[f"cv_{name}_mean"] = float(table[name].mean())
        out[f"cv_{name}_std"] = float(table[name].std(ddof=0))
    return out
