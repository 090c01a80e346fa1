"""Regenerate the shipped datasets from data bundled with scikit-learn (no downloads).

Run: .venv/bin/python scripts/make_datasets.py  (deterministic; output is committed)
"""

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn import datasets

DATA = Path(__file__).resolve().parent.parent / "data"


def _frame(bunch) -> pd.DataFrame:
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def _write_spec(name: str, spec: dict) -> None:
    (DATA / name).mkdir(parents=True, exist_ok=True)
    (DATA / name / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def breast_cancer() -> None:
    """Binary, string target, a categorical column and missing values; two versions."""
    rng = np.random.default_rng(7)
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = _frame(bunch)
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    frame.insert(0, "clinic", rng.choice(["north", "south", "east", "west"], size=len(frame)))
    for col in ("mean_texture", "worst_smoothness", "clinic"):
        frame.loc[rng.random(len(frame)) < 0.05, col] = np.nan
    v1 = frame.sample(n=400, random_state=1).sort_index()
    v2 = frame.copy()
    v2.loc[rng.choice(len(v2), size=6, replace=False), "diagnosis"] = None
    _write_spec(
        "breast_cancer",
        {
            "target": "diagnosis",
            "task": "binary",
            "positive_class": "malignant",
            "hyperparameters": {"n_estimators": 150, "max_depth": 4, "learning_rate": 0.1},
            "cv_folds": 5,
            "thresholds": [0.3, 0.5, 0.7],
            "business_values": {"tp": 500.0, "fp": -50.0, "tn": 0.0, "fn": -2000.0},
            "version": "v1.0",
            "stage": "candidate",
            "tags": {"team": "diagnostics"},
        },
    )
    v1.to_csv(DATA / "breast_cancer" / "v1.csv", index=False)
    v2.to_parquet(DATA / "breast_cancer" / "v2.parquet", index=False)


def iris() -> None:
    """Multiclass with string labels; the task is inferred."""
    bunch = datasets.load_iris(as_frame=True)
    frame = _frame(bunch)
    frame["species"] = np.asarray(bunch.target_names)[frame.pop("target")]
    _write_spec(
        "iris",
        {
            "target": "species",
            "hyperparameters": {"n_estimators": 60, "max_depth": 3},
            "version": "v1.0",
            "stage": "candidate",
        },
    )
    frame.to_csv(DATA / "iris" / "v1.csv", index=False)


def diabetes() -> None:
    """Regression with a categorical string column."""
    rng = np.random.default_rng(11)
    bunch = datasets.load_diabetes(as_frame=True, scaled=False)
    frame = _frame(bunch)
    frame["sex"] = np.where(frame["sex"] == 1, "female", "male")
    frame.loc[rng.random(len(frame)) < 0.03, "bmi"] = np.nan
    frame = frame.rename(columns={"target": "progression"})
    _write_spec(
        "diabetes",
        {
            "target": "progression",
            "task": "regression",
            "hyperparameters": {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.05},
            "version": "v1.0",
            "stage": "candidate",
        },
    )
    frame.to_csv(DATA / "diabetes" / "v1.csv", index=False)


if __name__ == "__main__":
    breast_cancer()
    iris()
    diabetes()
