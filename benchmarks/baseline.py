"""Baseline: one experiment logged the way ../shared/logging-standard.md (beside the repository) shows, as a plain script.

    python benchmarks/baseline.py --data-file data/x/v1.csv --tracking-uri sqlite:////abs/mlflow.db

Same data, split, preprocessing, model and hyperparameters as the project's `experiment_job`
(read from the dataset's experiment.yaml, merged over the project's XGBoost defaults), logged
with MLflow's fluent API:

- parent run with params (all XGBoost hyperparameters, seeds, dataset facts and sha256), tags
  (version, stage, git commit, Python, OS);
- 5-fold stratified CV on the train split, one nested run per fold (fold metrics,
  fit_time_seconds, predict_time_seconds), then cv_<metric>_mean/_std on the parent;
- final model fitted on the train split: test metrics, f1/precision/recall at each threshold,
  confusion counts and revenue_impact_usd, fit_time_seconds;
- four plots (confusion matrix, feature importance, ROC, PR) saved with pyplot and logged with
  `mlflow.log_artifact`;
- `mlflow.sklearn.log_model(pipeline, name="model", serialization_format="cloudpickle")`:
  the standard's call. MLflow 3.17's default sklearn format (skops) refuses XGBoost types, and
  a preprocessing+XGBoost Pipeline does not fit the xgboost flavor, so cloudpickle it is. As in
  the standard, no pip_requirements are passed (MLflow infers them);
- requirements.txt (every installed distribution, pinned) via `mlflow.log_artifact`.

Binary tasks only (the benchmark's workloads are all binary). Writes a JSON summary with its
own timings to --summary if given.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before the heavy imports below

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from xgboost import XGBClassifier  # noqa: E402

# The same preprocessing and the same XGBoost defaults as the project (imported, not copied,
# so the two sides cannot drift apart).
from experiments_dagster.ml.estimators import XGBOOST_DEFAULTS  # noqa: E402
from experiments_dagster.ml.preprocess import build_preprocessor  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def classification_metrics(y_true, y_pred, y_proba) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred, zero_division=0),
        "f1": f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": roc_auc_score(y_true, y_proba),
        "pr_auc": average_precision_score(y_true, y_proba),
        "log_loss": log_loss(y_true, y_proba, labels=[0, 1]),
    }


def make_model(X: pd.DataFrame, params: dict) -> Pipeline:
    return Pipeline([("preprocess", build_preprocessor(X)), ("model", XGBClassifier(**params))])


def read_spec(data_file: Path) -> dict:
    """The dataset's experiment.yaml as the settings the script uses, XGBoost parameters merged."""
    spec = yaml.safe_load((data_file.parent / "experiment.yaml").read_text())
    seed = int(spec.get("seed", 42))
    return {
        "dataset": data_file.parent.name,
        "version": data_file.stem,
        "spec": spec,
        "target": spec["target"],
        "seed": seed,
        "folds": int(spec.get("cv_folds", 5)),
        "test_size": float(spec.get("test_size", 0.2)),
        "thresholds": spec.get("thresholds", [0.3, 0.5, 0.7]),
        "business": {"tp": 0.0, "fp": 0.0, "tn": 0.0, "fn": 0.0, **spec.get("business_values", {})},
        "positive": spec.get("positive_class", 1),
        "params": {
            **XGBOOST_DEFAULTS,
            **spec.get("hyperparameters", {}),
            "eval_metric": "logloss",
            "random_state": seed,
        },
    }


def log_params_and_tags(
    s: dict, frame: pd.DataFrame, X_all: pd.DataFrame, data_file: Path, data_hash: str
) -> None:
    """Params: every hyperparameter of the estimator, seeds, dataset facts (with hash); the tags."""
    all_hp = XGBClassifier(**s["params"]).get_params()
    mlflow.log_params({"model_type": "xgboost", **{k: str(v) for k, v in all_hp.items()}})
    mlflow.log_params(
        {
            "seed": s["seed"],
            "cv.folds": s["folds"],
            "split.test_size": s["test_size"],
            "target": s["target"],
            "dataset.name": s["dataset"],
            "dataset.version": s["version"],
            "data.hash": data_hash,
            "dataset.rows": len(frame),
            "dataset.columns": X_all.shape[1],
            "dataset.size_bytes": data_file.stat().st_size,
            "thresholds": ",".join(map(str, s["thresholds"])),
        }
    )
    mlflow.set_tags(
        {
            "version": s["spec"].get("version", "v0"),
            "stage": s["spec"].get("stage", "development"),
            "git.commit": git_commit(),
            "python.version": platform.python_version(),
            "os.platform": platform.platform(),
            "data.hash": data_hash,
        }
    )


def cross_validate(s: dict, X_train: pd.DataFrame, y_train: pd.Series) -> tuple[float, float]:
    """Cross-validation, one nested run per fold, then cv_<metric>_mean/_std; (fit s, predict s)."""
    cv = StratifiedKFold(n_splits=s["folds"], shuffle=True, random_state=s["seed"])
    fold_metrics, fit_total, predict_total = [], 0.0, 0.0
    for fold, (train_idx, val_idx) in enumerate(cv.split(X_train, y_train)):
        with mlflow.start_run(nested=True, run_name=f"fold-{fold}"):
            mlflow.log_param("fold", fold)
            model = make_model(X_train, s["params"])
            t0 = time.perf_counter()
            model.fit(X_train.iloc[train_idx], y_train.iloc[train_idx])
            t1 = time.perf_counter()
            X_val = X_train.iloc[val_idx]
            proba = model.predict_proba(X_val)[:, 1]
            pred = model.predict(X_val)
            t2 = time.perf_counter()
            metrics = classification_metrics(y_train.iloc[val_idx], pred, proba)
            fold_metrics.append(metrics)
            mlflow.log_metrics({**metrics, "fit_time_seconds": t1 - t0, "predict_time_seconds": t2 - t1})
            fit_total += t1 - t0
            predict_total += t2 - t1
    table = pd.DataFrame(fold_metrics)
    mlflow.log_metrics({f"cv_{k}_mean": float(table[k].mean()) for k in table.columns})
    mlflow.log_metrics({f"cv_{k}_std": float(table[k].std(ddof=0)) for k in table.columns})
    return fit_total, predict_total


def fit_final(
    s: dict, X_train, y_train, X_test, y_test
) -> tuple[Pipeline, np.ndarray, np.ndarray, float, float]:
    """Final model on the whole train split, scored on the test split; (model, pred, proba, fit s, predict s)."""
    model = make_model(X_train, s["params"])
    t0 = time.perf_counter()
    model.fit(X_train, y_train)
    t1 = time.perf_counter()
    y_proba = model.predict_proba(X_test)[:, 1]
    y_pred = model.predict(X_test)
    t2 = time.perf_counter()
    mlflow.log_metrics({**classification_metrics(y_test, y_pred, y_proba), "fit_time_seconds": t1 - t0})
    for threshold in s["thresholds"]:
        y_pred_thresh = (y_proba > threshold).astype(int)
        mlflow.log_metric(f"f1_threshold_{threshold}", f1_score(y_test, y_pred_thresh, zero_division=0))
        mlflow.log_metric(
            f"precision_threshold_{threshold}", precision_score(y_test, y_pred_thresh, zero_division=0)
        )
        mlflow.log_metric(
            f"recall_threshold_{threshold}", recall_score(y_test, y_pred_thresh, zero_division=0)
        )
    yt, yp = np.asarray(y_test), np.asarray(y_pred)
    counts = {
        "tp": int(((yt == 1) & (yp == 1)).sum()),
        "fp": int(((yt == 0) & (yp == 1)).sum()),
        "tn": int(((yt == 0) & (yp == 0)).sum()),
        "fn": int(((yt == 1) & (yp == 0)).sum()),
    }
    mlflow.log_metrics({f"test_{k}": v for k, v in counts.items()})
    mlflow.log_metric("revenue_impact_usd", sum(counts[k] * float(s["business"][k]) for k in counts))
    return model, y_pred, y_proba, t1 - t0, t2 - t1


def log_plots(model: Pipeline, y_test, y_pred, y_proba, out: Path) -> None:
    """Plots, saved to files and logged with log_artifact (the standard's way)."""
    plt.figure(figsize=(8, 6))
    ConfusionMatrixDisplay.from_predictions(y_test, y_pred).plot()
    plt.savefig(out / "confusion_matrix.png")
    plt.close("all")

    names = model.named_steps["preprocess"].get_feature_names_out()
    importance = pd.Series(model.named_steps["model"].feature_importances_, index=names)
    top = importance.sort_values(ascending=False).head(20)[::-1]
    plt.figure(figsize=(8, 6))
    plt.barh([str(i) for i in top.index], top.to_numpy())
    plt.title("Feature importance")
    plt.tight_layout()
    plt.savefig(out / "feature_importance.png")
    plt.close("all")

    RocCurveDisplay.from_predictions(y_test, y_proba)
    plt.savefig(out / "roc_curve.png")
    plt.close("all")
    PrecisionRecallDisplay.from_predictions(y_test, y_proba)
    plt.savefig(out / "pr_curve.png")
    plt.close("all")
    for name in ("confusion_matrix.png", "feature_importance.png", "roc_curve.png", "pr_curve.png"):
        mlflow.log_artifact(str(out / name))


def log_requirements(out: Path) -> None:
    """Pinned requirements of every installed distribution, as requirements.txt."""
    pins = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in md.distributions() if d.metadata["Name"]},
        key=str.lower,
    )
    (out / "requirements.txt").write_text("\n".join(pins) + "\n")
    mlflow.log_artifact(str(out / "requirements.txt"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-file", required=True, type=Path, help="<data dir>/<dataset>/<version>.csv")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--artifact-root", help="artifact location of a new experiment (default: MLflow's)")
    parser.add_argument("--summary", type=Path, help="write timings and ids here as JSON")
    return parser.parse_args()


def set_up(args: argparse.Namespace, s: dict) -> None:
    """The standard's first step: tracking URI and the dataset's experiment."""
    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = s["dataset"]
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(
            experiment, artifact_location=f"{args.artifact_root}/{experiment}" if args.artifact_root else None
        )
    mlflow.set_experiment(experiment)


def main() -> int:
    args = parse_args()
    t = {"start": time.perf_counter()}
    data_file = args.data_file.resolve()
    s = read_spec(data_file)
    np.random.seed(s["seed"])
    set_up(args, s)

    frame = pd.read_csv(data_file)
    data_hash = sha256_of(data_file)
    frame = frame.dropna(subset=[s["target"]])
    y_all = (frame[s["target"]].astype(str) == str(s["positive"])).astype(int)
    X_all = frame.drop(columns=[s["target"]])
    X_train, X_test, y_train, y_test = train_test_split(
        X_all, y_all, test_size=s["test_size"], random_state=s["seed"], stratify=y_all
    )
    t["setup"] = time.perf_counter()

    with mlflow.start_run(run_name=f"{s['dataset']}@{s['version']}") as parent:
        log_params_and_tags(s, frame, X_all, data_file, data_hash)
        cv_fit, cv_predict = cross_validate(s, X_train, y_train)
        model, y_pred, y_proba, fit, predict = fit_final(s, X_train, y_train, X_test, y_test)
        t["train"] = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            log_plots(model, y_test, y_pred, y_proba, Path(tmp))
            t["plots"] = time.perf_counter()
            # Model (the standard's call; cloudpickle because skops refuses XGBoost types).
            mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
            t["model"] = time.perf_counter()
            log_requirements(Path(tmp))
        run_id = parent.info.run_id
    t["end"] = time.perf_counter()
    if args.summary:
        write_summary(args.summary, run_id, cv_fit + fit, cv_predict + predict, t)
    print(f"baseline run {run_id} in {t['end'] - t['start']:.2f}s (in-process)")
    return 0


def write_summary(path: Path, run_id: str, fit: float, predict: float, t: dict[str, float]) -> None:
    """The run id, fit/predict seconds and the time of each phase, as JSON."""
    phases = {
        "imports": t["start"] - T_PROCESS,
        "setup_and_read": t["setup"] - t["start"],
        "cv_and_final_fit": t["train"] - t["setup"],
        "plots": t["plots"] - t["train"],
        "log_model": t["model"] - t["plots"],
        "requirements_and_close": t["end"] - t["model"],
    }
    summary = {"run_id": run_id, "fit_seconds": fit, "predict_seconds": predict, "phases": phases}
    path.write_text(json.dumps({**summary, "in_process_seconds": t["end"] - T_PROCESS}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
