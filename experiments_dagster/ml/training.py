"""Splitting, cross-validation and fitting of the preprocessing + estimator pipeline."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier, build_estimator
from experiments_dagster.ml.metrics import predict, task_metrics
from experiments_dagster.ml.preprocess import build_preprocessor
from experiments_dagster.paths import env_int


@dataclass(frozen=True)
class Split:
    """Train/test frames of one dataset version."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def split_dataset(
    frame: pd.DataFrame, target: str, task: str, test_size: float, seed: int
) -> Split:
    """Hold out a test set, stratified by class for classification."""
    X = frame.drop(columns=[target])
    y = frame[target]
    X_train, X_test, y_train, y_test = train_test_split(
        X,
        y,
        test_size=test_size,
        random_state=seed,
        stratify=None if task == "regression" else y,
    )
    return Split(
        X_train.reset_index(drop=True),
        X_test.reset_index(drop=True),
        y_train.reset_index(drop=True),
        y_test.reset_index(drop=True),
    )


def make_pipeline(
    X: pd.DataFrame, task: str, model: str, hyperparameters: dict[str, Any], seed: int
) -> Pipeline:
    """Unfitted preprocessing + estimator; classifiers answer in the original labels."""
    estimator: BaseEstimator = build_estimator(model, task, hyperparameters, seed)
    if task != "regression":
        estimator = EncodedTargetClassifier(estimator)
    return Pipeline([("preprocess", build_preprocessor(X)), ("model", estimator)])


def estimator_of(pipeline: Pipeline) -> BaseEstimator:
    """The (unwrapped) estimator inside a pipeline, fitted or not."""
    step = pipeline.named_steps["model"]
    if isinstance(step, EncodedTargetClassifier):
        return getattr(step, "estimator_", step.estimator)
    return step


@dataclass
class Timed:
    """Seconds spent fitting and predicting: the floor under our overhead."""

    fit_seconds: float = 0.0
    predict_seconds: float = 0.0


def fit_timed(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> tuple[Pipeline, float]:
    """Fit and return (pipeline, seconds)."""
    start = time.perf_counter()
    pipeline.fit(X, y)
    return pipeline, time.perf_counter() - start


@dataclass
class FoldResult:
    """One CV fold: its fitted pipeline, row counts, metrics and timing."""

    fold: int
    pipeline: Pipeline
    n_train: int
    n_validation: int
    metrics: dict[str, float]
    timing: Timed = field(default_factory=Timed)


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
) -> FoldResult:
    """Fit one fold's pipeline on its train rows and score it on its validation rows."""
    train_idx, val_idx = rows
    pipe = make_pipeline(X, task, model, hyperparameters, model_seed)
    pipe, fit_s = fit_timed(pipe, X.iloc[train_idx], y.iloc[train_idx])
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


def iter_cross_validation(
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    model: str,
    hyperparameters: dict[str, Any],
    folds: int,
    cv_seed: int,
    model_seed: int,
    positive_class: str | None = None,
    metric_names: tuple[str, ...] | None = None,
) -> Iterator[FoldResult]:
    """Fit one pipeline per fold and score it on the fold's validation rows, lazily, one at a time."""
    for i, rows in enumerate(cv_fold_indices(X, y, task, folds, cv_seed)):
        yield fit_fold(i, X, y, rows, task, model, hyperparameters, model_seed, positive_class, metric_names)


# --- how many folds train at once -----------------------------------------------------------

CV_WORKERS_ENV = "EXPERIMENTS_CV_WORKERS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        CV_WORKERS_ENV, 0, 1, "a positive integer, the number of folds to train at once (1 = one after another)",
        f"or unset it for one per CPU ({cpus}) within ${CV_MEMORY_ENV}.",
    )
    if explicit:
        return min(explicit, folds)
    budget = env_int(
        CV_MEMORY_ENV, DEFAULT_CV_MEMORY_MB, 0,
        "a whole number of MB that folds trained beside the first may use (0 = one fold at a time)",
        f"or unset it for {DEFAULT_CV_MEMORY_MB}.",
    ) * 2**20
    by_memory = 1 + (budget // fold_bytes if fold_bytes > 0 else folds)
    return max(1, min(folds, cpus, by_memory))


def fold_threads(n_jobs: Any, workers: int) -> Any:
    """Threads per fold fit when ``workers`` folds share the CPUs (never more than ``n_jobs`` asked).

    One fit per core beats several multi-threaded fits fighting for the same cores: XGBoost's
    threads wait for each other at every tree level, so an oversubscribed fit stalls.
    """
    if workers <= 1 or n_jobs is None or not isinstance(n_jobs, int) or isinstance(n_jobs, bool):
        return n_jobs
    share = max(1, usable_cpus() // workers)
    return share if n_jobs <= 0 else min(n_jobs, share)
