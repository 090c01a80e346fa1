"""prepare_experiment: clean, infer, check and split before anything is trained or logged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.ml import prepare
from experiments_dagster.ml.cv import cross_validate
from experiments_dagster.ml.prepare import prepare_experiment
from experiments_dagster.ml.training import split_dataset
from experiments_dagster.spec import ExperimentSpec, Seeds

PATH = Path("data/churn/v7.csv")


def _frame() -> pd.DataFrame:
    n = 22
    target = np.array(["stay", "leave"] * (n // 2), dtype=object)
    target[[4, 9]] = np.nan
    return pd.DataFrame({"x": np.arange(n, dtype=float), "plan": ["a", "b"] * (n // 2), "churn": target})


def test_prepare_drops_missing_targets_infers_task_and_splits() -> None:
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, test_size=0.25, seed=8)

    prepared = prepare_experiment(_frame(), spec, PATH)

    assert prepared.rows_dropped == 2
    assert len(prepared.frame) == 20
    assert prepared.frame["churn"].notna().all()
    assert 4.0 not in prepared.frame["x"].tolist() and 9.0 not in prepared.frame["x"].tolist()
    assert prepared.task == "binary"
    assert (len(prepared.split.X_train), len(prepared.split.X_test)) == (15, 5)
    expected = split_dataset(prepared.frame, "churn", "binary", 0.25, seed=8)
    assert prepared.split.X_test["x"].tolist() == expected.X_test["x"].tolist()


def test_prepare_uses_the_split_seed() -> None:
    seeds = Seeds(split=1, cv=2, model=3, numpy=4)
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, seed=99, seeds=seeds)
    prepared = prepare_experiment(_frame(), spec, PATH)
    expected = split_dataset(prepared.frame, "churn", "binary", 0.2, seed=1)
    assert prepared.split.X_test["x"].tolist() == expected.X_test["x"].tolist()


def test_prepare_task_from_spec_beats_inference() -> None:
    frame = pd.DataFrame({"x": np.arange(30.0), "y": [1.0, 2.0, 3.0] * 10})
    inferred = prepare_experiment(frame, ExperimentSpec(dataset="d", target="y"), PATH)
    assert inferred.task == "multiclass"
    forced = prepare_experiment(frame, ExperimentSpec(dataset="d", target="y", task="regression"), PATH)
    assert forced.task == "regression"
    assert len(forced.split.y_test) == 6


def test_prepare_rejects_bad_hyperparameters_before_splitting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_split(*args, **kwargs):
        raise AssertionError("split_dataset must not run when the spec is invalid")

    monkeypatch.setattr(prepare, "split_dataset", no_split)
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, hyperparameters={"max_deep": 3})
    with pytest.raises(ExperimentInputError, match=r"\['max_deep'\] are not accepted by XGBClassifier"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_unknown_model() -> None:
    spec = ExperimentSpec(
        dataset="churn", target="churn", cv_folds=3, model="sklearn.tree.DecisionTreeClassifer"
    )
    with pytest.raises(ExperimentInputError, match="cannot be imported"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_missing_target_column() -> None:
    spec = ExperimentSpec(dataset="churn", target="churned", cv_folds=3)
    with pytest.raises(ExperimentInputError, match=re.escape(f"'churned' is not in {PATH}")):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_too_small_class_with_path() -> None:
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=10)
    with pytest.raises(ExperimentInputError, match=re.escape(str(PATH)) + ".*lower `cv_folds`"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_test_split_smaller_than_class_count() -> None:
    """Ten classes of three rows pass check_target (cv_folds=2), but a 20% test split has 6 rows.

    prepare_experiment promises every user-fixable problem as an ExperimentInputError.
    """
    frame = pd.DataFrame({"x": np.arange(30.0), "y": [f"c{i}" for i in range(10)] * 3})
    spec = ExperimentSpec(dataset="d", target="y", cv_folds=2)
    with pytest.raises(ExperimentInputError, match=re.escape(str(PATH))):
        prepare_experiment(frame, spec, PATH)


def test_prepare_rejects_train_split_smaller_than_cv_folds() -> None:
    """10 regression rows pass the `2 * cv_folds` check, but test_size=0.6 leaves 4 training rows
    for 5 folds: cross-validation then fails after prepare_experiment said the data was fine."""
    frame = pd.DataFrame({"x": np.arange(10.0), "y": np.linspace(0.0, 1.0, 10)})
    spec = ExperimentSpec(dataset="d", target="y", task="regression", cv_folds=5, test_size=0.6)
    try:
        prepared = prepare_experiment(frame, spec, PATH)
    except ExperimentInputError as exc:
        assert str(PATH) in str(exc)
        return
    split = prepared.split
    folds = cross_validate(
        split.X_train, split.y_train, "regression", "xgboost", {"n_estimators": 2}, spec.cv_folds, 0, 0
    )
    assert len(folds) == spec.cv_folds
