"""One trial's objective: its hyperparameters drawn from the search space, and its score.

The score is the mean of the search's metric over CV folds of the train split, reported fold
by fold so that a poor trial can be pruned early. Running trials into a study: ``search.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.ml.cv import cross_validate
from experiments_dagster.ml.search_study import SearchSettings
from experiments_dagster.ml.training import FoldResult

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, name: str, space: ParamSpace) -> Any:
    """Draw one hyperparameter from its space."""
    if space.type == "choice":
        return trial.suggest_categorical(name, list(space.choices or ()))
    if space.type == "int":
        step = int(space.step) if space.step else 1
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_float(name, float(space.low), float(space.high), step=space.step, log=space.log)


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
