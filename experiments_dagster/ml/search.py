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
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.ml.cv import cross_validate
from experiments_dagster.ml.training import FoldResult

if TYPE_CHECKING:
    import optuna

# A running trial's worker writes a heartbeat every HEARTBEAT_SECONDS; a trial without one for
# GRACE_SECONDS (its worker was killed or lost) is failed by the next worker that looks.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
POLL_SECONDS = 2.0  # how often a worker waiting for other workers' last trials looks again
SLOT_ATTR = "worker.slot"  # user attribute: the worker slot that ran the trial
WORKER_ATTR = "worker"  # user attribute: the process that ran it, `<hostname>:<pid>` (as the MLflow tag)
# A search stops once this many finished trials in a row failed (errors; pruning is not failing):
# the space or the data is broken for every trial, and more would only log more failed runs.
MAX_FAILED_IN_A_ROW = 10


@dataclass(frozen=True)
class SearchSettings:
    """Everything a worker needs to run trials of one search (no data, no secrets)."""

    task: str
    model: str
    base_hyperparameters: dict[str, Any]
    space: dict[str, ParamSpace]
    metric: str
    direction: str
    n_trials: int
    timeout_seconds: float | None
    seed: int
    folds: int
    cv_seed: int
    model_seed: int
    positive_class: str | None = None
    pruning: bool = True


@dataclass(frozen=True)
class TrialResult:
    """One trial: its params, per-fold scores, final state (COMPLETE, PRUNED, FAIL)."""

    number: int
    state: str
    params: dict[str, Any]
    fold_scores: list[float]
    score: float | None
    started_ms: int
    ended_ms: int
    error: str = ""
    slot: int | None = None  # the worker slot that ran it


@dataclass(frozen=True)
class SearchOutcome:
    """Every trial in order, and the best params/score among completed trials."""

    trials: list[TrialResult]
    best_params: dict[str, Any] = field(default_factory=dict)
    best_score: float | None = None
    best_trial: int | None = None


class TrialLock(Protocol):
    """What the exact trial count needs of a lock shared by the workers (``locks.NamedLock``)."""

    def acquire(self) -> object: ...

    def release(self) -> None: ...


def suggest(trial: optuna.Trial, name: str, space: ParamSpace) -> Any:
    """Draw one hyperparameter from its space."""
    if space.type == "choice":
        return trial.suggest_categorical(name, list(space.choices or ()))
    if space.type == "int":
        step = int(space.step) if space.step else 1
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_float(name, float(space.low), float(space.high), step=space.step, log=space.log)


def trial_result(trial: optuna.trial.FrozenTrial, error: str = "") -> TrialResult:
    """A frozen Optuna trial as plain data (``error`` when the trial itself recorded none)."""

    def ms(dt) -> int:
        return int(dt.timestamp() * 1000) if dt else int(time.time() * 1000)

    return TrialResult(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        fold_scores=list(trial.user_attrs.get("fold_scores", [])),
        score=trial.value,
        started_ms=ms(trial.datetime_start),
        ended_ms=ms(trial.datetime_complete),
        error=trial.user_attrs.get("error", "") or error,
        slot=trial.user_attrs.get(SLOT_ATTR),
    )


def _sampler_and_pruner(settings: SearchSettings, slot: int) -> tuple[Any, Any]:
    import optuna

    # Slot 0 draws exactly what a one-process search with this seed draws; the others differ.
    sampler = optuna.samplers.TPESampler(seed=settings.seed + slot)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if settings.pruning
        else optuna.pruners.NopPruner()
    )
    return sampler, pruner


def open_study(
    settings: SearchSettings,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    slot: int = 0,
    on_stale: Callable[[TrialResult], None] | None = None,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
) -> optuna.Study:
    """The search's study: in memory without ``storage``; else created or loaded by name in the
    shared RDB storage (an SQLAlchemy URL), with heartbeats so a killed worker's trial is failed
    (and reported to ``on_stale``) by whichever worker notices it first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = _sampler_and_pruner(settings, slot)
    if storage is None:
        return optuna.create_study(direction=settings.direction, sampler=sampler, pruner=pruner)

    def stale(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(
                trial_result(
                    trial,
                    f"stale: no heartbeat from its worker (slot {trial.user_attrs.get(SLOT_ATTR)}, "
                    f"{trial.user_attrs.get(WORKER_ATTR, 'process unknown')}) for "
                    f"{grace_seconds} s; it was killed or lost",
                )
            )

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(
            storage,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds,
            heartbeat_stale_trial_callback=stale,  # Optuna 5's name for `failed_trial_callback`
        )
    return optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction=settings.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped sending heartbeats (a no-op in memory)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_counts(study: optuna.Study) -> Counter[str]:
    """Trials of the study by state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


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


def evaluate(trial: optuna.Trial, X: pd.DataFrame, y: pd.Series, settings: SearchSettings) -> float:
    """The objective: the mean of ``metric`` over CV folds, reported per fold for pruning."""
    import optuna

    s = settings
    params = {**s.base_hyperparameters, **{n: suggest(trial, n, sp) for n, sp in s.space.items()}}
    scores: list[float] = []

    def report(fold: FoldResult) -> None:  # folds arrive in order: one trains at a time
        scores.append(fold.metrics[s.metric])
        trial.set_user_attr("fold_scores", scores)
        trial.report(float(np.mean(scores)), fold.fold)
        if s.pruning and trial.should_prune():
            raise optuna.TrialPruned()

    try:
        cross_validate(
            X,
            y,
            s.task,
            s.model,
            params,
            s.folds,
            s.cv_seed,
            s.model_seed,
            positive_class=s.positive_class,
            metric_names=(s.metric,),
            on_done=report,
        )
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        raise
    return float(np.mean(scores))


def settle(
    study: optuna.Study,
    timeout_seconds: float = GRACE_SECONDS + 2 * HEARTBEAT_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Wait (at most ``timeout_seconds``) until no trial of the study runs, failing stale ones.

    Once every worker step has ended, a trial still RUNNING is a dead worker's, failed as soon
    as its heartbeat is older than the grace period.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        fail_stale_trials(study)
        counts = trial_counts(study)
        if not counts["RUNNING"] or time.monotonic() >= deadline:
            return
        time.sleep(poll_seconds)


def outcome_of(trials: list[TrialResult], direction: str) -> SearchOutcome:
    """Trials in number order and the best completed one (the first of equals, as Optuna)."""
    trials = sorted(trials, key=lambda t: t.number)
    complete = [t for t in trials if t.state == "COMPLETE" and t.score is not None]
    if not complete:
        return SearchOutcome(trials)
    pick = min if direction == "minimize" else max
    best = pick(complete, key=lambda t: t.score)
    return SearchOutcome(trials, dict(best.params), float(best.score), best.number)


def study_outcome(study: optuna.Study, direction: str) -> SearchOutcome:
    """Every finished trial of the study (all workers') and the best completed one."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    return outcome_of([trial_result(t) for t in finished], direction)


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
