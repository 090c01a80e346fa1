"""Hyperparameter search over CV folds with Optuna (seeded TPE sampler, median pruning).

One search is one Optuna study. ``run_search`` keeps it in memory in this process;
``search_worker`` runs trials into a study that several processes share through an RDB storage
(``open_study``), so that many workers together run exactly ``n_trials`` finished trials:

- **Exact count.** Before each trial a worker takes the search's lock, fails stale trials,
  counts COMPLETE + PRUNED + RUNNING + WAITING trials, and only if that is below ``n_trials``
  lets Optuna create the next trial, releasing the lock once it exists (first thing in the
  objective). Counting and creating are one critical section, so two workers can never both
  take the last trial (``optuna.study.MaxTrialsCallback`` counts the same states, but only
  after a trial, without a lock, so two workers can both pass it).
- **Failed trials do not count.** An errored trial, or a killed worker's trial failed as stale by
  the others (heartbeats), frees its place: a worker that sees enough trials counted while some
  still run elsewhere waits for them instead of leaving, in case one fails. A search whose
  trials keep failing gives up after ``n_trials`` failures, or as soon as the last
  ``MAX_FAILED_IN_A_ROW`` finished trials all failed.

The study itself, its settings and trials as plain data: ``search_study.py``; one trial's
objective (its hyperparameters and CV score): ``search_objective.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.ml.search_objective import evaluate
from experiments_dagster.ml.search_study import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    POLL_SECONDS,
    SLOT_ATTR,
    WORKER_ATTR,
    SearchOutcome,
    SearchSettings,
    TrialResult,
    fail_stale_trials,
    open_study,
    outcome_of,
    trial_result,
)

if TYPE_CHECKING:
    import optuna

# A search stops once this many finished trials in a row failed (errors; pruning is not failing):
# the space or the data is broken for every trial, and more would only log more failed runs.
MAX_FAILED_IN_A_ROW = 10


class TrialLock(Protocol):
    """What the exact trial count needs of a lock shared by the workers (``locks.NamedLock``)."""

    def acquire(self) -> object: ...

    def release(self) -> None: ...


def failed_in_a_row(finished: list[tuple[int, str]]) -> int:
    """How many of the last finished trials, as (number, state name), failed one after another."""
    count = 0
    for _, state in sorted(finished, reverse=True):
        if state != "FAIL":
            break
        count += 1
    return count


def claim_next_trial(
    study: optuna.Study,
    n_trials: int,
    lock: TrialLock,
    deadline: float | None,
    poll_seconds: float = POLL_SECONDS,
) -> bool:
    """True when another trial may start: the lock is then held, and the caller releases it once
    Optuna has created the trial. False when the search is done (or out of time)."""
    while True:
        lock.acquire()
        try:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
        except BaseException:
            lock.release()
            raise
        counts = Counter(t.state.name for t in trials)
        finished = counts["COMPLETE"] + counts["PRUNED"]
        counted = finished + counts["RUNNING"] + counts["WAITING"]
        out_of_time = deadline is not None and time.monotonic() >= deadline
        in_a_row = failed_in_a_row([(t.number, t.state.name) for t in trials if t.state.is_finished()])
        given_up = counts["FAIL"] >= n_trials or in_a_row >= MAX_FAILED_IN_A_ROW
        if counted < n_trials and not out_of_time and not given_up:
            return True
        lock.release()
        if finished >= n_trials or out_of_time or given_up:
            return False
        # Enough trials counted, but some still run elsewhere: one may yet fail (or go stale).
        time.sleep(poll_seconds)


def run_trials(
    X: pd.DataFrame,
    y: pd.Series,
    study: optuna.Study,
    settings: SearchSettings,
    lock: TrialLock,
    *,
    slot: int = 0,
    worker: str | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> list[TrialResult]:
    """Run trials into ``study`` until it holds ``n_trials`` finished (COMPLETE or PRUNED) trials
    counting every worker's, or ``timeout_seconds`` (from this call) ran out; report each trial
        this worker finishes to ``on_trial``; each trial records ``slot`` and ``worker`` (the process
    running it) as user attributes. Returns this worker's trials."""

    deadline = None if settings.timeout_seconds is None else time.monotonic() + settings.timeout_seconds
    holding = False
    mine: list[TrialResult] = []

    def objective(trial: optuna.Trial) -> float:
        nonlocal holding
        if holding:  # the trial exists now: the next count sees it
            holding = False
            lock.release()
        trial.set_user_attr(SLOT_ATTR, slot)
        if worker is not None:
            trial.set_user_attr(WORKER_ATTR, worker)
        return evaluate(trial, X, y, settings)

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        nonlocal holding
        result = trial_result(frozen)
        mine.append(result)
        if on_trial is not None:
            on_trial(result)
        holding = claim_next_trial(study, settings.n_trials, lock, deadline, poll_seconds)
        if not holding:
            study.stop()

    holding = claim_next_trial(study, settings.n_trials, lock, deadline, poll_seconds)
    if not holding:
        return mine
    try:
        # No n_trials or timeout here: Optuna's count is per process; the claims above decide.
        study.optimize(objective, catch=(Exception,), callbacks=[after_trial])
    finally:
        if holding:
            lock.release()
    return mine


def search_worker(
    X: pd.DataFrame,
    y: pd.Series,
    settings: SearchSettings,
    *,
    storage: str | None,
    study_name: str | None,
    lock: TrialLock,
    slot: int = 0,
    worker: str | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> list[TrialResult]:
    """One worker of a search: open (or create) the study and run trials into it with the others.

    ``on_trial`` hears of each trial this worker finishes and of each other worker's trial that
    this one fails as stale. Returns the trials this worker ran.
    """
    study = open_study(
        settings,
        storage=storage,
        study_name=study_name,
        slot=slot,
        on_stale=on_trial,
        heartbeat_seconds=heartbeat_seconds,
        grace_seconds=grace_seconds,
    )
    return run_trials(
        X, y, study, settings, lock, slot=slot, worker=worker, on_trial=on_trial, poll_seconds=poll_seconds
    )


class _ProcessLock:
    """The in-memory study's lock: nothing else sees that study, but the protocol is the same."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()

    def acquire(self) -> bool:
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def run_search(
    X: pd.DataFrame,
    y: pd.Series,
    *,
    task: str,
    model: str,
    base_hyperparameters: dict[str, Any],
    space: dict[str, ParamSpace],
    metric: str,
    direction: str,
    n_trials: int,
    timeout_seconds: float | None,
    seed: int,
    folds: int,
    cv_seed: int,
    model_seed: int,
    positive_class: str | None = None,
    pruning: bool = True,
    on_trial: Callable[[TrialResult], None] | None = None,
) -> SearchOutcome:
    """Optimize ``metric`` (mean over CV folds of the train split) in an in-memory study of this
    process; report each finished trial.

    The same seed, data and settings give the same trial sequence (single-threaded TPE).
    """
    settings = SearchSettings(
        task=task,
        model=model,
        base_hyperparameters=base_hyperparameters,
        space=space,
        metric=metric,
        direction=direction,
        n_trials=n_trials,
        timeout_seconds=timeout_seconds,
        seed=seed,
        folds=folds,
        cv_seed=cv_seed,
        model_seed=model_seed,
        positive_class=positive_class,
        pruning=pruning,
    )
    trials = search_worker(
        X, y, settings, storage=None, study_name=None, lock=_ProcessLock(), on_trial=on_trial
    )
    return outcome_of(trials, direction)
