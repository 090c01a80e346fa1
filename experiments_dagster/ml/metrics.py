"""Predictions and metrics per task, threshold sweeps and the business metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from experiments_dagster.errors import ExperimentInputError


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


def task_metrics(
    task: str, y_true: np.ndarray, preds: Predictions, positive_class: str | None = None
) -> dict[str, float]:
    """The standard's metrics for a task, as plain floats."""
    y_true = np.asarray(y_true)
    if task == "regression":
        y_pred = preds.y_pred
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)),
            "mape": float(skm.mean_absolute_percentage_error(y_true, y_pred)),
        }
    assert preds.proba is not None and preds.classes is not None
    out = {"accuracy": float(skm.accuracy_score(y_true, preds.y_pred))}
    if task == "binary":
        pos = positive_label(preds.classes, positive_class)
        pos_idx = int(np.flatnonzero(preds.classes == pos)[0])
        y_bin = (y_true == pos).astype(int)
        p_pos = preds.proba[:, pos_idx]
        out |= {
            "precision": float(skm.precision_score(y_true, preds.y_pred, pos_label=pos, zero_division=0)),
            "recall": float(skm.recall_score(y_true, preds.y_pred, pos_label=pos, zero_division=0)),
            "f1": float(skm.f1_score(y_true, preds.y_pred, pos_label=pos, zero_division=0)),
            "roc_auc": float(skm.roc_auc_score(y_bin, p_pos)),
            "pr_auc": float(skm.average_precision_score(y_bin, p_pos)),
            "log_loss": float(skm.log_loss(y_true, preds.proba, labels=preds.classes)),
        }
        return out
    for avg in ("macro", "weighted"):
        out[f"precision_{avg}"] = float(
            skm.precision_score(y_true, preds.y_pred, average=avg, zero_division=0)
        )
        out[f"recall_{avg}"] = float(skm.recall_score(y_true, preds.y_pred, average=avg, zero_division=0))
        out[f"f1_{avg}"] = float(skm.f1_score(y_true, preds.y_pred, average=avg, zero_division=0))
    out["roc_auc_ovr"] = float(
        skm.roc_auc_score(y_true, preds.proba, multi_class="ovr", labels=preds.classes)
    )
    out["log_loss"] = float(skm.log_loss(y_true, preds.proba, labels=preds.classes))
    return out


def threshold_name(metric: str, threshold: float) -> str:
    """``f1_threshold_0.3``: the metric name the standard uses for a threshold."""
    return f"{metric}_threshold_{threshold:g}"


def threshold_metrics(
    y_true: np.ndarray, preds: Predictions, thresholds: tuple[float, ...], positive_class: str | None
) -> dict[str, float]:
    """f1, precision and recall of the positive class when predicting ``p >= threshold``."""
    assert preds.proba is not None and preds.classes is not None
    pos = positive_label(preds.classes, positive_class)
    y_bin = (np.asarray(y_true) == pos).astype(int)
    p_pos = preds.proba[:, int(np.flatnonzero(preds.classes == pos)[0])]
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
