"""Evaluation figures: each is a matplotlib Figure with the expected content."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import auc, confusion_matrix, precision_recall_curve, roc_auc_score

from experiments_dagster.ml.metrics import Predictions
from experiments_dagster.ml.plots import (
    TOP_FEATURES,
    plot_confusion_matrix,
    plot_feature_importance,
    plot_pr_curve,
    plot_residual_distribution,
    plot_residuals,
    plot_roc_curve,
)

CLASSES3 = np.array(["a", "b", "c"])
Y3 = np.array(["a", "b", "c", "a", "b", "c", "a", "c"])
PROBA3 = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.4, 0.3],
        [0.2, 0.5, 0.3],
        [0.5, 0.3, 0.2],
        [0.1, 0.8, 0.1],
        [0.1, 0.1, 0.8],
        [0.2, 0.3, 0.5],
        [0.3, 0.3, 0.4],
    ]
)
MULTI = Predictions(CLASSES3[PROBA3.argmax(axis=1)], PROBA3, CLASSES3)

Y2 = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
P_YES = np.array([0.1, 0.8, 0.4, 0.2, 0.9, 0.6, 0.7, 0.65])
BINARY = Predictions(np.where(P_YES >= 0.5, "yes", "no"), np.c_[1 - P_YES, P_YES], np.array(["no", "yes"]))


def _only_axes(fig: Figure):
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    return fig.axes[0]


def test_confusion_matrix_counts_and_labels() -> None:
    fig = plot_confusion_matrix(Y3, MULTI)
    ax = _only_axes(fig)

    expected = confusion_matrix(Y3, MULTI.y_pred, labels=CLASSES3)
    # Wrong: row 2 (c -> b) and row 6 (a -> c).
    assert expected.tolist() == [[2, 0, 1], [0, 2, 0], [0, 1, 2]]
    cells = np.array([int(t.get_text()) for t in ax.texts]).reshape(3, 3)
    np.testing.assert_array_equal(cells, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "Confusion matrix (test)"
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"


def test_feature_importance_keeps_top_features_largest_on_top() -> None:
    importance = pd.Series(
        np.linspace(1.0, 0.04, 25), index=[f"num__f{i}" for i in range(25)], name="importance"
    )
    fig = plot_feature_importance(importance, "native")
    ax = _only_axes(fig)

    bars = ax.patches
    assert len(bars) == TOP_FEATURES == 20
    widths = [b.get_width() for b in bars]
    assert widths == pytest.approx(importance.to_numpy()[:20][::-1])
    assert max(bars, key=lambda b: b.get_y()).get_width() == pytest.approx(1.0)  # largest at the top
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"num__f{i}" for i in range(19, -1, -1)]
    assert ax.get_xlabel() == "importance (native)"
    assert ax.get_title() == "Feature importance (top 20)"


def test_feature_importance_with_few_features() -> None:
    importance = pd.Series([0.7, 0.3], index=["num__x", "cat__c_a"])
    ax = _only_axes(plot_feature_importance(importance, "permutation"))
    assert len(ax.patches) == 2
    assert ax.get_title() == "Feature importance (top 2)"
    assert ax.get_xlabel() == "importance (permutation)"


def test_roc_binary_one_curve_plus_diagonal() -> None:
    ax = _only_axes(plot_roc_curve(Y2, BINARY, positive_class="yes"))

    lines = ax.get_lines()
    assert len(lines) == 2
    auc_yes = roc_auc_score(Y2 == "yes", P_YES)
    assert lines[0].get_label() == f"yes (AUC {auc_yes:.3f})"
    assert lines[1].get_xydata().tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert lines[1].get_linestyle() == "--"
    assert ax.get_xlabel() == "False positive rate"
    assert ax.get_ylabel() == "True positive rate"
    assert ax.get_title() == "ROC curve (test)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [lines[0].get_label()]


def test_roc_binary_uses_configured_positive_class() -> None:
    ax = _only_axes(plot_roc_curve(Y2, BINARY, positive_class="no"))
    auc_no = roc_auc_score(Y2 == "no", 1 - P_YES)
    assert ax.get_lines()[0].get_label() == f"no (AUC {auc_no:.3f})"


def test_roc_multiclass_one_curve_per_class_plus_diagonal() -> None:
    ax = _only_axes(plot_roc_curve(Y3, MULTI, positive_class=None))

    lines = ax.get_lines()
    assert len(lines) == len(CLASSES3) + 1
    for line, (i, c) in zip(lines[:3], enumerate(CLASSES3), strict=True):
        assert line.get_label() == f"{c} (AUC {roc_auc_score(Y3 == c, PROBA3[:, i]):.3f})"
        xy = line.get_xydata()
        assert xy[0].tolist() == [0.0, 0.0] and xy[-1].tolist() == [1.0, 1.0]


def test_pr_curve_multiclass_and_binary() -> None:
    ax = _only_axes(plot_pr_curve(Y3, MULTI, positive_class=None))
    assert len(ax.get_lines()) == 3
    assert [line.get_label().split(" ")[0] for line in ax.get_lines()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "Recall" and ax.get_ylabel() == "Precision"
    assert ax.get_title() == "Precision-recall curve (test)"

    ax2 = _only_axes(plot_pr_curve(Y2, BINARY, positive_class="yes"))
    (line,) = ax2.get_lines()
    assert line.get_label().startswith("yes (AUC ")
    recall, precision = line.get_xdata(), line.get_ydata()
    assert recall[-1] == 0.0 and precision[-1] == 1.0
    assert recall.max() == 1.0
    exp_precision, exp_recall, _ = precision_recall_curve(Y2 == "yes", P_YES)
    np.testing.assert_allclose(precision, exp_precision)
    np.testing.assert_allclose(recall, exp_recall)
    assert line.get_label() == f"yes (AUC {auc(exp_recall, exp_precision):.3f})"


def test_residuals_scatter_points() -> None:
    y_true = np.array([1.0, 2.0, 4.0])
    preds = Predictions(np.array([1.5, 2.0, 3.0]), None, None)
    ax = _only_axes(plot_residuals(y_true, preds))

    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), [[1.5, -0.5], [2.0, 0.0], [3.0, 1.0]])
    assert ax.get_xlabel() == "Predicted"
    assert ax.get_ylabel() == "Residual (true - predicted)"
    assert ax.get_title() == "Residuals (test)"
    (zero,) = ax.get_lines()
    assert list(zero.get_ydata()) == [0.0, 0.0]


def test_residual_distribution_histogram() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=100)
    preds = Predictions(np.zeros(100), None, None)
    ax = _only_axes(plot_residual_distribution(y_true, preds))

    assert len(ax.patches) == 30
    assert sum(p.get_height() for p in ax.patches) == 100
    assert ax.patches[0].get_x() == pytest.approx(y_true.min())
    assert ax.get_xlabel() == "Residual" and ax.get_ylabel() == "Count"
    assert ax.get_title() == "Residual distribution (test)"
    (zero,) = ax.get_lines()
    assert list(zero.get_xdata()) == [0.0, 0.0]
