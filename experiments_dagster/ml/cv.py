"""Cross-validation of the pipeline: the folds of a train split, several trained at once in threads."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier, build_estimator, usable_cpus
from experiments_dagster.ml.metrics import predict, task_metrics
from experiments_dagster.ml.training import FoldResult, Timed, fit_timed, make_pipeline
from experiments_dagster.paths import env_int

log = logging.getLogger(__name__)


def cv_splitter(task: str, folds: int, seed: int) -> KFold | StratifiedKFold:
    """Shuffled KFold, stratified for classification."""
    cls = KFold if task == "regression" else StratifiedKFold
    return cls(n_splits=folds, shuffle=True, random_state=seed)


def cv_fold_indices(
    X: pd.DataFrame, y: pd.Series, task: str, folds: int, cv_seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) per fold, in fold order."""
    return list(cv_splitter(task, folds, cv_seed).split(X, None if task == "regression" else y))


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


def _set_callbacks(pipeline: Pipeline, callbacks: list | None) -> None:
    """XGBoost's ``callbacks`` on the pipeline's estimator (and, for a classifier, its fitted copy)."""
    step = pipeline.named_steps["model"]
    if isinstance(step, EncodedTargetClassifier):
        step.estimator.set_params(callbacks=callbacks)
        if hasattr(step, "estimator_"):
            step.estimator_.set_params(callbacks=callbacks)
    else:
        step.set_params(callbacks=callbacks)


def fit_fold(
    fold: int,
    X: pd.DataFrame,
    y: pd.Series,
    rows: tuple[np.ndarray, np.ndarray],
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    model_seed: int,
    positive_class: str | None = None,
    metric_names: tuple[str, ...] | None = None,
    fits_at_once: int = 1,
    stop: threading.Event | None = None,
) -> FoldResult:
    """Fit one fold's pipeline on its train rows and score it on its validation rows.

    ``fits_at_once`` folds share the CPUs (it sets ``n_jobs``). An XGBoost fit ends with
    ``FoldCancelled`` at its next boosting round once ``stop`` is set; the returned pipeline
    carries no trace of that hook.
    """
    train_idx, val_idx = rows
    pipe = make_pipeline(X, task, model, hyperparameters, model_seed, fits_at_once)
    stoppable = stop is not None and model == "xgboost" and "callbacks" not in hyperparameters
    if stoppable:
        _set_callbacks(pipe, [_stop_callback_class()(stop)])
    try:
        pipe, fit_s = fit_timed(pipe, X.iloc[train_idx], y.iloc[train_idx])
    finally:
        if stoppable:
            _set_callbacks(pipe, None)
    start = time.perf_counter()
    preds = predict(pipe, X.iloc[val_idx], task)
    pred_s = time.perf_counter() - start
    return FoldResult(
        fold=fold,
        pipeline=pipe,
        n_train=len(train_idx),
        n_validation=len(val_idx),
        metrics=task_metrics(task, np.asarray(y.iloc[val_idx]), preds, positive_class, metric_names),
        timing=Timed(fit_s, pred_s),
    )


# --- how many folds train at once -----------------------------------------------------------

CV_WORKERS_ENV = "EXPERIMENTS_CV_WORKERS"
CV_MEMORY_ENV = "EXPERIMENTS_CV_MEMORY_MB"
DEFAULT_CV_MEMORY_MB = 512
# A fold holds its train rows, their preprocessed float64 matrix and XGBoost's copy: about four
# times the frame's own bytes (measured on the 1,000,000 x 50 workload: ~1.1 GB a fold).
FOLD_MEMORY_FACTOR = 4


def fold_memory_bytes(X: pd.DataFrame, folds: int) -> int:
    """Rough working set of one fold being trained."""
    return int(X.memory_usage(index=False).sum() * (folds - 1) / folds * FOLD_MEMORY_FACTOR)


def fold_workers(folds: int, fold_bytes: int = 0) -> int:
    """Folds trained at once: ``$EXPERIMENTS_CV_WORKERS``, else one per usable CPU within a memory budget.

    Folds are independent, so this is where a CV parallelizes without changing any result.
    Threads suffice: XGBoost and NumPy release the GIL while they compute. Each extra fold in
    flight costs another fold's working set (``fold_bytes``), so by default the extra ones must
    fit in ``$EXPERIMENTS_CV_MEMORY_MB`` (512): big data trains its folds one after another, with
    all CPUs for each fit, which is where XGBoost's own threads already do well.
    """
    cpus = usable_cpus()
    explicit = env_int(
        CV_WORKERS_ENV,
        0,
        1,
        "a positive integer, the number of folds to train at once (1 = one after another)",
        f"or unset it for one per CPU ({cpus}) within ${CV_MEMORY_ENV}.",
    )
    if explicit:
        return min(explicit, folds)
    budget = (
        env_int(
            CV_MEMORY_ENV,
            DEFAULT_CV_MEMORY_MB,
            0,
            "a whole number of MB that folds trained beside the first may use (0 = one fold at a time)",
            f"or unset it for {DEFAULT_CV_MEMORY_MB}.",
        )
        * 2**20
    )
    by_memory = 1 + (budget // fold_bytes if fold_bytes > 0 else folds)
    return max(1, min(folds, cpus, by_memory))


# --- the folds, scheduled -------------------------------------------------------------------


def cross_validate(
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    folds: int,
    cv_seed: int,
    model_seed: int,
    *,
    positive_class: str | None = None,
    metric_names: tuple[str, ...] | None = None,
    workers: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[FoldResult], None] | None = None,
    on_error: Callable[[int, BaseException], None] | None = None,
    on_abandon: Callable[[int, BaseException], None] | None = None,
) -> list[FoldResult]:
    """Fit and score one pipeline per fold, ``workers`` folds at once; the results in fold order.

    The callbacks run on the calling thread, so they may use clients that are not thread-safe:
    ``on_start(i)`` just before fold ``i`` starts training, ``on_done(result)`` once it is
    scored, ``on_error(i, exc)`` if its fit or scoring raised. After an error (in a fold or in a
    callback) or an interrupt, nothing new starts; folds that already finished go to
    ``on_done``, folds still training to ``on_abandon(i, exc)`` and are not waited for (an
    XGBoost fit stops at its next boosting round; other estimators' threads run out unobserved);
    then the error propagates.

    While several folds train, each fit gets its share of the usable CPUs as ``n_jobs``; the
    last, partial round starts when the CPUs are free and shares all of them.
    """
    indices = cv_fold_indices(X, y, task, folds, cv_seed)
    n = len(indices)
    workers = max(1, min(workers, n))
    threaded = isinstance(
        build_estimator(model, task, hyperparameters, model_seed).get_params().get("n_jobs"), int
    )
    stop = threading.Event()
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cv-fold")
    running: dict[cf.Future[FoldResult], int] = {}
    results: dict[int, FoldResult] = {}
    tail = n - n % workers  # folds from here on are the last, partial round
    opening: int | None = None  # started (on_start returned) but not yet handed to the pool
    try:
        while len(results) < n:
            while len(results) + len(running) < n and len(running) < workers:
                i = len(results) + len(running)
                if i >= tail and running and threaded:
                    break  # the last, partial round waits for the CPUs, then shares all of them
                fits_at_once = workers if i < tail else n - tail
                if on_start:
                    on_start(i)
                opening = i
                running[
                    pool.submit(
                        fit_fold,
                        i,
                        X,
                        y,
                        indices[i],
                        task,
                        model,
                        hyperparameters,
                        model_seed,
                        positive_class,
                        metric_names,
                        fits_at_once,
                        stop,
                    )
                ] = i
                opening = None
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=running.__getitem__):
                i = running.pop(future)
                error = future.exception()
                if error is not None:
                    if on_error:
                        on_error(i, error)
                    raise error
                results[i] = future.result()
                if on_done:
                    on_done(results[i])
    except BaseException as exc:
        stop.set()
        # Returns at once: only folds already training remain, and those are not waited for.
        pool.shutdown(wait=False, cancel_futures=True)
        _settle(running, opening, exc, on_done, on_error, on_abandon)
        raise
    pool.shutdown()
    return [results[i] for i in range(n)]


def _settle(
    running: dict[cf.Future[FoldResult], int],
    opening: int | None,
    exc: BaseException,
    on_done: Callable[[FoldResult], None] | None,
    on_error: Callable[[int, BaseException], None] | None,
    on_abandon: Callable[[int, BaseException], None] | None,
) -> None:
    """After a failure or an interrupt: report every fold that started and was not yet reported."""
    pending = sorted(
        [(i, f) for f, i in running.items()] + ([(opening, None)] if opening is not None else []),
        key=lambda p: p[0],
    )
    for i, future in pending:
        finished = future is not None and future.done() and not future.cancelled()
        error = future.exception() if finished else None
        try:
            if not finished or isinstance(error, FoldCancelled):
                if on_abandon:
                    on_abandon(i, exc)
            elif error is not None:
                if on_error:
                    on_error(i, error)
            elif on_done:
                on_done(future.result())
        except Exception:  # the first error is the one to raise; this one is only logged
            log.warning("Could not report fold %d after %s", i, type(exc).__name__, exc_info=True)
