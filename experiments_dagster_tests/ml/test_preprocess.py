"""The preprocessor's width and feature names stay bounded on free-text columns."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from experiments_dagster.ml.importance import feature_importance
from experiments_dagster.ml.plots import plot_feature_importance
from experiments_dagster.ml.preprocess import MAX_CATEGORIES, bounded_feature_name, text_like_columns
from experiments_dagster.ml.training import make_pipeline


def test_bounded_feature_name_cuts_long_names_and_keeps_them_distinct() -> None:
    assert bounded_feature_name("cat__plan_gold") == "cat__plan_gold"
    a = bounded_feature_name("cat__note_" + "x" * 5000 + "a")
    b = bounded_feature_name("cat__note_" + "x" * 5000 + "b")
    assert a != b and len(a) == len(b) == 60 + 3 + 8
    assert a.startswith("cat__note_" + "x" * 50 + "...")


def test_long_unique_text_column_trains_quickly_with_short_feature_names() -> None:
    """1000 rows, each with its own 2 KB text: at most 30 one-hot columns, names under 100 characters."""
    rng = np.random.default_rng(0)
    n = 1000
    X = pd.DataFrame(
        {"x": rng.normal(size=n), "text": [f"{i:04d} " + "lorem ipsum " * 170 for i in range(n)]}
    )
    y = pd.Series(rng.choice(["a", "b"], n))
    start = time.perf_counter()
    pipeline = make_pipeline(X, "binary", "xgboost", {"n_estimators": 20}, seed=0).fit(X, y)
    importance, method = feature_importance(pipeline, X, y, seed=0)
    figure = plot_feature_importance(importance, method)
    figure.savefig(__import__("io").BytesIO(), format="png")
    elapsed = time.perf_counter() - start
    names = list(importance.index)
    assert method == "native"
    assert len(names) == 1 + MAX_CATEGORIES  # x, 29 most frequent texts and the infrequent group
    assert max(len(n) for n in names) < 100
    assert "cat__text_infrequent_sklearn" in names
    assert elapsed < 10, f"{elapsed:.1f} s"  # 0.7 s here; 4.2 s with 2 KB names (before bounding)
    assert text_like_columns(X) == {"text": "1000 distinct values in 1000 non-missing rows"}


def test_text_like_columns_leave_ordinary_categories_alone() -> None:
    X = pd.DataFrame({"plan": ["a", "b", "c"] * 30, "n": np.arange(90), "id": [f"u{i}" for i in range(90)]})
    assert text_like_columns(X) == {"id": "90 distinct values in 90 non-missing rows"}
    assert text_like_columns(X.head(10)) == {}  # too few rows to tell
