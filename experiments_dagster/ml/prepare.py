"""From a raw frame and a spec to a checked train/test split, before anything is logged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.ml.dataset import check_target, drop_missing_target, infer_task
from experiments_dagster.ml.estimators import build_estimator
from experiments_dagster.ml.training import Split, split_dataset
from experiments_dagster.spec import ExperimentSpec


@dataclass(frozen=True)
class Prepared:
    """A validated experiment: its task, split and how many rows lost their target."""

    task: str
    split: Split
    rows_dropped: int
    frame: pd.DataFrame


def prepare_experiment(frame: pd.DataFrame, spec: ExperimentSpec, path: Path) -> Prepared:
    """Drop rows without a target, infer and check the task, check the model, split.

    Every user-fixable problem raises ``ExperimentInputError`` here, before any training.
    """
    clean, dropped = drop_missing_target(frame, spec.target, path)
    task = spec.task or infer_task(clean[spec.target])
    check_target(clean[spec.target], task, spec.cv_folds, path, spec.target)
    build_estimator(spec.model, task, spec.hyperparameters, spec.resolved_seeds.model)
    try:
        split = split_dataset(clean, spec.target, task, spec.test_size, spec.resolved_seeds.split)
    except ValueError as exc:
        raise ExperimentInputError(
            f"{path} cannot be split with test_size={spec.test_size}: {exc}. Add rows or change `test_size`."
        ) from exc
    check_cv_feasible(split.y_train, task, spec.cv_folds, path)
    return Prepared(task=task, split=split, rows_dropped=dropped, frame=clean)


def check_cv_feasible(y_train: pd.Series, task: str, folds: int, path: Path) -> None:
    """The train split must leave every class (or, for regression, 2 rows) per CV fold."""
    if task == "regression":
        if len(y_train) < 2 * folds:
            raise ExperimentInputError(
                f"{path}: the train split has {len(y_train)} rows, too few for {folds} CV folds "
                f"(need {2 * folds}). Add rows, lower `cv_folds` or lower `test_size`."
            )
        return
    counts = y_train.value_counts()
    if counts.min() < folds:
        raise ExperimentInputError(
            f"{path}: after the test split, class {counts.idxmin()!r} has {int(counts.min())} train rows, "
            f"fewer than the {folds} CV folds. Add rows, lower `cv_folds` or lower `test_size`."
        )
