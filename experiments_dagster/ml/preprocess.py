"""Preprocessing for mixed tabular data: numeric, categorical strings and missing values."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# Rare categories beyond this many per column are grouped, so width stays bounded.
MAX_CATEGORIES = 30


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
    numeric_steps = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    )
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

