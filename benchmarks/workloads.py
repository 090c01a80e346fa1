"""Benchmark workloads: deterministic datasets, each in <data dir>/<name>/ with an experiment.yaml.

    python benchmarks/workloads.py --data-dir /tmp/x --workloads small,medium

Prints one JSON line per workload: name, path of the version file, rows, columns, bytes and
the seconds generation took. Every workload is a binary task with an integer 0/1 target
(positive class 1), 5-fold CV, test_size 0.2, thresholds 0.3/0.5/0.7 and seed 42.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

SEED = 42
VERSION = "v1"
TARGET = "target"

# Shared by every workload; `hyperparameters` is added per workload below.
BASE_SPEC = {
    "target": TARGET,
    "task": "binary",
    "positive_class": 1,
    "cv_folds": 5,
    "test_size": 0.2,
    "seed": SEED,
    "thresholds": [0.3, 0.5, 0.7],
    "version": "bench",
    "stage": "benchmark",
}

# small reuses the shipped breast_cancer settings; medium/large take the project's XGBoost
# defaults (200 trees, depth 5, lr 0.1, subsample/colsample 0.9, hist; n_jobs from the usable CPUs).
HYPERPARAMETERS = {
    "small": {"n_estimators": 150, "max_depth": 4, "learning_rate": 0.1},
    "medium": {},
    "large": {},
}

DESCRIPTIONS = {
    "small": "sklearn breast_cancer (569 x 30 numeric)",
    "medium": "make_classification 200,000 x 30 numeric",
    "large": "1,000,000 x 50: 40 numeric (3% missing) + 10 categorical strings (3% missing)",
}


def small() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame  # `target` is 0/1 already


def medium() -> pd.DataFrame:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=200_000,
        n_features=30,
        n_informative=12,
        n_redundant=6,
        n_repeated=0,
        n_clusters_per_class=2,
        flip_y=0.02,
        class_sep=1.0,
        random_state=SEED,
    )
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"f{i:02d}" for i in range(30)])
    frame[TARGET] = y
    return frame


def large() -> pd.DataFrame:
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(SEED)
    n = 1_000_000
    X, y = make_classification(
        n_samples=n,
        n_features=50,
        n_informative=20,
        n_redundant=10,
        n_clusters_per_class=2,
        flip_y=0.02,
        random_state=SEED,
    )
    X = X.astype(np.float32)
    frame = pd.DataFrame(X[:, :40], columns=[f"num{i:02d}" for i in range(40)])
    # 10 categorical string columns made by binning the last 10 (partly informative) features,
    # with 4..13 levels each, so the categories carry signal.
    for j in range(10):
        levels = 4 + j
        edges = np.quantile(X[:, 40 + j], np.linspace(0, 1, levels + 1)[1:-1])
        codes = np.searchsorted(edges, X[:, 40 + j])
        names = np.array([f"c{j}_{chr(97 + k)}" for k in range(levels)], dtype=object)
        frame[f"cat{j}"] = names[codes]
    for col in frame.columns:
        frame.loc[rng.random(n) < 0.03, col] = np.nan
    frame[TARGET] = y
    return frame


BUILDERS = {"small": small, "medium": medium, "large": large}


def write(name: str, data_dir: Path) -> dict:
    start = time.perf_counter()
    frame = BUILDERS[name]()
    folder = data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**BASE_SPEC, "hyperparameters": HYPERPARAMETERS[name]}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    path = folder / f"{VERSION}.csv"
    frame.to_csv(path, index=False, float_format="%.6g")
    return {
        "name": name,
        "dataset": name,
        "version": VERSION,
        "path": str(path),
        "rows": int(len(frame)),
        "columns": int(frame.shape[1] - 1),
        "bytes": path.stat().st_size,
        "description": DESCRIPTIONS[name],
        "generate_seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--workloads", default="small,medium,large")
    args = parser.parse_args()
    for name in [w for w in args.workloads.split(",") if w]:
        if name not in BUILDERS:
            print(f"unknown workload {name!r}; choose from {', '.join(BUILDERS)}", file=sys.stderr)
            return 2
        print(json.dumps(write(name, args.data_dir.resolve())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
