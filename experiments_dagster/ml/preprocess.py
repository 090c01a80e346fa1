"""Preprocessing for mixed tabular data: numeric, categorical strings and missing values."""

from __future__ import annotations

import hashlib

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# Rare categories beyond this many per column are grouped, so width stays bounded.
MAX_CATEGORIES = 30
# A feature name after preprocessing (importance CSV, plots) is cut to this many characters
# plus a short digest of the whole name, so names stay short and distinct.
MAX_FEATURE_NAME = 60


def bounded_feature_name(name: str) -> str:
    """``name``, or its first characters and a sha1 of the whole when it is too long.

    Applied where names are shown (feature importance), not inside the encoder: a callable
    stored in the fitted model would be code that loading it has to import.
    """
    if len(name) <= MAX_FEATURE_NAME:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[:MAX_FEATURE_NAME]}...{digest}"


def column_kinds(X: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, boolean) columns; strings and mixed columns count as categorical."""
    boolean = [c for c in X.columns if pd.api.types.is_bool_dtype(X[c])]
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and c not in boolean]
    categorical = [c for c in X.columns if c not in numeric and c not in boolean]
    return numeric, categorical, boolean


def build_preprocessor(X: pd.DataFrame) -> ColumnTransformer:
    """Impute and scale numbers; impute and one-hot encode categories (unknowns ignored).

    Missing categories arrive as NaN from CSV but as None from parquet: both become "missing".
    Boolean columns (never missing: pandas makes a column with gaps object) are one-hot encoded.
    """
    numeric, categorical, boolean = column_kinds(X)
    numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("impute_none", SimpleImputer(missing_values=None, strategy="constant", fill_value="missing")),
            (
                "onehot",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    max_categories=MAX_CATEGORIES,
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [
            ("num", numeric_steps, numeric),
            ("cat", categorical_steps, categorical),
            ("bool", OneHotEncoder(drop="if_binary", handle_unknown="ignore", sparse_output=False), boolean),
        ],
        remainder="drop",
    )


# A categorical column whose values are nearly all distinct, or long, is probably free text or
# an identifier: it is still encoded (bounded by MAX_CATEGORIES) but rarely carries signal.
TEXT_UNIQUE_SHARE = 0.9
TEXT_MIN_ROWS = 20
TEXT_MEAN_LENGTH = 50
TEXT_SAMPLE_ROWS = 10_000


def text_like_columns(X: pd.DataFrame) -> dict[str, str]:
    """{column: why it looks like free text or an identifier} for the categorical columns."""
    found: dict[str, str] = {}
    _, categorical, _ = column_kinds(X)
    for column in categorical:
        values = X[column].dropna()
        if len(values) > TEXT_SAMPLE_ROWS:  # a share of distinct values is as telling on a sample
            values = values.sample(TEXT_SAMPLE_ROWS, random_state=0)
        if values.empty:
            continue
        distinct = values.nunique()
        mean_length = float(values.astype(str).str.len().mean())
        if len(values) >= TEXT_MIN_ROWS and distinct >= TEXT_UNIQUE_SHARE * len(values):
            found[str(column)] = f"{distinct} distinct values in {len(values)} non-missing rows"
        elif mean_length > TEXT_MEAN_LENGTH:
            found[str(column)] = f"values {mean_length:.0f} characters long on average"
    return found
