"""Cross-validation of the pipeline: the folds of a train split and, if asked, the refit on all of
it (the final model), several trained at once in threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import build_estimator
from experiments_dagster.ml.fold_pool import FoldCallbacks, FoldPool
from experiments_dagster.ml.metrics import predict, task_metrics

# FoldCancelled: what a fit stopped by ``stop`` raises (callers catch it as ``cv.FoldCancelled``).
from experiments_dagster.ml.parallel import FoldCancelled as FoldCancelled
from experiments_dagster.ml.parallel import fit_stoppable
from experiments_dagster.ml.training import FoldResult, Timed, make_pipeline, set_estimator_params


def cv_splitter(task: str, folds: int, seed: int) -> KFold | StratifiedKFold:
    """Shuffled KFold, stratified for classification."""
    cls = KFold if task == "regression" else StratifiedKFold
    return cls(n_splits=folds, shuffle=True, random_state=seed)


def cv_fold_indices(
    X: pd.DataFrame, y: pd.Series, task: str, folds: int, cv_seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) per fold, in fold order."""
    return list(cv_splitter(task, folds, cv_seed).split(X, None if task == "regression" else y))


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
    pipe, fit_s = fit_stoppable(pipe, X.iloc[train_idx], y.iloc[train_idx], model, hyperparameters, stop)
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


@dataclass
class Refit:
    """The pipeline fitted on every row the folds came from: the final model, not yet scored."""

    pipeline: Pipeline
    fit_seconds: float
    fits_at_once: int = 1


def refit_all(
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    model_seed: int,
    fits_at_once: int = 1,
    stop: threading.Event | None = None,
) -> Refit:
    """Fit the pipeline on all of ``X`` while ``fits_at_once`` fits share the CPUs.

    Its ``n_jobs`` is then set to what a fit alone would get, so the model predicts with every
    usable CPU and logs the same hyperparameters however it was scheduled (XGBoost's trees do
    not depend on the thread count).
    """
    pipe = make_pipeline(X, task, model, hyperparameters, model_seed, fits_at_once)
    pipe, fit_s = fit_stoppable(pipe, X, y, model, hyperparameters, stop)
    alone = build_estimator(model, task, hyperparameters, model_seed).get_params().get("n_jobs")
    if fits_at_once > 1 and alone is not None:
        set_estimator_params(pipe, n_jobs=alone)
    return Refit(pipe, fit_s, fits_at_once)


# --- the folds, scheduled -------------------------------------------------------------------


@dataclass
class CrossValidation:
    """The folds' results in fold order, the refit when one was asked for, and the wall time of
    the pool that trained them all."""

    folds: list[FoldResult]
    refit: Refit | None
    wall_seconds: float


def cross_validate(
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    folds: int,
    cv_seed: int,
    model_seed: int,
    **options: Any,
) -> list[FoldResult]:
    """The folds alone, in fold order (``cross_validate_and_refit`` without the refit)."""
    return cross_validate_and_refit(
        X, y, task, model, hyperparameters, folds, cv_seed, model_seed, refit=False, **options
    ).folds


def cross_validate_and_refit(
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    folds: int,
    cv_seed: int,
    model_seed: int,
    *,
    refit: bool = True,
    positive_class: str | None = None,
    metric_names: tuple[str, ...] | None = None,
    workers: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[FoldResult], None] | None = None,
    on_error: Callable[[int, BaseException], None] | None = None,
    on_abandon: Callable[[int, BaseException], None] | None = None,
) -> CrossValidation:
    """Fit and score one pipeline per fold and, with ``refit``, fit one on all of ``X`` (as
    scikit-learn's ``GridSearchCV(refit=True)`` does), ``workers`` fits at once.

    The refit is the last job of the same pool. Five folds on two CPUs would otherwise end with
    one fold training alone and the final fit after it, each on two threads that scale worse
    than two one-thread fits side by side; in the pool, the refit pairs with the last fold.

    The callbacks concern folds only and run on the calling thread, so they may use clients
    that are not thread-safe: ``on_start(i)`` just before fold ``i`` starts training,
    ``on_done(result)`` once it is scored, ``on_error(i, exc)`` if its fit or scoring raised.
    After an error (in a fold, the refit or a callback) or an interrupt, nothing new starts;
    folds that already finished go to ``on_done``, folds still training to ``on_abandon(i, exc)``
    and are not waited for (an XGBoost fit stops at its next boosting round; other estimators'
    threads run out unobserved); then the error propagates.

    While several fits run, each gets its share of the usable CPUs as ``n_jobs``; the last,
    partial round starts when the CPUs are free and shares all of them.
    """
    began = time.perf_counter()
    indices = cv_fold_indices(X, y, task, folds, cv_seed)
    threaded = isinstance(
        build_estimator(model, task, hyperparameters, model_seed).get_params().get("n_jobs"), int
    )

    def fold_job(i: int, fits_at_once: int, stop: threading.Event) -> FoldResult:
        return fit_fold(
            i, X, y, indices[i], task, model, hyperparameters, model_seed,
            positive_class, metric_names, fits_at_once, stop,
        )  # fmt: skip

    def refit_job(fits_at_once: int, stop: threading.Event) -> Refit:
        return refit_all(X, y, task, model, hyperparameters, model_seed, fits_at_once, stop)

    callbacks = FoldCallbacks(on_start, on_done, on_error, on_abandon)
    pool = FoldPool(len(indices), fold_job, refit_job if refit else None, workers, threaded, callbacks)
    results = pool.run()
    n = len(indices)
    return CrossValidation([results[i] for i in range(n)], results.get(n), time.perf_counter() - began)
