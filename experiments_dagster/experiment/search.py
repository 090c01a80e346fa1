"""Logging a hyperparameter search: one nested run per trial, the best on the parent.

A search is three steps (``defs/search_ops.py``): ``plan_search`` logs its settings and creates
the study, each ``run_search_worker`` runs trials into it (one nested run per finished trial),
and ``collect_search`` reads the study and logs the best params, the trials table and the plot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.profile import OPTUNA_STORAGE_ENV, PRODUCTION, PROFILE_ENV
from experiments_dagster.core.spec import search_metric
from experiments_dagster.experiment.values import (
    RunRef,
    SearchPlan,
    SearchResult,
    SearchSlot,
    Splits,
    WorkerTrials,
)
from experiments_dagster.ml import search as ml_search
from experiments_dagster.ml import search_study
from experiments_dagster.ml.plots import plot_optimization_history
from experiments_dagster.ml.search_study import SearchOutcome, SearchSettings, TrialResult
from experiments_dagster.tracking import tags as run_tags
from experiments_dagster.tracking.liveness import worker_id
from experiments_dagster.tracking.store import Tracker

# Optuna trial state -> MLflow run status (a pruned trial was stopped early on purpose).
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
TRIALS_TABLE = "search_trials.csv"
HISTORY_PLOT = "optimization_history.png"
IN_MEMORY = "in-memory"


def study_name(splits: Splits) -> str:
    """One study per experiment attempt: a retry of the attempt resumes it, a new attempt starts afresh."""
    return f"{splits.spec.experiment}-{splits.run.run_id}"


def search_settings(splits: Splits) -> SearchSettings:
    """The search's settings, resolved from the spec (metric and direction by task, seeds)."""
    spec, search = splits.spec, splits.spec.search
    metric, direction = search_metric(search, splits.task)
    seeds = spec.resolved_seeds
    return SearchSettings(
        task=splits.task,
        model=spec.model,
        base_hyperparameters=dict(spec.hyperparameters),
        space=dict(search.space),
        metric=metric,
        direction=direction,
        n_trials=search.n_trials,
        timeout_seconds=search.timeout_seconds,
        seed=search.seed if search.seed is not None else spec.seed,
        folds=search.cv_folds or spec.cv_folds,
        cv_seed=seeds.cv,
        model_seed=seeds.model,
        positive_class=spec.positive_class,
        pruning=search.pruning,
    )


def no_shared_storage(what: str) -> ExperimentInputError:
    """The error for a search spread over workers without a storage they share."""
    return ExperimentInputError(
        f"{what} needs a shared Optuna storage, and {OPTUNA_STORAGE_ENV} is not set: set it to an "
        f"SQLAlchemy URL of a database every worker reaches (read on the production profile, "
        f"{PROFILE_ENV}={PRODUCTION}; `make stack-up` sets both in .stack/env), or set "
        "`search.workers: 1` to search in one step with an in-memory study."
    )


def plan_search(tracker: Tracker, splits: Splits, storage: str | None, dagster_run_id: str) -> SearchPlan:
    """Log the search's settings on the parent and create its study (in the shared storage, if any)."""
    run_id, search = splits.run.run_id, splits.spec.search
    if not search.enabled:
        tracker.log_params(run_id, {"search.enabled": "false"})
        return SearchPlan(splits.run, enabled=False)
    if search.workers > 1 and storage is None:
        raise no_shared_storage(f"search.workers={search.workers} (parallel search steps sharing one study)")
    settings = search_settings(splits)
    name = study_name(splits)
    tracker.log_params(
        run_id,
        {
            "search.enabled": "true",
            "search.metric": settings.metric,
            "search.direction": settings.direction,
            "search.n_trials": search.n_trials,
            "search.seed": settings.seed,
            "search.timeout_seconds": search.timeout_seconds,
            "search.cv_folds": settings.folds,
            "search.pruning": search.pruning,
            "search.space": json.dumps(
                {k: v.model_dump(exclude_none=True) for k, v in search.space.items()}, default=str
            ),
            "search.sampler": "optuna.TPESampler",
            "search.pruner": "optuna.MedianPruner" if search.pruning else "none",
            "search.workers": search.workers,
            "search.study": name,
            # The backend only: the URL holds a password.
            "search.storage": storage.split(":", 1)[0].split("+")[0] if storage else IN_MEMORY,
        },
    )
    if storage is not None:  # created here, once, so that workers starting together only load it
        search_study.open_study(settings, storage=storage, study_name=name)
    else:  # an in-memory study starts again at trial 0: an earlier attempt's trial runs are stale
        supersede_trial_runs(tracker, splits.run, dagster_run_id)
    return SearchPlan(splits.run, True, name, settings, search.workers, shared=storage is not None)


def supersede_trial_runs(tracker: Tracker, parent: RunRef, dagster_run_id: str) -> None:
    """Earlier trial runs of this parent are tagged and deleted (a re-run of an in-memory search)."""
    for run in trial_runs(tracker, parent).values():
        tracker.set_tags(run, {"superseded_by.dagster_run_id": dagster_run_id})
        tracker.client.delete_run(run)


def trial_runs(tracker: Tracker, parent: RunRef) -> dict[int, str]:
    """The nested trial runs of ``parent``, by trial number."""
    runs = tracker.client.search_runs(
        [parent.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.run_id}' and tags.`trial.number` != ''",
        max_results=10_000,
    )
    return {int(r.data.tags["trial.number"]): r.info.run_id for r in runs}


def log_trial(
    tracker: Tracker, parent: RunRef, tags: Mapping[str, str], metric: str, trial: TrialResult
) -> str:
    """A nested run ``trial-<n>``: params, the metric per fold (as steps), its mean, its state."""
    run = tracker.client.create_run(
        parent.experiment_id,
        start_time=trial.started_ms,
        tags={
            **tags,
            "mlflow.parentRunId": parent.run_id,
            "mlflow.runName": f"trial-{trial.number}",
            "trial.number": str(trial.number),
            "trial.state": trial.state,
            **({"trial.slot": str(trial.slot)} if trial.slot is not None else {}),
            **({run_tags.ERROR_MESSAGE: trial.error} if trial.error else {}),
        },
        run_name=f"trial-{trial.number}",
    )
    run_id = run.info.run_id
    tracker.log_params(run_id, {**trial.params, "trial.number": trial.number})
    for step, score in enumerate(trial.fold_scores):
        tracker.log_metrics(run_id, {metric: score}, step=step)
    if trial.score is not None:
        tracker.log_metrics(run_id, {f"cv_{metric}_mean": trial.score})
    tracker.client.set_terminated(run_id, TRIAL_STATUS.get(trial.state, "FAILED"), end_time=trial.ended_ms)
    return run_id


def run_search_worker(
    tracker: Tracker,
    splits: Splits,
    slot: SearchSlot,
    tags: Mapping[str, str],
    storage: str | None,
    lock: ml_search.TrialLock,
) -> WorkerTrials:
    """Run this slot's share of the trials; each trial it finishes (or fails as stale) is logged."""
    plan = slot.plan
    if not plan.enabled or plan.settings is None:
        return WorkerTrials(slot)
    if plan.shared and storage is None:
        raise no_shared_storage(f"search worker {slot.slot} of study {plan.study_name!r}")
    run_ids: dict[int, str] = {}

    def on_trial(trial: TrialResult) -> None:
        run_ids[trial.number] = log_trial(tracker, splits.run, tags, plan.settings.metric, trial)

    trials = ml_search.search_worker(
        splits.split.X_train,
        splits.split.y_train,
        plan.settings,
        storage=storage if plan.shared else None,
        study_name=plan.study_name,
        lock=lock,
        slot=slot.slot,
        worker=worker_id(),
        on_trial=on_trial,
    )
    return WorkerTrials(slot, trials, run_ids)


def search_outcome(
    tracker: Tracker,
    splits: Splits,
    plan: SearchPlan,
    results: list[WorkerTrials],
    storage: str | None,
    tags: Mapping[str, str],
) -> tuple[SearchOutcome, dict[int, str]]:
    """Every trial of the search and the nested run of each: the shared study's (a trial that no
    worker logged, e.g. one failed as stale just now, is logged here), or the one worker's."""
    settings = plan.settings
    if settings is None:
        raise ValueError("a search plan that is enabled carries its settings")
    if not plan.shared:
        trials = [t for r in results for t in r.trials]
        run_ids = {n: run for r in results for n, run in r.trial_run_ids.items()}
        return search_study.outcome_of(trials, settings.direction), run_ids
    if storage is None:
        raise no_shared_storage(f"collecting study {plan.study_name!r}")
    study = search_study.open_study(settings, storage=storage, study_name=plan.study_name)
    search_study.settle(study)
    outcome = search_study.study_outcome(study, settings.direction)
    run_ids = trial_runs(tracker, splits.run)
    for trial in outcome.trials:
        if trial.number not in run_ids:
            run_ids[trial.number] = log_trial(tracker, splits.run, tags, settings.metric, trial)
    return outcome, run_ids


def check_not_given_up(outcome: SearchOutcome) -> None:
    """Fail, with the last trial's error, a search that stopped because its trials kept failing."""
    in_a_row = ml_search.failed_in_a_row([(t.number, t.state) for t in outcome.trials])
    if in_a_row >= ml_search.MAX_FAILED_IN_A_ROW:
        last = next(t.error for t in reversed(outcome.trials) if t.state == "FAIL")
        raise ExperimentInputError(
            f"The search stopped: its last {in_a_row} trials failed in a row (at most "
            f"{ml_search.MAX_FAILED_IN_A_ROW} may), {len(outcome.trials)} trials ran. The last error: "
            f"{last or '(not recorded)'}. Fix `search.space` or the data; every error is in {TRIALS_TABLE}."
        )


def collect_search(
    tracker: Tracker,
    splits: Splits,
    results: list[WorkerTrials],
    storage: str | None,
    tags: Mapping[str, str],
) -> SearchResult:
    """Log the search's result on the parent: trials table, history plot, best params and score."""
    plan = results[0].slot.plan
    if not plan.enabled or plan.settings is None:
        return SearchResult(splits.run, enabled=False)
    metric, direction = plan.settings.metric, plan.settings.direction
    outcome, run_ids = search_outcome(tracker, splits, plan, results, storage, tags)
    table = pd.DataFrame(
        [
            {
                "trial": t.number,
                "state": t.state,
                "score": t.score,
                **t.params,
                "fold_scores": json.dumps(t.fold_scores),
                "worker_slot": t.slot,
                "error": t.error,
            }
            for t in outcome.trials
        ]
    )
    tracker.log_bytes(splits.run.run_id, TRIALS_TABLE, table.to_csv(index=False).encode())
    png = tracker.log_figure(
        splits.run.run_id, plot_optimization_history(outcome, metric, direction), HISTORY_PLOT
    )
    check_not_given_up(outcome)
    if outcome.best_trial is None:
        raise RuntimeError(
            f"No search trial completed ({len(outcome.trials)} ran); see {TRIALS_TABLE} for errors."
        )
    tracker.log_params(
        splits.run.run_id,
        {
            "search.trials_run": len(outcome.trials),
            "search.best_trial": outcome.best_trial,
            **{f"best.{k}": v for k, v in outcome.best_params.items()},
        },
    )
    tracker.log_metrics(
        splits.run.run_id, {"best_score": outcome.best_score, f"best_cv_{metric}_mean": outcome.best_score}
    )
    return SearchResult(
        splits.run,
        enabled=True,
        best_params=outcome.best_params,
        best_score=outcome.best_score,
        metric=metric,
        trials=outcome.trials,
        trial_run_ids=[run_ids[t.number] for t in outcome.trials if t.number in run_ids],
        history_png=png,
    )
