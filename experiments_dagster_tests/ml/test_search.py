"""The search's trial count: exact, failed trials not counted, other workers' running trials waited for."""

from __future__ import annotations

import threading
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from experiments_dagster.core.locks import NamedLock
from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.ml.search import (
    MAX_FAILED_IN_A_ROW,
    claim_next_trial,
    failed_in_a_row,
    run_search,
    run_trials,
)
from experiments_dagster.ml.search_study import SearchSettings, open_study

SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 5},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "subsample": {"type": "choice", "choices": [0.7, 0.85, 1.0]},
}
# What the search gave before it was spread over workers (one in-memory study, seed 7).
PREVIOUS_PARAMS = [
    {"max_depth": 2, "learning_rate": 0.1653048782231297, "subsample": 1.0},
    {"max_depth": 4, "learning_rate": 0.07769505754917559, "subsample": 1.0},
    {"max_depth": 4, "learning_rate": 0.17631954261691993, "subsample": 0.7},
    {"max_depth": 5, "learning_rate": 0.035644345515999966, "subsample": 0.85},
    {"max_depth": 4, "learning_rate": 0.26210119200545157, "subsample": 1.0},
]


def iris() -> tuple[pd.DataFrame, pd.Series]:
    data = load_iris(as_frame=True)
    return data.data, pd.Series(np.asarray(data.target_names)[data.target])


def settings(**overrides) -> SearchSettings:
    values = dict(
        task="multiclass",
        model="xgboost",
        base_hyperparameters={"n_estimators": 20},
        space={k: ParamSpace(**v) for k, v in SPACE.items()},
        metric="f1_macro",
        direction="maximize",
        n_trials=5,
        timeout_seconds=None,
        seed=7,
        folds=3,
        cv_seed=1,
        model_seed=1,
    )
    return SearchSettings(**{**values, **overrides})


def test_one_in_memory_study_gives_the_previous_trials_and_best():
    X, y = iris()
    s = settings()
    outcome = run_search(X, y, **vars(s))
    assert [t.params for t in outcome.trials] == PREVIOUS_PARAMS
    assert [t.state for t in outcome.trials] == ["COMPLETE"] * 5
    assert outcome.best_trial == 1 and outcome.best_params == PREVIOUS_PARAMS[1]
    assert outcome.best_score == pytest.approx(0.9599616614322497)
    assert {t.slot for t in outcome.trials} == {0}


def test_failed_trials_do_not_count_toward_n_trials():
    """A tree depth of -1 fails its fit: the search runs on until 4 trials finished."""
    X, y = iris()
    s = settings(
        model="sklearn.tree.DecisionTreeClassifier",
        base_hyperparameters={},
        space={"max_depth": ParamSpace(type="choice", choices=(-1, 2, 3))},
        n_trials=4,
        seed=4,
    )
    study = open_study(s)
    trials = run_trials(X, y, study, s, NamedLock(None, "test-failed-trials"))
    states = [t.state for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 4
    assert states.count("FAIL") >= 2  # seed 4 draws -1 twice among its first trials
    assert all("max_depth" in t.error for t in trials if t.state == "FAIL")
    assert len(study.trials) == len(trials)  # nothing ran beyond the fourth finished trial


def test_a_search_whose_trials_all_fail_gives_up_after_n_trials_failures():
    X, y = iris()
    s = settings(
        model="sklearn.tree.DecisionTreeClassifier",
        base_hyperparameters={},
        space={"max_depth": ParamSpace(type="choice", choices=(-1, -2))},
        n_trials=3,
    )
    trials = run_trials(X, y, open_study(s), s, NamedLock(None, "test-all-fail"))
    assert [t.state for t in trials] == ["FAIL"] * 3


def test_a_search_whose_trials_keep_failing_stops_after_max_failed_in_a_row():
    """`n_trials: 1000` with an impossible space: 10 failures in a row end it, not 1000."""
    X, y = iris()
    s = settings(
        model="sklearn.tree.DecisionTreeClassifier",
        base_hyperparameters={},
        space={"max_depth": ParamSpace(type="choice", choices=(-1, -2))},
        n_trials=1000,
    )
    started = time.monotonic()
    trials = run_trials(X, y, open_study(s), s, NamedLock(None, "test-fail-in-a-row"))
    assert [t.state for t in trials] == ["FAIL"] * MAX_FAILED_IN_A_ROW == ["FAIL"] * 10
    assert time.monotonic() - started < 60
    assert failed_in_a_row([(0, "COMPLETE"), (2, "FAIL"), (1, "FAIL"), (3, "PRUNED")]) == 0
    assert failed_in_a_row([(0, "COMPLETE"), (2, "FAIL"), (1, "PRUNED"), (3, "FAIL")]) == 2


def test_claim_waits_for_a_trial_running_elsewhere_and_takes_its_place_when_it_fails():
    """Enough trials counted (one finished, one running elsewhere, n=2): the claim waits rather
    than leave the search one short, and claims the place once the other trial fails."""
    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 1.0)
    elsewhere = study.ask()  # RUNNING, as another worker's trial
    lock = NamedLock(None, "test-claim-waits")

    def fail_it() -> None:
        time.sleep(0.5)
        study.tell(elsewhere, state=optuna.trial.TrialState.FAIL)

    started = time.monotonic()
    threading.Thread(target=fail_it).start()
    assert claim_next_trial(study, 2, lock, deadline=None, poll_seconds=0.05)
    assert time.monotonic() - started >= 0.5
    assert lock.held  # held until the next trial exists
    lock.release()


def test_claim_ends_the_worker_once_the_running_trial_finishes():
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    elsewhere = study.ask()
    lock = NamedLock(None, "test-claim-ends")
    threading.Timer(0.3, lambda: study.tell(elsewhere, 2.0)).start()
    assert not claim_next_trial(study, 2, lock, deadline=None, poll_seconds=0.05)
    assert not lock.held


def test_claim_respects_the_deadline():
    study = optuna.create_study()
    lock = NamedLock(None, "test-claim-deadline")
    assert not claim_next_trial(study, 5, lock, deadline=time.monotonic() - 1)
    assert not lock.held
    study.ask()  # running elsewhere and the count reached: waiting stops at the deadline too
    started = time.monotonic()
    assert not claim_next_trial(study, 1, lock, deadline=time.monotonic() + 0.3, poll_seconds=0.05)
    assert 0.3 <= time.monotonic() - started < 2


def test_timeout_stops_starting_trials():
    X, y = iris()
    s = settings(n_trials=1000, timeout_seconds=1.0)
    started = time.monotonic()
    trials = run_trials(X, y, open_study(s), s, NamedLock(None, "test-timeout"))
    assert 1 <= len(trials) < 1000
    assert time.monotonic() - started < 10
