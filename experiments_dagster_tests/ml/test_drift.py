"""PSI, KS and chi-square per column, schema changes, the drift plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments_dagster.ml import drift


def test_identical_columns_do_not_drift() -> None:
    x = pd.Series(np.random.default_rng(0).normal(size=500))
    row = drift.column_drift(x, x.copy())
    assert row["psi"] == pytest.approx(0.0, abs=1e-12) and row["test"] == "ks" and row["p_value"] == 1.0


def test_shifted_numeric_column_psi_and_ks() -> None:
    rng = np.random.default_rng(1)
    ref, cur = pd.Series(rng.normal(size=2000)), pd.Series(rng.normal(loc=1.0, size=2000))
    row = drift.column_drift(ref, cur)
    assert row["psi"] > 0.5  # a one-sigma shift is far past the usual 0.2 alarm
    expected = stats.ks_2samp(ref, cur)
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p_value"] == pytest.approx(
        expected.pvalue
    )


def test_psi_by_hand_on_categories() -> None:
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    cur = pd.Series(["a"] * 80 + ["b"] * 20)
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    row = drift.column_drift(ref, cur)
    assert row["psi"] == pytest.approx(expected) and row["test"] == "chi2"
    chi2, p, _, _ = stats.chi2_contingency([[50, 50], [80, 20]])
    assert row["statistic"] == pytest.approx(chi2) and row["p_value"] == pytest.approx(p)


def test_missing_values_and_new_categories_count() -> None:
    ref = pd.Series(["a", "b", None, "a"] * 25)
    cur = pd.Series(["a", "c", "c", "c"] * 25)
    assert drift.categorical_psi(ref, cur) > 1.0
    num_ref = pd.Series([1.0, 2.0, 3.0, 4.0] * 25)
    num_cur = pd.Series([1.0, np.nan, np.nan, np.nan] * 25)
    assert drift.numeric_psi(num_ref, num_cur) > 1.0


def test_schema_changes() -> None:
    ref = pd.DataFrame({"a": [1.0], "b": ["x"], "c": [1]})
    cur = pd.DataFrame({"a": ["text"], "c": [2.5], "d": [0]})
    assert drift.schema_changes(ref, cur) == {
        "added": ["d"],
        "removed": ["b"],
        "retyped": [{"column": "a", "reference": "float64", "current": "object"}],
    }


def test_feature_drift_table_sorted_with_the_most_drifted_first() -> None:
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"same": rng.normal(size=300), "moved": rng.normal(size=300), "gone": 1.0})
    cur = pd.DataFrame({"same": rng.normal(size=300), "moved": rng.normal(loc=2.0, size=300)})
    table = drift.feature_drift(ref, cur)
    assert table["feature"].tolist() == ["moved", "same"]
    assert list(table.columns) == drift.DRIFT_COLUMNS
    fig = drift.plot_top_drift(table, 0.2)
    assert fig.axes[0].get_title() == "Most drifted features (top 2)"


def test_a_retyped_column_is_compared_as_text() -> None:
    ref = pd.DataFrame({"code": [1, 2, 3, 4] * 25})
    cur = pd.DataFrame({"code": ["1", "2", "x", "y"] * 25})
    (row,) = drift.feature_drift(ref, cur).to_dict(orient="records")
    assert row["kind"] == "categorical" and row["test"] == "chi2" and row["psi"] > 1.0
    assert drift.schema_changes(ref, cur)["retyped"] == [
        {"column": "code", "reference": "int64", "current": "object"}
    ]
