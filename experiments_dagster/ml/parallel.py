"""Running fits side by side: how many at once (CPUs, memory), and stopping one nobody waits for."""

from __future__ import annotations

import functools
import threading
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from experiments_dagster.core import cpus as cpus_from_settings
from experiments_dagster.ml.training import fit_timed, set_estimator_params

# --- how many folds train at once -----------------------------------------------------------

# A fold holds its train rows, their preprocessed float64 matrix and XGBoost's copy: about four
# times the frame's own bytes (measured on the 1,000,000 x 50 workload: ~1.1 GB a fold).
FOLD_MEMORY_FACTOR = 4


def fold_memory_bytes(X: pd.DataFrame, folds: int) -> int:
    """Rough working set of one fold being trained."""
    return int(X.memory_usage(index=False).sum() * (folds - 1) / folds * FOLD_MEMORY_FACTOR)


def fold_workers(
    folds: int,
    fold_bytes: int = 0,
    cpus: int | None = None,
    workers: int | None = None,
    memory_mb: int | None = None,
) -> int:
    """Folds trained at once: ``workers`` if positive, else one per CPU (of ``cpus``) within a
    memory budget of ``memory_mb``. The caller passes the three from the settings
    (``$EXPERIMENTS_CPUS``, ``$EXPERIMENTS_CV_WORKERS``, ``$EXPERIMENTS_CV_MEMORY_MB``); one left
    None is read through ``core.cpus`` for callers that pass none yet.

    Folds are independent, so this is where a CV parallelizes without changing any result.
    Threads suffice: XGBoost and NumPy release the GIL while they compute. Each extra fold in
    flight costs another fold's working set (``fold_bytes``), so by default the extra ones must
    fit in the memory budget (512 MB): big data trains its folds one after another, with all
    CPUs for each fit, which is where XGBoost's own threads already do well.
    """
    cpus = cpus_from_settings.usable_cpus() if cpus is None else cpus
    explicit = cpus_from_settings.cv_workers(cpus) if workers is None else workers
    if explicit:
        return min(explicit, folds)
    budget = (cpus_from_settings.cv_memory_mb() if memory_mb is None else memory_mb) * 2**20
    by_memory = 1 + (budget // fold_bytes if fold_bytes > 0 else folds)
    return max(1, min(folds, cpus, by_memory))


# --- stopping a fit nobody waits for any more -----------------------------------------------


class FoldCancelled(Exception):
    """Raised inside a fold's fit once the cross-validation has stopped waiting for it."""


@functools.cache
def _stop_callback_class() -> type:
    import xgboost  # imported here: the code location loads without paying for it

    class StopWhenSet(xgboost.callback.TrainingCallback):
        """Ends an XGBoost fit at its next boosting round once ``event`` is set."""

        def __init__(self, event: threading.Event) -> None:
            super().__init__()
            self.event = event

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if self.event.is_set():
                raise FoldCancelled(f"stopped at boosting round {epoch}")
            return False

        def __deepcopy__(self, memo: dict) -> StopWhenSet:
            return self  # sklearn's clone deep-copies params; the event must stay shared

    return StopWhenSet


def fit_stoppable(
    pipe: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    model: str,
    hyperparameters: dict[str, Any],
    stop: threading.Event | None,
) -> tuple[Pipeline, float]:
    """Fit with the stop hook on an XGBoost estimator (when it has no callbacks of its own);
    the fitted pipeline carries no trace of the hook."""
    stoppable = stop is not None and model == "xgboost" and "callbacks" not in hyperparameters
    if stoppable:
        set_estimator_params(pipe, callbacks=[_stop_callback_class()(stop)])
    try:
        return fit_timed(pipe, X, y)
    finally:
        if stoppable:
            set_estimator_params(pipe, callbacks=None)
