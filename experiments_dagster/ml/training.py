"""Splitting, and fitting the preprocessing + estimator pipeline: a fold's result, the final model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.ml.estimators import EncodedTargetClassifier, build_estimator
from experiments_dagster.ml.metrics import (
    Predictions,
    business_value,
    confusion_counts,
    positive_label,
    predict,
    task_metrics,
    threshold_metrics,
)
from experiments_dagster.ml.preprocess import build_preprocessor


@dataclass(frozen=True)
class TrainTestSplit:
    """Train/test frames of one dataset version."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


# The name pickled asset values stored before the rename refer to: they still load.
Split = TrainTestSplit


def split_dataset(frame: pd.DataFrame, target: str, task: str, test_size: float, seed: int) -> TrainTestSplit:
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
    return TrainTestSplit(
        X_train.reset_index(drop=True),
        X_test.reset_index(drop=True),
        y_train.reset_index(drop=True),
        y_test.reset_index(drop=True),
    )


def make_pipeline(
    X: pd.DataFrame, task: str, model: str, hyperparameters: dict[str, Any], seed: int, fits_at_once: int = 1
) -> Pipeline:
    """Unfitted preprocessing + estimator; classifiers answer in the original labels.

    ``fits_at_once``: how many fits share the CPUs with this one (it sets the estimator's ``n_jobs``).
    """
    estimator: BaseEstimator = build_estimator(model, task, hyperparameters, seed, fits_at_once)
    if task != "regression":
        estimator = EncodedTargetClassifier(estimator)
    return Pipeline([("preprocess", build_preprocessor(X)), ("model", estimator)])


def estimator_of(pipeline: Pipeline) -> BaseEstimator:
    """The (unwrapped) estimator inside a pipeline, fitted or not."""
    step = pipeline.named_steps["model"]
    if isinstance(step, EncodedTargetClassifier):
        return getattr(step, "estimator_", step.estimator)
    return step


def set_estimator_params(pipeline: Pipeline, **params: Any) -> None:
    """Set params on the pipeline's estimator: for a classifier, on the wrapped estimator and on
    its fitted copy, if there is one."""
    step = pipeline.named_steps["model"]
    if isinstance(step, EncodedTargetClassifier):
        step.estimator.set_params(**params)
        if hasattr(step, "estimator_"):
            step.estimator_.set_params(**params)
    else:
        step.set_params(**params)


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


@dataclass
class FinalFit:
    """The final pipeline fitted on the train split, and its scores on the test split."""

    pipeline: Pipeline
    metrics: dict[str, float]
    fit_seconds: float
    predictions: Predictions | None = None  # on the test split, the ones the metrics came from


def final_metrics(
    spec: ExperimentSpec,
    task: str,
    y_true: np.ndarray,
    preds: Predictions,
    metric_names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Test metrics, plus threshold sweep and business value for binary tasks."""
    out = task_metrics(task, y_true, preds, spec.positive_class, metric_names)
    if task == "binary":
        out |= threshold_metrics(y_true, preds, spec.thresholds, spec.positive_class)
        pos = positive_label(preds.classes, spec.positive_class)
        counts = confusion_counts(y_true, preds.y_pred, pos)
        out |= {f"test_{k}": float(v) for k, v in counts.items()}
        out["revenue_impact_usd"] = business_value(counts, spec.business_values.model_dump())
    return out


def score_final_model(
    pipeline: Pipeline,
    fit_seconds: float,
    split: TrainTestSplit,
    task: str,
    spec: ExperimentSpec,
    metric_names: tuple[str, ...] | None = None,
) -> FinalFit:
    """Score the pipeline fitted on the train split on the test split."""
    preds = predict(pipeline, split.X_test, task)
    return FinalFit(
        pipeline, final_metrics(spec, task, np.asarray(split.y_test), preds, metric_names), fit_seconds, preds
    )


def fit_final_model(
    split: TrainTestSplit,
    task: str,
    spec: ExperimentSpec,
    hyperparameters: dict[str, Any],
    metric_names: tuple[str, ...] | None = None,
) -> FinalFit:
    """Fit the pipeline on the train split (alone, with all usable CPUs) and score it on the test split."""
    pipeline = make_pipeline(split.X_train, task, spec.model, hyperparameters, spec.resolved_seeds.model)
    pipeline, fit_s = fit_timed(pipeline, split.X_train, split.y_train)
    return score_final_model(pipeline, fit_s, split, task, spec, metric_names)
