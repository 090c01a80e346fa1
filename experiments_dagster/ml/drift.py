"""Data drift between a reference frame (the champion's training data) and a current one.

PSI per column, with scipy's two-sample Kolmogorov-Smirnov test for numbers and a chi-square
test of homogeneity for categories (scipy.stats: already installed, exact, documented p-values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pandas.api.types import is_numeric_dtype
from scipy import stats

PSI_BINS = 10
# A share of 0 has no logarithm: empty bins count as this share (the usual PSI convention).
PSI_FLOOR = 1e-4
MISSING = "<missing>"
TOP_DRIFTED = 15
DRIFT_COLUMNS = ["feature", "kind", "psi", "test", "statistic", "p_value", "reference_rows", "current_rows"]


def schema_changes(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, list]:
    """Columns added, removed, or of another dtype in ``current``."""
    ref, cur = reference.dtypes.astype(str).to_dict(), current.dtypes.astype(str).to_dict()
    return {
        "added": [c for c in current.columns if c not in ref],
        "removed": [c for c in reference.columns if c not in cur],
        "retyped": [
            {"column": c, "reference": ref[c], "current": cur[c]}
            for c in reference.columns
            if c in cur and _kind(reference[c]) != _kind(current[c])
        ],
    }


def _kind(column: pd.Series) -> str:
    return "numeric" if is_numeric_dtype(column) and not column.dtype == bool else "categorical"


def _common_kind(reference: pd.Series, current: pd.Series) -> str:
    kinds = {_kind(reference), _kind(current)}
    return "numeric" if kinds == {"numeric"} else "categorical"


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    ref_share = np.clip(ref_share, PSI_FLOOR, None)
    cur_share = np.clip(cur_share, PSI_FLOOR, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def numeric_psi(reference: pd.Series, current: pd.Series, bins: int = PSI_BINS) -> float:
    """PSI over the reference's quantile bins (open-ended at both ends; missing values a bin)."""
    ref, cur = reference.astype(float), current.astype(float)
    edges = (
        np.unique(np.nanquantile(ref.dropna(), np.linspace(0, 1, bins + 1)[1:-1]))
        if ref.notna().any()
        else []
    )
    edges = np.concatenate([[-np.inf], edges, [np.inf]])

    def shares(values: pd.Series) -> np.ndarray:
        counts = np.histogram(values.dropna(), bins=edges)[0]
        return np.append(counts, values.isna().sum()) / max(len(values), 1)

    return _psi(shares(ref), shares(cur))


def _category_counts(reference: pd.Series, current: pd.Series) -> pd.DataFrame:
    ref = reference.astype(object).where(reference.notna(), MISSING).astype(str)
    cur = current.astype(object).where(current.notna(), MISSING).astype(str)
    return pd.DataFrame({"reference": ref.value_counts(), "current": cur.value_counts()}).fillna(0)


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over the categories of both frames (missing values a category)."""
    counts = _category_counts(reference, current)
    return _psi(
        (counts["reference"] / max(len(reference), 1)).to_numpy(),
        (counts["current"] / max(len(current), 1)).to_numpy(),
    )


def column_drift(reference: pd.Series, current: pd.Series, kind: str | None = None) -> dict:
    """PSI and the test of one column: KS (numeric) or chi-square (categorical), with p-value."""
    kind = kind or _kind(reference)
    if kind == "numeric":
        ref, cur = reference.astype(float).dropna(), current.astype(float).dropna()
        psi = numeric_psi(reference, current)
        if len(ref) and len(cur):
            result = stats.ks_2samp(ref, cur)
            statistic, p_value = float(result.statistic), float(result.pvalue)
        else:
            statistic, p_value = float("nan"), float("nan")
        return {"kind": kind, "psi": psi, "test": "ks", "statistic": statistic, "p_value": p_value}
    counts = _category_counts(reference, current)
    psi = categorical_psi(reference, current)
    if len(counts) > 1:
        chi2, p_value, _, _ = stats.chi2_contingency(counts.T.to_numpy())
        statistic, p_value = float(chi2), float(p_value)
    else:  # one category in both: nothing can differ
        statistic, p_value = 0.0, 1.0
    return {"kind": kind, "psi": psi, "test": "chi2", "statistic": statistic, "p_value": p_value}


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """One row per column present in both frames, most drifted (highest PSI) first."""
    rows = [
        {
            "feature": c,
            # A column retyped between the frames is compared as text: its numbers no longer mean one thing.
            **column_drift(reference[c], current[c], _common_kind(reference[c], current[c])),
            "reference_rows": len(reference),
            "current_rows": len(current),
        }
        for c in reference.columns
        if c in current.columns
    ]
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def plot_top_drift(table: pd.DataFrame, threshold: float, top: int = TOP_DRIFTED) -> Figure:
    """PSI of the most drifted features, with the warning threshold."""
    head = table.head(top)[::-1]
    fig = Figure(figsize=(7, max(3.0, 0.35 * len(head) + 1.2)))
    ax = fig.add_subplot()
    colors = ["tab:red" if v > threshold else "tab:blue" for v in head["psi"]]
    ax.barh([str(f) for f in head["feature"]], head["psi"].to_numpy(), color=colors)
    ax.axvline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel="PSI (vs the champion's training data)", title=f"Most drifted features (top {len(head)})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
