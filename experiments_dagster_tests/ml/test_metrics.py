"""Metrics per task, threshold sweeps, confusion counts, business value, fold summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.ml.metrics import (
    Predictions,
    business_value,
    confusion_counts,
    positive_label,
    predict,
    summarize_folds,
    task_metrics,
    threshold_metrics,
    threshold_name,
)

# Binary fixture with string labels; p_no is the probability of "no" (column 0).
Y_TRUE = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
Y_PRED = np.array(["no", "yes", "no", "no", "yes", "yes", "yes", "yes"])
P_NO = np.array([0.9, 0.2, 0.6, 0.8, 0.1, 0.4, 0.3, 0.35])
BINARY = Predictions(Y_PRED, np.c_[P_NO, 1 - P_NO], np.array(["no", "yes"]))


def test_binary_metrics_with_positive_class_given_as_string() -> None:
    out = task_metrics("binary", Y_TRUE, BINARY, positive_class="no")

    # Positive "no": TP=2 (0, 3), FP=1 (2), FN=2 (5, 6), TN=3.
    assert out["accuracy"] == pytest.approx(5 / 8)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 4)
    assert out["f1"] == pytest.approx(4 / 7)
    # Scores of true "no": .9 .8 .4 .3; of true "yes": .2 .6 .1 .35 -> 13 of 16 pairs ordered.
    assert out["roc_auc"] == pytest.approx(13 / 16)
    # Ranking P P N P N P N N -> AP = (1 + 1 + 3/4 + 4/6) / 4.
    assert out["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    p_true = np.where(Y_TRUE == "no", P_NO, 1 - P_NO)
    assert out["log_loss"] == pytest.approx(-np.mean(np.log(p_true)))
    assert set(out) == {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss"}
    assert all(type(v) is float for v in out.values())


def test_binary_metrics_default_positive_is_last_class() -> None:
    out = task_metrics("binary", Y_TRUE, BINARY)
    # Positive "yes": TP=3 (1, 4, 7), FP=2 (5, 6), FN=1 (2).
    assert out["precision"] == pytest.approx(3 / 5)
    assert out["recall"] == pytest.approx(3 / 4)
    assert out["roc_auc"] == pytest.approx(13 / 16)


def test_binary_integer_classes_matched_as_text() -> None:
    y_true = np.array([0, 1, 1, 0, 1, 0])
    y_pred = np.array([0, 1, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.9, 0.4, 0.3, 0.7, 0.6])
    preds = Predictions(y_pred, np.c_[1 - p1, p1], np.array([0, 1]))

    out = task_metrics("binary", y_true, preds, positive_class="0")

    assert out["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, pos_label=0))
    assert out["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=0))
    assert out["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label=0))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true == 0, 1 - p1))
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(y_true == 0, 1 - p1))
    assert out["precision"] == pytest.approx(2 / 3)  # TP=2 (0, 3), FP=1 (2)


def test_positive_label_unknown_class_lists_classes() -> None:
    with pytest.raises(ExperimentInputError) as info:
        positive_label(np.array(["benign", "malignant"]), "Malignant")
    message = str(info.value)
    assert "positive_class 'Malignant' is not one of the classes" in message
    assert "benign" in message and "malignant" in message
    assert "fix `positive_class` in experiment.yaml" in message


def test_positive_label_returns_class_object() -> None:
    classes = np.array([0, 1])
    assert positive_label(classes, "1") == 1
    assert positive_label(classes, None) == 1
    found = positive_label(np.array([False, True]), "False")
    assert isinstance(found, np.bool_) and not found


def test_multiclass_metrics_match_sklearn() -> None:
    classes = np.array(["a", "b", "c"])
    y_true = np.array(["a", "b", "c", "a", "b", "c", "a", "c"])
    proba = np.array(
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
    y_pred = classes[proba.argmax(axis=1)]
    out = task_metrics("multiclass", y_true, Predictions(y_pred, proba, classes))

    # Wrong: row 2 (c -> b) and row 6 (a -> c).
    assert out["accuracy"] == pytest.approx(6 / 8)
    for avg in ("macro", "weighted"):
        assert out[f"precision_{avg}"] == pytest.approx(skm.precision_score(y_true, y_pred, average=avg))
        assert out[f"recall_{avg}"] == pytest.approx(skm.recall_score(y_true, y_pred, average=avg))
        assert out[f"f1_{avg}"] == pytest.approx(skm.f1_score(y_true, y_pred, average=avg))
    # Recall per class: a 2/3, b 2/2, c 2/3.
    assert out["recall_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert out["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y_true, proba, multi_class="ovr"))
    rows = np.arange(8), np.searchsorted(classes, y_true)
    assert out["log_loss"] == pytest.approx(-np.mean(np.log(proba[rows])))
    assert set(out) == {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc_ovr",
        "log_loss",
    }


def test_regression_metrics_by_hand() -> None:
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.5, 2.0, 2.0, 5.0])
    out = task_metrics("regression", y_true, Predictions(y_pred, None, None))
    assert out == pytest.approx(
        {"rmse": 0.75, "mae": 0.625, "r2": 1 - 2.25 / 5, "mape": (0.5 + 0 + 1 / 3 + 1 / 4) / 4}
    )


def test_predict_regression_and_classification() -> None:
    class Fake:
        classes_ = np.array(["n", "y"])

        def predict(self, X):
            return [1, 2] if "reg" in X else ["y", "n"]

        def predict_proba(self, X):
            return [[0.2, 0.8], [0.6, 0.4]]

    reg = predict(Fake(), {"reg": 1}, "regression")
    assert reg.y_pred.dtype == float and reg.y_pred.tolist() == [1.0, 2.0]
    assert reg.proba is None and reg.classes is None
    clf = predict(Fake(), {}, "binary")
    assert clf.y_pred.tolist() == ["y", "n"]
    assert clf.proba.tolist() == [[0.2, 0.8], [0.6, 0.4]]
    assert clf.classes.tolist() == ["n", "y"]


# --- thresholds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "threshold", "name"),
    [
        ("f1", 0.3, "f1_threshold_0.3"),
        ("recall", 0.5, "recall_threshold_0.5"),
        ("precision", 0.25, "precision_threshold_0.25"),
    ],
)
def test_threshold_name(metric: str, threshold: float, name: str) -> None:
    assert threshold_name(metric, threshold) == name


def test_threshold_metrics_values() -> None:
    y_true = np.array(["neg", "pos", "neg", "pos"])
    p_pos = np.array([0.2, 0.3, 0.6, 0.8])  # 0.3 sits exactly on a threshold: counts as positive
    preds = Predictions(
        np.array(["neg", "neg", "pos", "pos"]), np.c_[1 - p_pos, p_pos], np.array(["neg", "pos"])
    )

    out = threshold_metrics(y_true, preds, (0.3, 0.5, 0.7), positive_class="pos")

    expected = {
        # t=0.3: predicted [0,1,1,1] -> TP 2, FP 1, FN 0
        "f1_threshold_0.3": 0.8,
        "precision_threshold_0.3": 2 / 3,
        "recall_threshold_0.3": 1.0,
        # t=0.5: predicted [0,0,1,1] -> TP 1, FP 1, FN 1
        "f1_threshold_0.5": 0.5,
        "precision_threshold_0.5": 0.5,
        "recall_threshold_0.5": 0.5,
        # t=0.7: predicted [0,0,0,1] -> TP 1, FP 0, FN 1
        "f1_threshold_0.7": 2 / 3,
        "precision_threshold_0.7": 1.0,
        "recall_threshold_0.7": 0.5,
    }
    assert out == pytest.approx(expected)
    assert set(out) == set(expected)


def test_threshold_metrics_with_no_predicted_positive_is_zero() -> None:
    y_true = np.array([0, 1, 1])
    p1 = np.array([0.1, 0.2, 0.3])
    preds = Predictions(np.array([0, 0, 0]), np.c_[1 - p1, p1], np.array([0, 1]))
    out = threshold_metrics(y_true, preds, (0.9,), positive_class=None)
    assert out == {"f1_threshold_0.9": 0.0, "precision_threshold_0.9": 0.0, "recall_threshold_0.9": 0.0}


# --- confusion counts and business value -------------------------------------------------


def test_confusion_counts() -> None:
    counts = confusion_counts(Y_TRUE, Y_PRED, "no")
    assert counts == {"tp": 2, "fp": 1, "tn": 3, "fn": 2}
    counts_yes = confusion_counts(Y_TRUE, Y_PRED, "yes")
    assert counts_yes == {"tp": 3, "fp": 2, "tn": 2, "fn": 1}
    assert sum(counts.values()) == len(Y_TRUE)


def test_business_value() -> None:
    counts = {"tp": 3, "fp": 2, "tn": 10, "fn": 1}
    values = {"tp": 500.0, "fp": -50.0, "tn": 0.0, "fn": -2000.0}
    assert business_value(counts, values) == 3 * 500 - 2 * 50 - 2000 == -600
    assert business_value(counts, {"tp": 1, "fp": 1, "tn": 1, "fn": 1}) == 16.0


# --- fold summaries ----------------------------------------------------------------------


def test_summarize_folds_population_std() -> None:
    folds = [{"acc": 1.0, "f1": 2.0}, {"acc": 2.0, "f1": 6.0}, {"acc": 4.0, "f1": 4.0}]
    out = summarize_folds(folds)

    acc_mean = 7 / 3
    acc_std = math.sqrt(((1 - acc_mean) ** 2 + (2 - acc_mean) ** 2 + (4 - acc_mean) ** 2) / 3)
    assert out == pytest.approx(
        {"cv_acc_mean": acc_mean, "cv_acc_std": acc_std, "cv_f1_mean": 4.0, "cv_f1_std": math.sqrt(8 / 3)}
    )
    assert out["cv_acc_std"] != pytest.approx(float(np.std([1.0, 2.0, 4.0], ddof=1)))


def test_summarize_single_fold_has_zero_std() -> None:
    assert summarize_folds([{"rmse": 1.5}]) == {"cv_rmse_mean": 1.5, "cv_rmse_std": 0.0}
