"""The fitted preprocessor as plain JSON, and a numpy/pandas transformer that applies it.

``export_state`` reads the fitted ColumnTransformer that ``ml.preprocess.build_preprocessor``
makes into medians, means, scales and one-hot layouts; ``StatePreprocessor`` applies them and
reproduces scikit-learn's ``transform`` bit for bit (float64). Loading a model this way needs
no skops, whose import alone takes seconds (it enumerates every scikit-learn estimator).

This file is copied into every pyfunc model that uses the state and executed from there by
``pyfunc_model.py``: it imports nothing from the project and only numpy and pandas at module
level (the export side imports scikit-learn lazily). A model therefore keeps the exact code it
was verified with, whatever later versions of this file do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

STATE_FORMAT = "experiments-dagster/preprocessor-state"
STATE_VERSION = 1


class StatePreprocessor:
    """``ColumnTransformer.transform`` of build_preprocessor's structure, from an exported state."""

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Unsupported preprocessor state {state.get('format')!r} v{state.get('version')!r}; "
                f"this code reads {STATE_FORMAT!r} v{STATE_VERSION}."
            )
        num, cat, boolean = state["numeric"], state["categorical"], state["boolean"]
        self.numeric_columns = list(num["columns"])
        self.medians = np.asarray(num["medians"], dtype=np.float64)
        self.means = np.asarray(num["means"], dtype=np.float64)
        self.scales = np.asarray(num["scales"], dtype=np.float64)
        self.categorical_columns = list(cat["columns"])
        self.fill_nan, self.fill_none = cat["fill_nan"], cat["fill_none"]
        self.boolean_columns = list(boolean["columns"])
        self.categorical = [_lookup(f) for f in cat["features"]]
        self.boolean = [_lookup(f) for f in boolean["features"]]
        self.n_features_out = int(state["n_features_out"])

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Impute and scale numbers, impute and one-hot encode categories, one-hot booleans."""
        out = np.zeros((len(X), self.n_features_out), dtype=np.float64)
        offset = 0
        if self.numeric_columns:
            values = X[self.numeric_columns].to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isinf(values).any():  # scikit-learn's imputer refuses infinity too
                raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
            # Two roundings, subtract then divide, exactly as StandardScaler's in-place -= and /=.
            scaled = (np.where(np.isnan(values), self.medians, values) - self.means) / self.scales
            out[:, : scaled.shape[1]] = scaled
            offset = scaled.shape[1]
        if self.categorical_columns:
            values = X[self.categorical_columns].to_numpy(dtype=object, copy=True)
            # SimpleImputer's masks: `X != X` finds NaN (and NaT), then `X == None` finds None.
            values[values != values] = self.fill_nan
            values[np.equal(values, None)] = self.fill_none
            offset = _one_hot(values, self.categorical, out, offset)
        if self.boolean_columns:
            values = X[self.boolean_columns].to_numpy(dtype=object)
            offset = _one_hot(values, self.boolean, out, offset)
        return out


def _lookup(feature: dict[str, Any]) -> tuple[dict[Any, int], int, int]:
    """(category -> output column or -1 when dropped, column of unknowns or -1, width)."""
    columns = [-1 if c is None else int(c) for c in feature["outputs"]]
    unknown = -1 if feature["unknown"] is None else int(feature["unknown"])
    return dict(zip(feature["categories"], columns, strict=True)), unknown, int(feature["width"])


def _one_hot(
    values: np.ndarray, features: list[tuple[dict[Any, int], int, int]], out: np.ndarray, offset: int
) -> int:
    # Dict lookup is scikit-learn's own rule for these columns (a Python set and dict of the
    # categories), so equality and hashing of odd inputs (1 == True, np.str_) agree with it.
    rows = np.arange(len(values))
    for j, (table, unknown, width) in enumerate(features):
        cols = np.fromiter((table.get(v, unknown) for v in values[:, j]), dtype=np.int64, count=len(values))
        hit = cols >= 0
        out[rows[hit], offset + cols[hit]] = 1.0
        offset += width
    return offset


# --- export side: needs scikit-learn ----------------------------------------------------------


def export_state(column_transformer: Any) -> dict[str, Any] | None:
    """The fitted preprocessor as JSON-able state; None unless it is exactly build_preprocessor's
    structure with options StatePreprocessor reproduces."""
    from sklearn.compose import ColumnTransformer

    ct = column_transformer
    if type(ct) is not ColumnTransformer or ct.remainder != "drop" or not _default_output(ct):
        return None
    if getattr(ct, "sparse_output_", True):
        return None
    groups = [(name, trans, cols) for name, trans, cols in ct.transformers_ if name != "remainder"]
    if [name for name, _, _ in groups] != ["num", "cat", "bool"]:
        return None
    (_, num, num_cols), (_, cat, cat_cols), (_, boolean, bool_cols) = groups
    if not all(isinstance(c, str) for c in [*num_cols, *cat_cols, *bool_cols]):
        return None
    parts = (
        _numeric_state(num, list(num_cols)),
        _categorical_state(cat, list(cat_cols)),
        _boolean_state(boolean, list(bool_cols)),
    )
    if any(part is None for part in parts):
        return None
    numeric, categorical, boolean_state = parts
    width = len(numeric["columns"]) + sum(
        f["width"] for f in [*categorical["features"], *boolean_state["features"]]
    )
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "numeric": numeric,
        "categorical": categorical,
        "boolean": boolean_state,
        "n_features_out": width,
    }


def _default_output(*estimators: Any) -> bool:
    """No ``set_output`` (pandas/polars output) configured on any of them."""
    return all(
        getattr(e, "_sklearn_output_config", {}).get("transform", "default") == "default" for e in estimators
    )


def _steps(pipeline: Any, names: list[str]) -> list[Any] | None:
    from sklearn.pipeline import Pipeline

    if type(pipeline) is not Pipeline or [n for n, _ in pipeline.steps] != names:
        return None
    steps = [step for _, step in pipeline.steps]
    return steps if _default_output(pipeline, *steps) else None


def _numeric_state(pipeline: Any, columns: list[str]) -> dict[str, Any] | None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if not columns:
        return {"columns": [], "medians": [], "means": [], "scales": []}
    steps = _steps(pipeline, ["impute", "scale"])
    if steps is None:
        return None
    imputer, scaler = steps
    if not (
        type(imputer) is SimpleImputer
        and imputer.strategy == "median"
        and _is_nan(imputer.missing_values)
        and not imputer.add_indicator
        and not imputer.keep_empty_features
        and imputer.statistics_.dtype == np.float64
        and type(scaler) is StandardScaler
        and scaler.with_mean
        and scaler.with_std
    ):
        return None
    # The imputer drops columns that were all missing at fit (their median is NaN).
    keep = ~np.isnan(imputer.statistics_)
    medians = imputer.statistics_[keep]
    means, scales = np.asarray(scaler.mean_), np.asarray(scaler.scale_)
    if not (
        means.dtype == scales.dtype == np.float64
        and means.shape == scales.shape == medians.shape
        and np.isfinite(np.concatenate([medians, means, scales])).all()
    ):
        return None
    return {
        "columns": [c for c, k in zip(columns, keep, strict=True) if k],
        "medians": medians.tolist(),
        "means": means.tolist(),
        "scales": scales.tolist(),
    }


def _categorical_state(pipeline: Any, columns: list[str]) -> dict[str, Any] | None:
    from sklearn.impute import SimpleImputer

    if not columns:
        return {"columns": [], "fill_nan": "missing", "fill_none": "missing", "features": []}
    steps = _steps(pipeline, ["impute", "impute_none", "onehot"])
    if steps is None:
        return None
    nan_imputer, none_imputer, encoder = steps
    for imputer, is_missing in ((nan_imputer, _is_nan), (none_imputer, lambda v: v is None)):
        if not (
            type(imputer) is SimpleImputer
            and imputer.strategy == "constant"
            and isinstance(imputer.fill_value, str)
            and is_missing(imputer.missing_values)
            and not imputer.add_indicator
            and imputer.statistics_.dtype == object
        ):
            return None
    features = _encoder_features(encoder, len(columns))
    if features is None:
        return None
    return {
        "columns": columns,
        "fill_nan": nan_imputer.fill_value,
        "fill_none": none_imputer.fill_value,
        "features": features,
    }


def _boolean_state(encoder: Any, columns: list[str]) -> dict[str, Any] | None:
    if not columns:
        return {"columns": [], "features": []}
    features = _encoder_features(encoder, len(columns))
    return None if features is None else {"columns": columns, "features": features}


def _encoder_features(encoder: Any, n_columns: int) -> list[dict[str, Any]] | None:
    """Per input column: categories, their output column (None when dropped), unknowns' column."""
    from sklearn.preprocessing import OneHotEncoder

    if not (
        type(encoder) is OneHotEncoder
        and not encoder.sparse_output
        and np.dtype(encoder.dtype) == np.float64
        and encoder.handle_unknown in ("ignore", "infrequent_if_exist", "warn")
        and _default_output(encoder)
        and len(encoder.categories_) == n_columns
    ):
        return None
    # Private fitted attributes, read defensively: another scikit-learn may lay them out
    # differently, which gives None here (skops then) or a mismatch in the verification.
    infrequent_enabled = getattr(encoder, "_infrequent_enabled", None)
    widths = getattr(encoder, "_n_features_outs", None)
    if infrequent_enabled is None or widths is None or not hasattr(encoder, "_drop_idx_after_grouping"):
        return None
    drops = encoder._drop_idx_after_grouping
    features = []
    for i, cats in enumerate(encoder.categories_):
        categories = _category_values(cats)
        if categories is None:
            return None
        mapping = encoder._default_to_infrequent_mappings[i] if infrequent_enabled else None
        infrequent = encoder._infrequent_indices[i] if infrequent_enabled else None
        drop = None if drops is None else drops[i]
        outputs = [_output_column(k if mapping is None else mapping[k], drop) for k in range(len(categories))]
        # Unknowns join the infrequent group if there is one (unless "ignore"), else all zeros.
        unknown = None
        if infrequent is not None and encoder.handle_unknown != "ignore":
            unknown = _output_column(mapping[infrequent[0]], drop)
        features.append(
            {"categories": categories, "outputs": outputs, "unknown": unknown, "width": int(widths[i])}
        )
    return features


def _output_column(grouped: int, drop: int | None) -> int | None:
    """OneHotEncoder.transform's column for a (grouped) category: None if dropped, later ones
    shift left by one."""
    if drop is None:
        return int(grouped)
    return None if grouped == drop else int(grouped - (grouped > drop))


def _category_values(categories: np.ndarray) -> list[Any] | None:
    """Categories that survive JSON unchanged (str, or a bool column's bools), else None."""
    if categories.dtype == bool:
        return [bool(c) for c in categories]
    if categories.dtype == object and all(isinstance(c, str) for c in categories):
        return [str(c) for c in categories]
    return None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value
