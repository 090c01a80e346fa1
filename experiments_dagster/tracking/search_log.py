"""Logging a hyperparameter search: one nested run per trial, the best on the parent."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd

from experiments_dagster.ml.plots import plot_optimization_history
from experiments_dagster.ml.search import SearchOutcome, TrialResult, run_search
from experiments_dagster.spec import search_metric
from experiments_dagster.tracking.store import Tracker
from experiments_dagster.values import SearchResult, Splits

# Optuna trial state -> MLflow run status (a pruned trial was stopped early on purpose).
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
TRIALS_TABLE = "search_trials.csv"
HISTORY_PLOT = "optimization_history.png"


def log_trial(
    tracker: Tracker, splits: Splits, tags: Mapping[str, str], metric: str, trial: TrialResult
) -> str:
    """A nested run ``trial-<n>``: params, the metric per fold (as steps), its mean, its state."""
    run = tracker.client.create_run(
        splits.run.experiment_id,
        start_time=trial.started_ms,
        tags={
            **tags,
            "mlflow.parentRunId": splits.run.run_id,
            "mlflow.runName": f"trial-{trial.number}",
            "trial.number": str(trial.number),
            "trial.state": trial.state,
            **({tags.ERROR_MESSAGE: trial.error} if trial.error else {}),
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


def log_search(tracker: Tracker, splits: Splits, tags: Mapping[str, str]) -> SearchResult:
    """Run the configured search (or record that none was asked for) in the parent run."""
    spec, s = splits.spec, splits.split
    search = spec.search
    if not search.enabled:
        tracker.log_params(splits.run.run_id, {"search.enabled": "false"})
        return SearchResult(splits.run, enabled=False)
    metric, direction = search_metric(search, splits.task)
    seeds = spec.resolved_seeds
    seed = search.seed if search.seed is not None else spec.seed
    tracker.log_params(
        splits.run.run_id,
        {
            "search.enabled": "true",
            "search.metric": metric,
            "search.direction": direction,
            "search.n_trials": search.n_trials,
            "search.seed": seed,
            "search.timeout_seconds": search.timeout_seconds,
            "search.cv_folds": search.cv_folds or spec.cv_folds,
            "search.pruning": search.pruning,
            "search.space": json.dumps(
                {k: v.model_dump(exclude_none=True) for k, v in search.space.items()}, default=str
            ),
            "search.sampler": "optuna.TPESampler",
            "search.pruner": "optuna.MedianPruner" if search.pruning else "none",
        },
    )
    trial_runs: list[str] = []
    outcome: SearchOutcome = run_search(
        s.X_train,
        s.y_train,
        task=splits.task,
        model=spec.model,
        base_hyperparameters=spec.hyperparameters,
        space=dict(search.space),
        metric=metric,
        direction=direction,
        n_trials=search.n_trials,
        timeout_seconds=search.timeout_seconds,
        seed=seed,
        folds=search.cv_folds or spec.cv_folds,
        cv_seed=seeds.cv,
        model_seed=seeds.model,
        positive_class=spec.positive_class,
        pruning=search.pruning,
        on_trial=lambda t: trial_runs.append(log_trial(tracker, splits, tags, metric, t)),
    )
    table = pd.DataFrame(
        [
            {
                "trial": t.number,
                "state": t.state,
                "score": t.score,
                **t.params,
                "fold_scores": json.dumps(t.fold_scores),
                "error": t.error,
            }
            for t in outcome.trials
        ]
    )
    tracker.log_bytes(splits.run.run_id, TRIALS_TABLE, table.to_csv(index=False).encode())
    png = tracker.log_figure(
        splits.run.run_id, plot_optimization_history(outcome, metric, direction), HISTORY_PLOT
    )
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
        trial_run_ids=trial_runs,
        history_png=png,
    )
