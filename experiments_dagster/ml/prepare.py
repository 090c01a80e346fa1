"""From a raw frame and a spec to a checked train/test split, before anything is logged."""

from __future__ import annotations

import datetime
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments_dagster.core.dataset import check_target, drop_missing_target, infer_task
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.ml.estimators import build_estimator
from experiments_dagster.ml.metrics import predict
from experiments_dagster.ml.preprocess import MAX_CATEGORIES, text_like_columns
from experiments_dagster.ml.training import TrainTestSplit, estimator_of, make_pipeline, split_dataset

# The configured pipeline is fitted once on this many rows before anything is logged, so a bad
# hyperparameter or an unencodable column fails here and not in the middle of the CV.
SAMPLE_ROWS = 200
# Ensembles are fitted with at most this many members on the sample: validation is about whether
# the parameters work, and 20,000 trees would cost as long as the real fit (40 s here).
SAMPLE_MAX_ESTIMATORS = 10


@dataclass(frozen=True)
class Prepared:
    """A validated experiment: its task, split, how many rows lost their target, and warnings
    for the run's log (e.g. columns that look like free text)."""

    task: str
    split: TrainTestSplit
    rows_dropped: int
    frame: pd.DataFrame
    warnings: tuple[str, ...] = ()


def prepare_experiment(frame: pd.DataFrame, spec: ExperimentSpec, path: Path) -> Prepared:
    """Drop rows without a target, infer and check the task, check columns and model, split.

    Every user-fixable problem raises ``ExperimentInputError`` here, before any training.
    """
    clean, dropped = drop_missing_target(frame, spec.target, path)
    task = spec.task or infer_task(clean[spec.target])
    check_target(clean[spec.target], task, spec.cv_folds, path, spec.target)
    build_estimator(spec.model, task, spec.hyperparameters, spec.resolved_seeds.model)
    X, y = clean.drop(columns=[spec.target]), clean[spec.target]
    check_feature_columns(X, path)
    check_model_trains(X, y, task, spec, path)
    warnings = tuple(
        f"Column {column!r} of {path} looks like free text or an identifier ({why}): it is one-hot "
        f"encoded into at most {MAX_CATEGORIES} columns, the rarer values grouped as one. Drop it "
        "from the file if it carries no signal."
        for column, why in text_like_columns(X).items()
    )
    try:
        split = split_dataset(clean, spec.target, task, spec.test_size, spec.resolved_seeds.split)
    except ValueError as exc:
        raise ExperimentInputError(
            f"{path} cannot be split with test_size={spec.test_size}: {exc}. Add rows or change `test_size`."
        ) from exc
    check_cv_feasible(split.y_train, task, spec.cv_folds, path)
    return Prepared(task=task, split=split, rows_dropped=dropped, frame=clean, warnings=warnings)


# Python values of a date or time: Arrow's CSV reader gives ISO dates (``2024-01-31``) as
# ``datetime.date`` objects in an object column, not as a datetime64 column.
DATE_TYPES = (datetime.date, datetime.time, datetime.timedelta)


def _value_kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, DATE_TYPES):
        return "date"
    return type(value).__name__


def _dates_refused(column: Any, path: Path, what: str) -> ExperimentInputError:
    return ExperimentInputError(
        f"Column {column!r} of {path} holds dates or times ({what}); features must be numbers, "
        "text categories or booleans. Drop the column or replace it with numeric columns "
        "(e.g. year, month, day of week) in the file."
    )


def check_feature_columns(X: pd.DataFrame, path: Path) -> None:
    """Refuse repeated column names, date/time columns, and columns of lists, structs or mixed types.

    Dates are refused rather than converted: which numbers a date should become (year, day of
    week, days since an event) is a modelling choice for the file's author.
    """
    if X.columns.has_duplicates:
        repeated = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise ExperimentInputError(
            f"{path} has repeated column names {repeated}; rename or drop the duplicates."
        )
    for column in X.columns:
        dtype = X[column].dtype
        if (
            pd.api.types.is_datetime64_any_dtype(dtype)
            or pd.api.types.is_timedelta64_dtype(dtype)
            or isinstance(dtype, pd.PeriodDtype)
        ):
            raise _dates_refused(column, path, str(dtype))
        if not pd.api.types.is_object_dtype(dtype):
            continue
        values = X[column].dropna()
        kinds = pd.Series([_value_kind(v) for v in values], index=values.index, dtype=object)
        found = sorted(set(kinds))
        other = [k for k in found if k not in ("text", "number", "boolean")]
        if "date" in other:
            first = values[kinds == "date"].iloc[0]
            raise _dates_refused(column, path, f"e.g. {first!s} at row {kinds.index[kinds == 'date'][0]}")
        if other:
            raise ExperimentInputError(
                f"Column {column!r} of {path} holds {other[0]} values (e.g. row "
                f"{kinds.index[kinds.isin(other)][0]}); features must be numbers, text or "
                "booleans, not lists, structs or binary. Flatten it into scalar columns or drop it."
            )
        if len(found) > 1:
            firsts = ", ".join(f"{k} at row {kinds.index[kinds == k][0]}" for k in found)
            raise ExperimentInputError(
                f"Column {column!r} of {path} mixes {' and '.join(found)} values ({firsts}); a column "
                "must hold one type. Make its values all numbers or all text."
            )


def sample_rows(y: pd.Series, task: str, seed: int, n: int = SAMPLE_ROWS) -> np.ndarray:
    """At most about ``n`` row positions, with every class present for classification."""
    if len(y) <= n:
        return np.arange(len(y))
    order = np.random.default_rng(seed).permutation(len(y))
    if task == "regression":
        return np.sort(order[:n])
    shuffled = y.iloc[order].reset_index(drop=True)
    per_class = max(2, n // shuffled.nunique())
    return np.sort(order[shuffled.groupby(shuffled, sort=False).head(per_class).index.to_numpy()])


def check_model_trains(X: pd.DataFrame, y: pd.Series, task: str, spec: ExperimentSpec, path: Path) -> None:
    """Fit and apply the configured pipeline on a small sample; refuse a model that fails or is empty."""
    rows = sample_rows(y, task, spec.resolved_seeds.model)
    Xs, ys = X.iloc[rows].reset_index(drop=True), y.iloc[rows].reset_index(drop=True)
    what = f"Model {spec.model!r} with hyperparameters {spec.hyperparameters}"
    hyperparameters = dict(spec.hyperparameters)
    members = build_estimator(spec.model, task, hyperparameters, 0).get_params().get("n_estimators")
    if isinstance(members, int) and not isinstance(members, bool) and members > SAMPLE_MAX_ESTIMATORS:
        hyperparameters["n_estimators"] = SAMPLE_MAX_ESTIMATORS  # 0 or -1 stay: they must be refused
    pipeline = make_pipeline(Xs, task, spec.model, hyperparameters, spec.resolved_seeds.model)
    try:
        pipeline.fit(Xs, ys)
        predict(pipeline, Xs, task)
    except Exception as exc:  # estimators raise many types for bad parameters or data
        raise ExperimentInputError(
            f"{what} cannot be trained on a {len(rows)}-row sample of {path}: {type(exc).__name__}: {exc}. "
            "Fix the hyperparameter or column named there (experiment.yaml or the run config)."
        ) from exc
    estimator = estimator_of(pipeline)
    if hasattr(estimator, "get_booster") and estimator.get_booster().num_boosted_rounds() < 1:
        raise ExperimentInputError(
            f"{what} trained no trees on a sample of {path} (n_estimators="
            f"{estimator.get_params().get('n_estimators')!r}); set `n_estimators` to at least 1."
        )


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
