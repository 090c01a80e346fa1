"""Hyperparameter search over CV folds with Optuna (seeded TPE sampler, median pruning)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments_dagster.ml.cv import cross_validate
from experiments_dagster.ml.training import FoldResult
from experiments_dagster.spec import ParamSpace

if TYPE_CHECKING:
    import optuna


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


@dataclass(frozen=True)
class SearchOutcome:
    """Every trial in order, and the best params/score among completed trials."""

    trials: list[TrialResult]
    best_params: dict[str, Any] = field(default_factory=dict)
    best_score: float | None = None
    best_trial: int | None = None


def suggest(trial: optuna.Trial, name: str, space: ParamSpace) -> Any:
    """Draw one hyperparameter from its space."""
    if space.type == "choice":
        return trial.suggest_categorical(name, list(space.choices or ()))
    if space.type == "int":
        step = int(space.step) if space.step else 1
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_float(name, float(space.low), float(space.high), step=space.step, log=space.log)


def _result(trial: optuna.trial.FrozenTrial) -> TrialResult:
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
        error=trial.user_attrs.get("error", ""),
    )


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
    """Optimize ``metric`` (mean over CV folds of the train split); report each finished trial.

    The same seed, data and settings give the same trial sequence (single-threaded TPE).
    """
    import optuna  # imported here: the code location loads without paying for it

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = {**base_hyperparameters, **{n: suggest(trial, n, s) for n, s in space.items()}}
        scores: list[float] = []

        def report(fold: FoldResult) -> None:  # folds arrive in order: one trains at a time
            scores.append(fold.metrics[metric])
            trial.set_user_attr("fold_scores", scores)
            trial.report(float(np.mean(scores)), fold.fold)
            if pruning and trial.should_prune():
                raise optuna.TrialPruned()

        try:
            cross_validate(
                X,
                y,
                task,
                model,
                params,
                folds,
                cv_seed,
                model_seed,
                positive_class=positive_class,
                metric_names=(metric,),
                on_done=report,
            )
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            raise
        return float(np.mean(scores))

    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if pruning
        else optuna.pruners.NopPruner(),
    )
    callbacks = [lambda _study, frozen: on_trial(_result(frozen))] if on_trial else []
    study.optimize(
        objective, n_trials=n_trials, timeout=timeout_seconds, catch=(Exception,), callbacks=callbacks
    )
    trials = [_result(t) for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return SearchOutcome(trials)
    best = study.best_trial
    return SearchOutcome(trials, dict(best.params), float(best.value), best.number)
