"""Evaluation figures. Each returns a matplotlib Figure; saving is the caller's business.

Figures are built with the object API (no pyplot state), so steps may run in threads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, auc, precision_recall_curve, roc_curve

from experiments_dagster.ml.metrics import Predictions, positive_scores

TOP_FEATURES = 20


def plot_confusion_matrix(y_true: np.ndarray, preds: Predictions) -> Figure:
    """Confusion matrix of predicted against true labels."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(y_true, preds.y_pred, labels=preds.classes, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    return fig


def plot_feature_importance(importance: pd.Series, method: str) -> Figure:
    """Horizontal bars of the top features."""
    top = importance.head(TOP_FEATURES)[::-1]
    fig = Figure(figsize=(7, max(3.0, 0.3 * len(top) + 1)))
    ax = fig.add_subplot()
    ax.barh(top.index, top.to_numpy())
    ax.set_xlabel(f"importance ({method})")
    ax.set_title(f"Feature importance (top {len(top)})")
    fig.tight_layout()
    return fig


def _one_vs_rest(y_true: np.ndarray, preds: Predictions, positive_class: str | None):
    """(label, binary truth, score) per curve: the positive class, or every class."""
    assert preds.proba is not None and preds.classes is not None
    classes = preds.classes
    if len(classes) == 2:
        truth, score, pos = positive_scores(y_true, preds, positive_class)
        return [(str(pos), truth, score)]
    return [(str(c), (np.asarray(y_true) == c).astype(int), preds.proba[:, i]) for i, c in enumerate(classes)]


def plot_roc_curve(y_true: np.ndarray, preds: Predictions, positive_class: str | None) -> Figure:
    """ROC curve (one-vs-rest per class for multiclass)."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for label, truth, score in _one_vs_rest(y_true, preds, positive_class):
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_pr_curve(y_true: np.ndarray, preds: Predictions, positive_class: str | None) -> Figure:
    """Precision-recall curve (one-vs-rest per class for multiclass)."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for label, truth, score in _one_vs_rest(y_true, preds, positive_class):
        precision, recall, _ = precision_recall_curve(truth, score)
        ax.plot(recall, precision, label=f"{label} (AUC {auc(recall, precision):.3f})")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve (test)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def plot_residuals(y_true: np.ndarray, preds: Predictions) -> Figure:
    """Residuals (true - predicted) against predicted values."""
    residuals = np.asarray(y_true, dtype=float) - preds.y_pred
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.scatter(preds.y_pred, residuals, s=10, alpha=0.6)
    ax.axhline(0.0, color="grey", linestyle="--")
    ax.set(xlabel="Predicted", ylabel="Residual (true - predicted)", title="Residuals (test)")
    fig.tight_layout()
    return fig


def plot_residual_distribution(y_true: np.ndarray, preds: Predictions) -> Figure:
    """Histogram of residuals."""
    residuals = np.asarray(y_true, dtype=float) - preds.y_pred
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.hist(residuals, bins=30)
    ax.axvline(0.0, color="grey", linestyle="--")
    ax.set(xlabel="Residual", ylabel="Count", title="Residual distribution (test)")
    fig.tight_layout()
    return fig


def plot_optimization_history(outcome, metric: str, direction: str) -> Figure:
    """Score of each completed trial and the best so far."""
    done = [t for t in outcome.trials if t.score is not None]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if done:
        numbers = [t.number for t in done]
        scores = np.array([t.score for t in done])
        best = np.minimum.accumulate(scores) if direction == "minimize" else np.maximum.accumulate(scores)
        ax.scatter(numbers, scores, label="trial", s=18)
        ax.step(numbers, best, where="post", color="tab:red", label="best so far")
        ax.legend(loc="best")
    pruned = sum(t.state == "PRUNED" for t in outcome.trials)
    failed = sum(t.state == "FAIL" for t in outcome.trials)
    ax.set(
        xlabel="trial",
        ylabel=f"CV {metric} ({direction})",
        title=f"Optimization history ({len(done)} complete, {pruned} pruned, {failed} failed)",
    )
    fig.tight_layout()
    return fig
