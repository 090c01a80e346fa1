"""Cross-validation: fold contents, the scheduler's callbacks and failures, folds at once, threads."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from experiments_dagster.core import settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.ml import cv, parallel
from experiments_dagster.ml.metrics import predict, task_metrics
from experiments_dagster.ml.training import estimator_of

FAST_XGB = {"n_estimators": 5, "max_depth": 2, "n_jobs": 1}
# Never ends on its own within a test: only the scheduler's stop can end it.
ENDLESS_XGB = {"n_estimators": 10**7, "max_depth": 2, "n_jobs": 1}


def _frame(n: int = 40) -> tuple[pd.DataFrame, pd.Series]:
    """Numeric with NaN, categorical strings with NaN, a string target tied to the number."""
    num = np.arange(n, dtype=float)
    num[[3, 17]] = np.nan
    cat = np.array(["red", "green", "blue", np.nan] * (n // 4), dtype=object)
    X = pd.DataFrame({"num": num, "colour": cat})
    y = pd.Series(np.where(np.arange(n) < n / 2, "low", "high"), name="target")
    return X, y


def _booster_bytes(fold: object) -> bytes:
    return estimator_of(fold.pipeline).get_booster().save_raw("ubj")


@pytest.fixture(autouse=True)
def _no_cpu_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXPERIMENTS_CPUS", settings.CV_WORKERS_ENV, settings.CV_MEMORY_ENV):
        monkeypatch.delenv(name, raising=False)


def test_cv_splitter_kind() -> None:
    assert type(cv.cv_splitter("regression", 3, 0)) is KFold
    assert type(cv.cv_splitter("binary", 4, 0)) is StratifiedKFold
    splitter = cv.cv_splitter("multiclass", 4, 11)
    assert (splitter.n_splits, splitter.shuffle, splitter.random_state) == (4, True, 11)


def test_cross_validate_binary_folds_cover_every_row_once(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(40)
    seen: list[list[int]] = []

    def recording_predict(pipeline, X_val, task):
        seen.append(X_val.index.tolist())
        return predict(pipeline, X_val, task)

    monkeypatch.setattr(cv, "predict", recording_predict)
    results = cv.cross_validate(X, y, "binary", "xgboost", FAST_XGB, folds=4, cv_seed=2, model_seed=3)

    assert [r.fold for r in results] == [0, 1, 2, 3]
    assert all(r.n_train + r.n_validation == len(X) for r in results)
    assert sorted(i for rows in seen for i in rows) == list(range(len(X)))  # disjoint, all rows
    for r, rows in zip(results, seen, strict=True):
        assert y.iloc[rows].value_counts().to_dict() == {"low": 5, "high": 5}  # stratified
        expected = task_metrics(
            "binary", y.iloc[rows].to_numpy(), predict(r.pipeline, X.iloc[rows], "binary")
        )
        assert r.metrics == pytest.approx(expected)
        assert {"accuracy", "roc_auc", "f1", "log_loss"} <= set(r.metrics)
        assert r.timing.fit_seconds > 0 and r.timing.predict_seconds > 0
    assert len({id(r.pipeline) for r in results}) == 4


def test_cross_validate_regression_with_chosen_metrics() -> None:
    X = pd.DataFrame({"x": np.arange(21.0), "c": ["p", "q", "r"] * 7})
    y = pd.Series(np.arange(21.0) * 2.0)
    results = cv.cross_validate(X, y, "regression", "xgboost", FAST_XGB, 3, 0, 0, metric_names=("rmse", "r2"))
    assert [r.n_validation for r in results] == [7, 7, 7]
    assert all(set(r.metrics) == {"rmse", "r2"} for r in results)


def test_folds_at_once_give_the_same_models_as_one_after_another() -> None:
    X, y = _frame(40)
    serial = cv.cross_validate(X, y, "binary", "xgboost", FAST_XGB, 4, 2, 3, workers=1)
    parallel = cv.cross_validate(X, y, "binary", "xgboost", FAST_XGB, 4, 2, 3, workers=2)
    indices = cv.cv_fold_indices(X, y, "binary", 4, 2)
    for i, (a, b) in enumerate(zip(serial, parallel, strict=True)):
        alone = cv.fit_fold(i, X, y, indices[i], "binary", "xgboost", FAST_XGB, 3)
        assert a.metrics == b.metrics == alone.metrics
        assert _booster_bytes(a) == _booster_bytes(b) == _booster_bytes(alone)


def test_thread_count_changes_results_only_by_float_rounding() -> None:
    X, y = _frame(40)
    one = cv.cross_validate(X, y, "binary", "xgboost", {**FAST_XGB, "n_jobs": 1}, 4, 2, 3)
    two = cv.cross_validate(X, y, "binary", "xgboost", {**FAST_XGB, "n_jobs": 2}, 4, 2, 3)
    for a, b in zip(one, two, strict=True):
        assert a.metrics == pytest.approx(b.metrics, rel=1e-6)


def test_callbacks_run_on_the_calling_thread_in_order() -> None:
    X, y = _frame(40)
    events: list[tuple[str, int]] = []
    threads: set[int] = set()
    in_flight = 0
    most_in_flight = 0

    def start(i: int) -> None:
        nonlocal in_flight, most_in_flight
        events.append(("start", i))
        threads.add(threading.get_ident())
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)

    def done(fold) -> None:
        nonlocal in_flight
        events.append(("done", fold.fold))
        threads.add(threading.get_ident())
        in_flight -= 1
        done_results.append(fold)

    done_results: list = []
    results = cv.cross_validate(
        X,
        y,
        "binary",
        "xgboost",
        FAST_XGB,
        5,
        2,
        3,
        workers=2,
        on_start=start,
        on_done=done,
        on_error=lambda i, e: events.append(("error", i)),
    )

    assert threads == {threading.get_ident()}
    assert [i for kind, i in events if kind == "start"] == [0, 1, 2, 3, 4]
    assert sorted(i for kind, i in events if kind == "done") == [0, 1, 2, 3, 4]
    assert not [e for e in events if e[0] == "error"]
    for i in range(5):
        assert events.index(("start", i)) < events.index(("done", i))
    assert most_in_flight == 2
    assert sorted(done_results, key=lambda f: f.fold) == results  # the same objects, returned in fold order
    # The last, partial round (fold 4) starts only when both CPUs' folds are done.
    assert events.index(("start", 4)) > max(events.index(("done", i)) for i in range(4))


def _failing_fold(monkeypatch: pytest.MonkeyPatch, failing: int, endless: set[int]) -> None:
    """Fold ``failing`` raises once training started; folds in ``endless`` train until stopped."""
    real = cv.fit_fold

    def fit_fold(i, X, y, rows, task, model, hp, *args):
        if i == failing:
            time.sleep(0.3)  # let the other folds be well inside their fits
            raise ValueError(f"fold {i} is broken")
        return real(i, X, y, rows, task, model, ENDLESS_XGB if i in endless else hp, *args)

    monkeypatch.setattr(cv, "fit_fold", fit_fold)


def test_a_failing_fold_stops_the_rest_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(40)
    _failing_fold(monkeypatch, failing=1, endless={0})
    events: list[tuple] = []
    before = {t.ident for t in threading.enumerate()}
    started = time.monotonic()

    with pytest.raises(ValueError, match="fold 1 is broken"):
        cv.cross_validate(
            X,
            y,
            "binary",
            "xgboost",
            FAST_XGB,
            5,
            2,
            3,
            workers=2,
            on_start=lambda i: events.append(("start", i)),
            on_done=lambda f: events.append(("done", f.fold)),
            on_error=lambda i, e: events.append(("error", i, str(e))),
            on_abandon=lambda i, e: events.append(("abandon", i, str(e))),
        )

    assert time.monotonic() - started < 10  # fold 0 was not waited for
    assert events == [
        ("start", 0),
        ("start", 1),
        ("error", 1, "fold 1 is broken"),
        ("abandon", 0, "fold 1 is broken"),
    ]
    # The abandoned fit stops at its next boosting round: no thread keeps training.
    deadline = time.monotonic() + 10
    while any(t.name.startswith("cv-fold") and t.ident not in before for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an abandoned fold kept training"
        time.sleep(0.05)


def test_an_interrupt_abandons_the_folds_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(40)
    real = cv.fit_fold
    monkeypatch.setattr(
        cv,
        "fit_fold",
        lambda i, X, y, rows, task, model, hp, *a: real(
            i, X, y, rows, task, model, ENDLESS_XGB if i == 1 else hp, *a
        ),
    )
    events: list[tuple] = []

    def start(i: int) -> None:
        if i == 2:
            raise KeyboardInterrupt  # what Ctrl-C or Dagster's termination raises in the main thread
        events.append(("start", i))

    with pytest.raises(KeyboardInterrupt):
        cv.cross_validate(
            X,
            y,
            "binary",
            "xgboost",
            FAST_XGB,
            5,
            2,
            3,
            workers=2,
            on_start=start,
            on_done=lambda f: events.append(("done", f.fold)),
            on_abandon=lambda i, e: events.append(("abandon", i, type(e).__name__)),
        )

    assert events == [("start", 0), ("start", 1), ("done", 0), ("abandon", 1, "KeyboardInterrupt")]


def test_stopped_fit_raises_and_an_unstopped_one_leaves_no_hook() -> None:
    X, y = _frame(40)
    rows = cv.cv_fold_indices(X, y, "binary", 4, 2)[0]
    stop = threading.Event()
    fold = cv.fit_fold(0, X, y, rows, "binary", "xgboost", FAST_XGB, 3, stop=stop)
    wrapper = fold.pipeline.named_steps["model"]
    assert wrapper.estimator.get_params()["callbacks"] is None
    assert estimator_of(fold.pipeline).get_params()["callbacks"] is None
    assert _booster_bytes(fold) == _booster_bytes(
        cv.fit_fold(0, X, y, rows, "binary", "xgboost", FAST_XGB, 3)
    )
    stop.set()
    with pytest.raises(cv.FoldCancelled, match="boosting round 0"):
        cv.fit_fold(0, X, y, rows, "binary", "xgboost", ENDLESS_XGB, 3, stop=stop)


# --- how many folds at once, and threads per fold ------------------------------------------


def _cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(n)))


def test_fold_threads_share_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(40)
    _cpus(monkeypatch, 8)
    hp = {"n_estimators": 2, "max_depth": 2}

    def n_jobs(folds: list) -> list[int]:
        return [estimator_of(f.pipeline).get_params()["n_jobs"] for f in folds]

    # Two folds at a time get 4 threads each; the last fold trains alone with all 8.
    assert n_jobs(cv.cross_validate(X, y, "binary", "xgboost", hp, 5, 2, 3, workers=2)) == [4, 4, 4, 4, 8]
    assert (
        n_jobs(cv.cross_validate(X, y, "binary", "xgboost", {**hp, "n_jobs": 3}, 5, 2, 3, workers=2))
        == [3] * 5
    )
    assert n_jobs(cv.cross_validate(X, y, "binary", "xgboost", hp, 4, 2, 3, workers=3)) == [2, 2, 2, 8]
    monkeypatch.setenv("EXPERIMENTS_CPUS", "2")
    assert n_jobs(cv.cross_validate(X, y, "binary", "xgboost", hp, 5, 2, 3, workers=2)) == [1, 1, 1, 1, 2]


def test_fold_workers_default_is_one_per_cpu_capped_by_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, expected in ((8, 5), (2, 2), (1, 1)):
        _cpus(monkeypatch, cpus)
        assert parallel.fold_workers(5) == expected
    _cpus(monkeypatch, 8)
    monkeypatch.setenv("EXPERIMENTS_CPUS", "3")  # one run's share of a shared machine
    assert parallel.fold_workers(5) == 3


def test_fold_workers_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.CV_WORKERS_ENV, "3")
    assert parallel.fold_workers(5) == 3
    assert parallel.fold_workers(2) == 2
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(settings.CV_WORKERS_ENV, bad)
        with pytest.raises(ExperimentInputError, match="EXPERIMENTS_CV_WORKERS=.*positive integer"):
            parallel.fold_workers(5)


def test_fold_workers_within_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpus(monkeypatch, 8)
    mb = 2**20
    assert parallel.fold_workers(5, 100 * mb) == 5  # 4 extra folds x 100 MB fit in 512 MB
    assert parallel.fold_workers(5, 200 * mb) == 3  # 2 extra x 200 MB
    assert parallel.fold_workers(5, 600 * mb) == 1  # big data: one fold at a time
    monkeypatch.setenv(settings.CV_MEMORY_ENV, "4096")
    assert parallel.fold_workers(5, 600 * mb) == 5
    monkeypatch.setenv(settings.CV_MEMORY_ENV, "0")
    assert parallel.fold_workers(5, 1) == 1
    monkeypatch.setenv(settings.CV_WORKERS_ENV, "4")  # an explicit count wins over the budget
    assert parallel.fold_workers(5, 600 * mb) == 4
    monkeypatch.delenv(settings.CV_WORKERS_ENV)
    monkeypatch.setenv(settings.CV_MEMORY_ENV, "lots")
    with pytest.raises(ExperimentInputError, match="EXPERIMENTS_CV_MEMORY_MB='lots' is not valid"):
        parallel.fold_workers(5, 1)


def test_fold_memory_estimate_scales_with_the_train_rows() -> None:
    X = pd.DataFrame({"a": np.zeros(1000), "b": np.zeros(1000)})  # 16,000 bytes
    assert parallel.fold_memory_bytes(X, 5) == 16_000 * 4 // 5 * parallel.FOLD_MEMORY_FACTOR


# --- the refit (the final model) in the same pool -------------------------------------------


def test_the_refit_is_the_lone_fit_on_every_row_and_predicts_with_every_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, y = _frame(40)
    _cpus(monkeypatch, 8)
    hp = {"n_estimators": 5, "max_depth": 2}
    started: list[int] = []

    result = cv.cross_validate_and_refit(
        X, y, "binary", "xgboost", hp, 5, 2, 3, workers=2, on_start=started.append
    )

    assert started == [0, 1, 2, 3, 4]  # callbacks concern folds only
    assert [f.fold for f in result.folds] == [0, 1, 2, 3, 4]
    # Six jobs on two workers: three full rounds, the refit paired with the last fold.
    assert [estimator_of(f.pipeline).get_params()["n_jobs"] for f in result.folds] == [4] * 5
    assert result.refit is not None and result.refit.fits_at_once == 2
    refit = result.refit.pipeline
    assert estimator_of(refit).get_params()["n_jobs"] == 8  # set back to a lone fit's share
    assert refit.named_steps["model"].estimator.get_params()["n_jobs"] == 8
    booster_config = json.loads(estimator_of(refit).get_booster().save_config())
    assert booster_config["learner"]["generic_param"]["nthread"] == "8"
    assert result.refit.fit_seconds > 0 and result.wall_seconds >= result.refit.fit_seconds
    alone = cv.make_pipeline(X, "binary", "xgboost", hp, 3).fit(X, y)
    assert estimator_of(refit).get_booster().save_raw("ubj") == estimator_of(alone).get_booster().save_raw(
        "ubj"
    )
    np.testing.assert_array_equal(refit.predict_proba(X), alone.predict_proba(X))
    folds_alone = cv.cross_validate(X, y, "binary", "xgboost", hp, 5, 2, 3, workers=2)
    assert [_booster_bytes(f) for f in result.folds] == [_booster_bytes(f) for f in folds_alone]


def test_a_failing_refit_stops_the_folds_in_flight_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(40)
    real = cv.fit_fold
    monkeypatch.setattr(
        cv,
        "fit_fold",
        lambda i, X, y, rows, task, model, hp, *a: real(
            i, X, y, rows, task, model, ENDLESS_XGB if i == 2 else hp, *a
        ),
    )

    def broken_refit(*args):
        time.sleep(0.3)
        raise MemoryError("no room for the refit")

    monkeypatch.setattr(cv, "refit_all", broken_refit)
    events: list[tuple] = []

    with pytest.raises(MemoryError, match="no room for the refit"):
        cv.cross_validate_and_refit(
            X,
            y,
            "binary",
            "xgboost",
            FAST_XGB,
            3,
            2,
            3,
            workers=2,
            on_start=lambda i: events.append(("start", i)),
            on_done=lambda f: events.append(("done", f.fold)),
            on_error=lambda i, e: events.append(("error", i, str(e))),
            on_abandon=lambda i, e: events.append(("abandon", i, str(e))),
        )

    # Three folds and the refit on two workers: folds 0 and 1, then fold 2 beside the refit. The
    # refit has no fold run, so no on_error; fold 2, still training, is abandoned.
    assert [e for e in events if e[0] == "start"] == [("start", 0), ("start", 1), ("start", 2)]
    assert sorted(e for e in events if e[0] == "done") == [("done", 0), ("done", 1)]
    assert events[-1] == ("abandon", 2, "no room for the refit") and len(events) == 6
