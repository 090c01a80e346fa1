"""Several worker processes share one Optuna study in a real PostgreSQL: the total is exact, and a
killed worker's trial is failed (stale) by the survivor, which still brings the search to n."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from experiments_dagster.core.locks import NamedLock
from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.experiment.search import log_trial
from experiments_dagster.experiment.values import RunRef
from experiments_dagster.ml.search import search_worker
from experiments_dagster.ml.search_study import (
    SLOT_ATTR,
    WORKER_ATTR,
    SearchSettings,
    open_study,
    study_outcome,
)
from experiments_dagster.tracking.liveness import process_tags, worker_id
from experiments_dagster.tracking.store import Tracker
from experiments_dagster_tests.pgserver import throwaway_postgres

pytestmark = pytest.mark.slow
SPACE = {
    "max_depth": ParamSpace(type="int", low=2, high=5),
    "learning_rate": ParamSpace(type="float", low=0.02, high=0.3, log=True),
}


@pytest.fixture(scope="module")
def optuna_url() -> Iterator[str]:
    with throwaway_postgres() as pg:
        yield pg.pg_url("optuna")


def settings(n_trials: int, n_estimators: int = 20) -> SearchSettings:
    return SearchSettings(
        task="multiclass",
        model="xgboost",
        base_hyperparameters={"n_estimators": n_estimators, "n_jobs": 1},
        space=SPACE,
        metric="f1_macro",
        direction="maximize",
        n_trials=n_trials,
        timeout_seconds=None,
        seed=11,
        folds=3,
        cv_seed=1,
        model_seed=1,
    )


def worker(
    url: str,
    name: str,
    slot: int,
    s: SearchSettings,
    tracking_uri: str,
    parent: RunRef,
    start,
    grace_seconds: int,
) -> None:
    """One worker process: the search's worker function, each trial logged as a nested MLflow run."""
    data = load_iris(as_frame=True)
    X, y = data.data, pd.Series(np.asarray(data.target_names)[data.target])
    tracker = Tracker(tracking_uri)
    start.wait()  # imports done: both workers start searching together
    search_worker(
        X,
        y,
        s,
        storage=url,
        study_name=name,
        lock=NamedLock(url, f"search:{name}"),
        slot=slot,
        worker=worker_id(),
        on_trial=lambda t: log_trial(tracker, parent, process_tags(), s.metric, t),
        heartbeat_seconds=1,
        grace_seconds=grace_seconds,
        poll_seconds=0.2,
    )


@dataclass
class Workers:
    procs: list[multiprocessing.process.BaseProcess]
    start: object  # the barrier: kept alive until the children have started (its semaphore)
    client: MlflowClient
    parent: RunRef


def start_workers(url: str, tmp_path: Path, name: str, s: SearchSettings, grace_seconds: int = 60) -> Workers:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id("search")
    parent = RunRef(tracker.start_run(experiment, "parent", {}), experiment, "")
    open_study(s, storage=url, study_name=name)  # as the plan step does, before the workers start
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=worker, args=(url, name, slot, s, tracking_uri, parent, start, grace_seconds))
        for slot in (0, 1)
    ]
    for p in procs:
        p.start()
    return Workers(procs, start, MlflowClient(tracking_uri), parent)


def trial_runs(client: MlflowClient, parent: RunRef) -> dict[int, object]:
    runs = client.search_runs([parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    numbers = [int(r.data.tags["trial.number"]) for r in runs]
    assert len(numbers) == len(set(numbers)), "a trial was logged twice"
    return {int(r.data.tags["trial.number"]): r for r in runs}


def test_two_worker_processes_run_exactly_n_trials_in_one_study(optuna_url, tmp_path):
    s = settings(n_trials=20)
    workers = start_workers(optuna_url, tmp_path, "exact-count", s)
    client, parent = workers.client, workers.parent
    for p in workers.procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    study = optuna.load_study(study_name="exact-count", storage=optuna_url)
    states = Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] + states["PRUNED"] == 20  # exact: no overshoot, none short
    assert len(study.trials) == 20 and sorted(t.number for t in study.trials) == list(range(20))
    slots = Counter(t.user_attrs[SLOT_ATTR] for t in study.trials)
    assert set(slots) == {0, 1}, slots  # both processes ran trials of the one study
    runs = trial_runs(client, parent)
    assert sorted(runs) == list(range(20))
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    for t in study.trials:
        run = runs[t.number]
        assert run.info.status == status[t.state.name]
        assert run.data.tags["trial.slot"] == str(t.user_attrs[SLOT_ATTR])
        assert run.data.params["max_depth"] == str(t.params["max_depth"])
    # The best is the same read from the study, from our outcome and from the MLflow runs.
    outcome = study_outcome(study, "maximize")
    assert outcome.best_score == study.best_value
    best = runs[outcome.best_trial]
    assert best.data.metrics["cv_f1_macro_mean"] == pytest.approx(study.best_value)
    assert outcome.best_params == study.trials[outcome.best_trial].params
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert outcome.best_trial == min(t.number for t in complete if t.value == study.best_value)


def test_a_killed_workers_trial_fails_stale_and_the_other_worker_reaches_n(optuna_url, tmp_path):
    s = settings(n_trials=8, n_estimators=300)  # slow enough trials to be killed in the middle of one
    workers = start_workers(optuna_url, tmp_path, "killed-worker", s, grace_seconds=3)
    client, parent = workers.client, workers.parent
    survivor, victim = workers.procs
    study = optuna.load_study(study_name="killed-worker", storage=optuna_url)
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline:
        running = [
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get(SLOT_ATTR) == 1
        ]
        if running:
            os.kill(victim.pid, signal.SIGKILL)
            killed = running[0].number
        time.sleep(0.05)
    assert killed is not None, "worker 1 never started a trial"
    victim.join(timeout=30)
    assert victim.exitcode == -signal.SIGKILL
    survivor.join(timeout=300)
    assert survivor.exitcode == 0

    trials = {t.number: t for t in optuna.load_study(study_name="killed-worker", storage=optuna_url).trials}
    assert trials[killed].state.name == "FAIL"  # failed as stale by the survivor
    states = Counter(t.state.name for t in trials.values())
    assert states["COMPLETE"] + states["PRUNED"] == 8  # the failed trial did not count
    assert states["RUNNING"] == 0 and states["FAIL"] == 1
    runs = trial_runs(client, parent)
    assert sorted(runs) == sorted(trials)  # every trial has its nested run, the killed one too
    stale = runs[killed]
    assert stale.info.status == "FAILED"
    assert stale.data.tags["error.message"].startswith(
        f"stale: no heartbeat from its worker (slot 1, {socket.gethostname()}:{victim.pid})"
    )
    assert trials[killed].user_attrs[WORKER_ATTR] == f"{socket.gethostname()}:{victim.pid}"
    assert stale.data.tags["worker"] == f"{socket.gethostname()}:{survivor.pid}"  # logged by the survivor
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
