"""Building estimators from a spec, and the label-encoding classifier wrapper."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted

from experiments_dagster.core.cpus import usable_cpus
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.settings import CPUS_ENV
from experiments_dagster.ml.estimators import (
    XGBOOST_DEFAULTS,
    EncodedTargetClassifier,
    build_estimator,
    estimator_class,
    model_type,
    threads_per_fit,
)


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process allowed on 8 CPUs, with no cap set."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv(CPUS_ENV, raising=False)


@pytest.mark.parametrize(
    ("task", "cls", "eval_metric"),
    [
        ("binary", xgboost.XGBClassifier, "logloss"),
        ("multiclass", xgboost.XGBClassifier, "mlogloss"),
        ("regression", xgboost.XGBRegressor, None),
    ],
)
def test_xgboost_default_per_task(task: str, cls: type, eval_metric: str | None) -> None:
    est = build_estimator("xgboost", task, {}, random_state=123)

    assert type(est) is cls
    params = est.get_params()
    assert params["random_state"] == 123
    assert params["eval_metric"] == eval_metric
    for name, value in XGBOOST_DEFAULTS.items():
        assert params[name] == value, name


def test_xgboost_hyperparameters_override_defaults() -> None:
    est = build_estimator("xgboost", "binary", {"n_estimators": 7, "max_depth": 2}, random_state=1)
    params = est.get_params()
    assert (params["n_estimators"], params["max_depth"]) == (7, 2)
    assert params["learning_rate"] == XGBOOST_DEFAULTS["learning_rate"]


def test_explicit_random_state_wins_over_seed() -> None:
    est = build_estimator("xgboost", "regression", {"random_state": 5}, random_state=99)
    assert est.get_params()["random_state"] == 5


def test_unknown_hyperparameter_lists_accepted_names() -> None:
    with pytest.raises(ExperimentInputError) as info:
        build_estimator("xgboost", "binary", {"max_dept": 3, "n_trees": 10}, random_state=0)
    message = str(info.value)
    assert "Hyperparameters ['max_dept', 'n_trees'] are not accepted by XGBClassifier" in message
    accepted = sorted(xgboost.XGBClassifier().get_params())
    assert f"it accepts {accepted}" in message
    assert "'max_depth'" in message


def test_unknown_hyperparameter_for_sklearn_estimator() -> None:
    with pytest.raises(ExperimentInputError, match=r"\['depth'\] are not accepted by RandomForestClassifier"):
        build_estimator("sklearn.ensemble.RandomForestClassifier", "binary", {"depth": 3}, random_state=0)


def test_sklearn_import_path_gets_seed_and_no_xgboost_defaults() -> None:
    est = build_estimator("sklearn.ensemble.RandomForestClassifier", "binary", {"n_estimators": 3}, 17)

    assert type(est) is RandomForestClassifier
    assert est.get_params()["random_state"] == 17
    assert est.get_params()["n_estimators"] == 3
    assert est.get_params()["max_depth"] is None  # XGBOOST_DEFAULTS not applied


def test_sklearn_estimator_without_random_state() -> None:
    est = build_estimator("sklearn.neighbors.KNeighborsClassifier", "multiclass", {"n_neighbors": 2}, 17)
    assert type(est) is KNeighborsClassifier
    assert est.get_params()["n_neighbors"] == 2
    assert "random_state" not in est.get_params()


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("sklearn.ensemble.NoSuchForest", "cannot be imported"),
        ("no_such_module_xyz.Model", "cannot be imported"),
        ("randomforest", "neither 'xgboost' nor an import path"),
        ("collections.OrderedDict", "is not a scikit-learn estimator class"),
        ("os.path", "is not a scikit-learn estimator class"),
    ],
)
def test_bad_model_names(model: str, fragment: str) -> None:
    with pytest.raises(ExperimentInputError) as info:
        estimator_class(model, "binary")
    assert f"Model {model!r}" in str(info.value)
    assert fragment in str(info.value)


def test_bad_import_path_via_build_estimator_says_check_spelling() -> None:
    with pytest.raises(ExperimentInputError, match="check the spelling of the import path"):
        build_estimator("sklearn.ensemble.RandomForestClassifer", "binary", {}, 0)


def test_model_type() -> None:
    assert model_type(xgboost.XGBClassifier()) == "xgboost.sklearn.XGBClassifier"
    assert model_type(LogisticRegression()) == "sklearn.linear_model._logistic.LogisticRegression"


# --- threads per fit ---------------------------------------------------------------------


def test_usable_cpus_is_the_affinity_capped_by_the_env(eight_cpus, monkeypatch: pytest.MonkeyPatch) -> None:
    assert usable_cpus() == 8
    monkeypatch.setenv(CPUS_ENV, "3")
    assert usable_cpus() == 3
    monkeypatch.setenv(CPUS_ENV, "64")  # a cap, not a claim: the affinity still bounds it
    assert usable_cpus() == 8
    for bad in ("0", "-2", "all", "2.5"):
        monkeypatch.setenv(CPUS_ENV, bad)
        with pytest.raises(
            ExperimentInputError, match=f"EXPERIMENTS_CPUS='{bad}' is not valid.*positive integer"
        ):
            usable_cpus()


def test_threads_per_fit_share_the_cpus(eight_cpus) -> None:
    assert threads_per_fit(None) == 8  # unset: all usable CPUs for a fit alone
    assert threads_per_fit(None, 2) == 4
    assert threads_per_fit(None, 5) == 1  # 8 // 5
    assert threads_per_fit(None, 16) == 1  # never zero
    assert threads_per_fit(2, 1) == 2  # the spec's n_jobs is a cap
    assert threads_per_fit(8, 2) == 4
    assert threads_per_fit(3, 2) == 3
    assert threads_per_fit(-1, 4) == 2  # "all cores" becomes the fit's share
    assert threads_per_fit("auto", 4) == "auto"  # not ours to judge


def test_xgboost_n_jobs_comes_from_the_cpus(eight_cpus, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "n_jobs" not in XGBOOST_DEFAULTS
    assert build_estimator("xgboost", "binary", {}, 0).get_params()["n_jobs"] == 8
    assert build_estimator("xgboost", "binary", {}, 0, fits_at_once=3).get_params()["n_jobs"] == 2
    assert build_estimator("xgboost", "regression", {"n_jobs": 4}, 0).get_params()["n_jobs"] == 4
    assert build_estimator("xgboost", "regression", {"n_jobs": 16}, 0).get_params()["n_jobs"] == 8
    monkeypatch.setenv(CPUS_ENV, "2")
    assert build_estimator("xgboost", "multiclass", {}, 0).get_params()["n_jobs"] == 2


def test_sklearn_n_jobs_is_capped_only_when_the_spec_sets_it(eight_cpus) -> None:
    forest = "sklearn.ensemble.RandomForestClassifier"
    assert build_estimator(forest, "binary", {}, 0, fits_at_once=2).get_params()["n_jobs"] is None
    assert build_estimator(forest, "binary", {"n_jobs": -1}, 0, fits_at_once=2).get_params()["n_jobs"] == 4
    assert (
        "n_jobs" not in build_estimator("sklearn.tree.DecisionTreeClassifier", "binary", {}, 0).get_params()
    )


# --- EncodedTargetClassifier -------------------------------------------------------------


def _three_blobs() -> tuple[pd.DataFrame, np.ndarray]:
    x = np.r_[np.linspace(0, 1, 10), np.linspace(10, 11, 10), np.linspace(20, 21, 10)]
    y = np.array(["emu"] * 10 + ["cat"] * 10 + ["dog"] * 10)
    return pd.DataFrame({"x": x}), y


def test_encoded_classifier_xgboost_string_labels() -> None:
    X, y = _three_blobs()
    base = xgboost.XGBClassifier(n_estimators=20, max_depth=2, min_child_weight=0, n_jobs=1)
    clf = EncodedTargetClassifier(base).fit(X, y)

    assert clf.classes_.tolist() == ["cat", "dog", "emu"]
    pred = clf.predict(X)
    assert pred.tolist() == y.tolist()
    proba = clf.predict_proba(X)
    assert proba.shape == (30, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # Column j of predict_proba is the probability of classes_[j].
    assert clf.classes_[proba.argmax(axis=1)].tolist() == y.tolist()
    assert proba[0, 2] > 0.5 and proba[10, 0] > 0.5 and proba[20, 1] > 0.5
    # The wrapped estimator was fitted on a clone with integer labels 0..K-1.
    assert clf.estimator_ is not base
    assert clf.estimator_.classes_.tolist() == [0, 1, 2]
    with pytest.raises(NotFittedError):
        check_is_fitted(base)


def test_encoded_classifier_matches_direct_fit_on_encoded_labels() -> None:
    X, y = _three_blobs()
    clf = EncodedTargetClassifier(LogisticRegression(max_iter=500)).fit(X, y)
    mapping = {"cat": 0, "dog": 1, "emu": 2}
    direct = LogisticRegression(max_iter=500).fit(X, [mapping[v] for v in y])
    np.testing.assert_allclose(clf.predict_proba(X), direct.predict_proba(X))
    assert clf.predict(X).tolist() == [["cat", "dog", "emu"][i] for i in direct.predict(X)]


def test_encoded_classifier_clones_with_params() -> None:
    clf = EncodedTargetClassifier(LogisticRegression(C=0.25))
    copy = clone(clf)
    assert copy is not clf
    assert copy.get_params()["estimator__C"] == 0.25


def test_encoded_classifier_score_uses_original_labels() -> None:
    X, y = _three_blobs()
    clf = EncodedTargetClassifier(LogisticRegression(max_iter=500)).fit(X, y)
    assert clf.score(X, y) == 1.0
