"""A search's Optuna study and its trials as plain data.

``SearchSettings`` (what a worker needs), ``TrialResult`` and ``SearchOutcome`` (trials as plain
data), opening the study (in memory, or shared through an RDB storage with heartbeats, its
seeded TPE sampler and median pruner), failing stale trials, counting trials by state, waiting
until none runs (``settle``), and the best completed trial. Running trials into the study:
``search.py``.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from experiments_dagster.core.spec import ParamSpace

if TYPE_CHECKING:
    import optuna

# A running trial's worker writes a heartbeat every HEARTBEAT_SECONDS; a trial without one for
# GRACE_SECONDS (its worker was killed or lost) is failed by the next worker that looks.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
POLL_SECONDS = 2.0  # how often a worker waiting for other workers' last trials looks again
SLOT_ATTR = "worker.slot"  # user attribute: the worker slot that ran the trial
WORKER_ATTR = "worker"  # user attribute: the process that ran it, `<hostname>:<pid>` (as the MLflow tag)


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
