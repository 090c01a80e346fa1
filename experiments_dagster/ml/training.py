"""Splitting, cross-validation and fitting of the preprocessing + estimator pipeline."""

from __future__ import annotations

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
    """Fit one pipeline per fold and score it on the fold's validation rows, lazily."""
    splits = cv_splitter(task, folds, cv_seed).split(X, None if task == "regression" else y)
    for i, (train_idx, val_idx) in enumerate(splits):
        pipe = make_pipeline(X, task, model, hyperparameters, model_seed)
        pipe, fit_s = fit_timed(pipe, X.iloc[train_idx], y.iloc[train_idx])
        start = time.perf_counter()
        preds = predict(pipe, X.iloc[val_idx], task)
        pred_s = time.perf_counter() - start
        yield FoldResult(
            fold=i,
            pipeline=pipe,
            n_train=len(train_idx),
            n_validation=len(val_idx),
            metrics=task_metrics(task, np.asarray(y.iloc[val_idx]), preds, positive_class, metric_names),
            timing=Timed(fit_s, pred_s),
        )
