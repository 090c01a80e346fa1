"""``experiments-dagster audit``: runs made by the graph and runs logged by plain scripts.

The foreign runs below are written the way a user would write them from
``../shared/logging-standard.md``: MLflow's fluent API, scikit-learn, matplotlib, no project code.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import joblib
import mlflow
import mlflow.data
import mlflow.sklearn
import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient
from sklearn.base import clone
from sklearn.calibration import CalibrationDisplay
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, train_test_split

from experiments_dagster.cli import main as cli
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.tracking.standard import metric_names, requirements

CLI = Path(sys.executable).with_name("experiments-dagster")
HAND_EXPERIMENT = "breast-cancer-by-hand"  # a by-hand run and a complete foreign run
COMPLETE_EXPERIMENT = "breast-cancer-complete"  # only a complete foreign run
BARE_EXPERIMENT = "bare"  # one FINISHED run with nothing logged
THRESHOLDS = (0.3, 0.5, 0.7)
# Pinned here only to skip MLflow's requirement inference (a subprocess of several seconds).
PIP = [f"scikit-learn=={md.version('scikit-learn')}", f"mlflow=={mlflow.__version__}"]
DAGSTER_TAGS = {"dagster.run_id", "dagster.partition_key", "dagster.asset_key"}
# search.enabled=false: no trials expected; shap.enabled not true: no SHAP summary expected.
NOT_APPLICABLE_SEARCH = {("search", "trials"): "n/a", ("png", "shap_summary.png"): "n/a"}


# --- plain scripts, written from the logging standard (no project code) ---------------------
def _use_experiment(name: str, artifact_root: Path) -> None:
    """set_experiment, with artifacts kept in the tmp folder (the default would be ./mlruns)."""
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(artifact_root / name).as_uri())
    mlflow.set_experiment(name)


def _breast_cancer(workdir: Path):
    frame = load_breast_cancer(as_frame=True).frame
    csv = workdir / "breast_cancer.csv"
    frame.to_csv(csv, index=False)
    return frame, csv


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=80)
    return path


def _binary_metrics(y_true, proba, threshold: float = 0.5) -> dict[str, float]:
    y_pred = (proba >= threshold).astype(int)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred),
        "roc_auc": roc_auc_score(y_true, proba),
        "pr_auc": average_precision_score(y_true, proba),
        "log_loss": log_loss(y_true, proba),
    }


def log_run_by_hand(tracking_uri: str, experiment: str, workdir: Path) -> str:
    """What someone following logging-standard.md by hand writes: its code blocks, its checklist."""
    mlflow.set_tracking_uri(tracking_uri)
    _use_experiment(experiment, workdir / "artifacts")
    frame, csv = _breast_cancer(workdir)
    X, y = frame.drop(columns=["target"]), frame["target"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    params = {"model_type": "logistic_regression", "C": 1.0, "solver": "liblinear", "random_state": 42}
    with mlflow.start_run() as run:
        mlflow.log_params(params)
        model = LogisticRegression(C=1.0, solver="liblinear", random_state=42).fit(X_train, y_train)
        y_pred = model.predict(X_test)
        y_proba = model.predict_proba(X_test)[:, 1]
        mlflow.log_metrics(
            {
                "accuracy": accuracy_score(y_test, y_pred),
                "precision": precision_score(y_test, y_pred),
                "recall": recall_score(y_test, y_pred),
                "f1": f1_score(y_test, y_pred),
                "roc_auc": roc_auc_score(y_test, y_proba),
            }
        )
        mlflow.sklearn.log_model(model, name="model", pip_requirements=PIP)
        fig = Figure(figsize=(6, 5))
        ConfusionMatrixDisplay.from_predictions(y_test, y_pred, ax=fig.subplots())
        mlflow.log_artifact(str(_save(fig, workdir / "confusion_matrix.png")))
        fig = Figure(figsize=(6, 5))
        fig.subplots().barh(list(X.columns[:10]), np.abs(model.coef_[0][:10]))
        mlflow.log_artifact(str(_save(fig, workdir / "feature_importance.png")))
        mlflow.log_metric("revenue_impact_usd", float(((y_pred == 1) & (y_test == 1)).sum() * 100.0))
        for threshold in THRESHOLDS:
            mlflow.log_metric(
                f"f1_threshold_{threshold}", f1_score(y_test, (y_proba > threshold).astype(int))
            )
        requirements_txt = workdir / "requirements.txt"
        requirements_txt.write_text(
            f"scikit-learn=={md.version('scikit-learn')}\nmlflow=={mlflow.__version__}\n"
        )
        mlflow.log_artifact(str(requirements_txt))
        mlflow.log_params(
            {
                "dataset_rows": len(frame),
                "dataset_version": "v1",
                "dataset_hash": hashlib.sha256(csv.read_bytes()).hexdigest(),
            }
        )
        mlflow.set_tag("version", "v1.0")
        mlflow.set_tag("stage", "production_candidate")
        mlflow.set_tags({"python_version": platform.python_version(), "os": platform.platform()})
        cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=42)
        for fold, (train_idx, val_idx) in enumerate(cv.split(X_train, y_train)):
            with mlflow.start_run(nested=True):
                mlflow.log_param("fold", fold)
                fold_model = clone(model).fit(X_train.iloc[train_idx], y_train.iloc[train_idx])
                fold_pred = fold_model.predict(X_train.iloc[val_idx])
                mlflow.log_metric("accuracy", accuracy_score(y_train.iloc[val_idx], fold_pred))
                mlflow.log_metric("f1", f1_score(y_train.iloc[val_idx], fold_pred))
    return run.info.run_id


def log_complete_run(tracking_uri: str, experiment: str, workdir: Path) -> str:
    """A script logging everything the standard (tracking/standard.py) requires of a binary task."""
    mlflow.set_tracking_uri(tracking_uri)
    _use_experiment(experiment, workdir / "artifacts")
    frame, csv = _breast_cancer(workdir)
    sha = hashlib.sha256(csv.read_bytes()).hexdigest()
    X, y = frame.drop(columns=["target"]), frame["target"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=7, stratify=y)
    model = LogisticRegression(solver="liblinear", random_state=7)
    business = {"tp": 100.0, "fp": -20.0, "tn": 0.0, "fn": -50.0}
    with mlflow.start_run(run_name="breast_cancer-complete") as run:
        mlflow.set_tags(
            {
                "version": "v2.0",
                "stage": "candidate",
                "task": "binary",
                "dataset.name": "breast_cancer",
                "dataset.version": "v1",
                "data.hash": sha,
                "git.commit": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
                "mlflow.source.git.commit": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
                "git.dirty": "false",
                "python.version": platform.python_version(),
                "os.platform": platform.platform(),
            }
        )
        mlflow.log_params(
            {
                "dataset.name": "breast_cancer",
                "dataset.version": "v1",
                "data.hash": sha,
                "dataset.rows": len(frame),
                "dataset.columns": frame.shape[1],
                "dataset.size_bytes": csv.stat().st_size,
                "dataset.rows_dropped_missing_target": 0,
                "target": "target",
                "task": "binary",
                "split.test_size": 0.2,
                "split.train_rows": len(y_train),
                "split.test_rows": len(y_test),
                "split.stratified": True,
                "search.enabled": "false",
                "cv.folds": 5,
                "seed.split": 7,
                "seed.cv": 7,
                "seed.model": 7,
                "seed.numpy": 7,
                "thresholds": ",".join(f"{t:g}" for t in THRESHOLDS),
                "positive_class": 1,
                **{f"business.{k}_value_usd": v for k, v in business.items()},
                "model_type": "sklearn.linear_model.LogisticRegression",
                **model.get_params(),
            }
        )
        dataset = mlflow.data.from_pandas(
            frame, source=str(csv), targets="target", name="breast_cancer@v1", digest=sha[:36]
        )
        mlflow.log_input(dataset, context="training")

        fold_metrics = []
        cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=7)
        for fold, (train_idx, val_idx) in enumerate(cv.split(X_train, y_train)):
            with mlflow.start_run(run_name=f"fold-{fold}", nested=True):
                mlflow.log_param("fold", fold)
                mlflow.set_tag("cv.fold", str(fold))
                fitted = clone(model).fit(X_train.iloc[train_idx], y_train.iloc[train_idx])
                metrics = _binary_metrics(
                    y_train.iloc[val_idx], fitted.predict_proba(X_train.iloc[val_idx])[:, 1]
                )
                mlflow.log_metrics(metrics)
                fold_metrics.append(metrics)
        mlflow.log_metrics(
            {
                f"cv_{m}_{stat}": float(fn([f[m] for f in fold_metrics]))
                for m in fold_metrics[0]
                for stat, fn in (("mean", np.mean), ("std", np.std))
            }
        )

        model.fit(X_train, y_train)
        proba = model.predict_proba(X_test)[:, 1]
        y_pred = (proba >= 0.5).astype(int)
        test = _binary_metrics(y_test, proba)
        for t in THRESHOLDS:
            at = (proba >= t).astype(int)
            test |= {
                f"f1_threshold_{t:g}": f1_score(y_test, at),
                f"precision_threshold_{t:g}": precision_score(y_test, at, zero_division=0),
                f"recall_threshold_{t:g}": recall_score(y_test, at),
            }
        counts = {
            "tp": int(((y_pred == 1) & (y_test == 1)).sum()),
            "fp": int(((y_pred == 1) & (y_test == 0)).sum()),
            "tn": int(((y_pred == 0) & (y_test == 0)).sum()),
            "fn": int(((y_pred == 0) & (y_test == 1)).sum()),
        }
        test |= {f"test_{k}": v for k, v in counts.items()}
        test["revenue_impact_usd"] = sum(counts[k] * business[k] for k in counts)
        test["brier_score"] = brier_score_loss(y_test, proba)
        test |= {"train_example_count": len(y_train), "test_example_count": len(y_test)}
        mlflow.log_metrics(test)

        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X_test.head(5), pip_requirements=PIP
        )
        version = mlflow.register_model(info.model_uri, "breast_cancer_lr")
        mlflow.set_tags({"registry.model_name": version.name, "registry.version": version.version})
        pickle = workdir / "pipeline.joblib"
        joblib.dump(model, pickle)
        mlflow.log_artifact(str(pickle), artifact_path="pickle")
        mlflow.set_tag("model.pickle_sha256", hashlib.sha256(pickle.read_bytes()).hexdigest())

        plots = {
            "confusion_matrix.png": lambda ax: ConfusionMatrixDisplay.from_predictions(y_test, y_pred, ax=ax),
            "roc_curve.png": lambda ax: RocCurveDisplay.from_predictions(y_test, proba, ax=ax),
            "pr_curve.png": lambda ax: PrecisionRecallDisplay.from_predictions(y_test, proba, ax=ax),
            "feature_importance.png": lambda ax: ax.barh(list(X.columns), np.abs(model.coef_[0])),
            "lift_curve.png": lambda ax: ax.plot(np.cumsum(np.sort(proba)[::-1])),
            "calibration_curve.png": lambda ax: CalibrationDisplay.from_predictions(y_test, proba, ax=ax),
        }
        for name, draw in plots.items():
            fig = Figure(figsize=(6, 5))
            draw(fig.subplots())
            mlflow.log_artifact(str(_save(fig, workdir / name)))
        pins = sorted(f"{d.metadata['Name']}=={d.version}" for d in md.distributions() if d.metadata["Name"])
        (workdir / "requirements.txt").write_text("\n".join(pins) + "\n")
        mlflow.log_artifact(str(workdir / "requirements.txt"))
        manifest = {
            "run_id": run.info.run_id,
            "dataset": {"sha256": sha, "rows": len(frame)},
            "seed": 7,
            "metrics": test,
        }
        (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        mlflow.log_artifact(str(workdir / "manifest.json"))
    return run.info.run_id


def _reset_fluent_state(previous_experiment_env: str | None) -> None:
    """Undo what the scripts changed in MLflow's process-global fluent state."""
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.tracking.fluent._active_experiment_id = None
    if previous_experiment_env is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = previous_experiment_env


# --- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite file: copying it is far faster than creating a store."""
    db = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_store: Path) -> str:
    """conftest's tmp store (same place), made from the empty template."""
    store = tmp_path / "mlflow"
    store.mkdir()
    shutil.copyfile(empty_store, store / "mlflow.db")
    return f"sqlite:///{store / 'mlflow.db'}"


@dataclass(frozen=True)
class Store:
    """A store holding only runs no Dagster code made."""

    uri: str
    hand: str  # by hand from the doc, in HAND_EXPERIMENT
    complete_beside_hand: str  # complete, in HAND_EXPERIMENT
    complete: str  # complete, alone in COMPLETE_EXPERIMENT
    bare: str  # FINISHED with nothing logged, alone in BARE_EXPERIMENT


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Iterator[Store]:
    """One store with runs no Dagster code made, shared by this module's tests (read-only)."""
    root = tmp_path_factory.mktemp("foreign")
    shutil.copyfile(empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_EXPERIMENT_ID")
    try:
        work = [root / name for name in ("hand", "beside", "complete")]
        for folder in work:
            folder.mkdir()
        hand = log_run_by_hand(uri, HAND_EXPERIMENT, work[0])
        beside = log_complete_run(uri, HAND_EXPERIMENT, work[1])
        complete = log_complete_run(uri, COMPLETE_EXPERIMENT, work[2])
    finally:
        _reset_fluent_state(previous)
    client = MlflowClient(uri)
    bare = client.create_run(client.create_experiment(BARE_EXPERIMENT, (root / "bare").as_uri())).info.run_id
    client.set_terminated(bare)
    yield Store(uri, hand, beside, complete, bare)


@pytest.fixture(autouse=True)
def _fast_failing_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sets these for itself with setdefault; pinning them here keeps os.environ restored."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def audit_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code, out, err = audit(capsys, *args, "--json")
    return code, json.loads(out)


def audit_processes(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``experiments-dagster audit`` once per argument list, concurrently (each pays its imports)."""
    assert CLI.is_file(), f"console script not installed at {CLI}"
    procs = [
        subprocess.Popen(
            [str(CLI), "audit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for args in commands
    ]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


def findings(run: dict) -> dict[tuple[str, str], dict]:
    return {(f["kind"], f["name"]): f for f in run["findings"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a complete experiment made by the graph ------------------------------------------------
@pytest.mark.slow
def test_experiment_materialized_by_the_graph_is_complete(instance, resources, tracking_uri, capsys):
    instance.add_dynamic_partitions(DATASET_VERSIONS, ["iris/v1"])
    result = dg.materialize(ASSETS, instance=instance, resources=resources, partition_key="iris/v1")
    assert result.success
    code, report = audit_json(capsys, "--experiment", "iris", "--tracking-uri", tracking_uri)
    assert code == 0
    assert report["experiment"] == "iris" and report["complete"] is True
    (run,) = report["runs"]
    parent = MlflowClient(tracking_uri).get_run(run["run_id"])
    assert "mlflow.parentRunId" not in parent.data.tags and parent.info.run_name == "iris@v1 #1"
    assert run["run_name"] == "iris@v1 #1" and run["task"] == "multiclass" and run["complete"] is True
    found = findings(run)
    # A Dagster run: the Dagster tags apply; only a search that was not configured is n/a.
    assert {key: f["status"] for key, f in found.items() if f["status"] != "present"} == NOT_APPLICABLE_SEARCH
    assert {f["status"] for f in run["findings"]} == {"present", "n/a"}
    assert {
        (r.kind, r.name)
        for r in requirements("multiclass")
        if r.kind not in ("cv_metric", "threshold_metrics")
    } <= set(found)
    assert {("cv_metric", f"cv_{m}_{s}") for m in metric_names("multiclass") for s in ("mean", "std")} <= set(
        found
    )
    assert found[("nested_runs", "cv.folds")]["detail"] == "5 folds"
    assert found[("model", "model")]["detail"] == parent.data.tags["model.uri"]
    assert set(run) == {"run_id", "run_name", "task", "complete", "findings"}
    assert all(set(f) == {"kind", "name", "asset", "status", "detail"} for f in run["findings"])

    code, out, err = audit(capsys, "--experiment", "iris", "--tracking-uri", tracking_uri)
    assert code == 0 and err == ""
    assert f"run {run['run_id']} (iris@v1 #1, multiclass): COMPLETE" in out
    assert "1/1 runs of 'iris' are complete." in out
    rows = [line.split() for line in out.splitlines()[1:] if line.startswith("  ")]
    assert len(rows) == len(run["findings"]) and {row[2] for row in rows} == {"present", "n/a"}

    code, out, _ = audit(
        capsys, "--experiment", "iris", "--run-id", run["run_id"], "--tracking-uri", tracking_uri
    )
    assert code == 0 and "1/1 runs of 'iris' are complete." in out


# --- runs this project did not create ----------------------------------------------------------
def test_run_logged_by_hand_from_the_standard_doc_is_incomplete(foreign, capsys):
    code, report = audit_json(
        capsys, "--experiment", HAND_EXPERIMENT, "--run-id", foreign.hand, "--tracking-uri", foreign.uri
    )
    assert code == 1
    (run,) = report["runs"]
    assert report["complete"] is False and run["complete"] is False
    assert run["run_id"] == foreign.hand and run["task"] == "binary"  # inferred: no task param or tag
    found = findings(run)
    status = {key: f["status"] for key, f in found.items()}

    # Logged as the doc shows: present.
    for key in [
        ("status", "FINISHED"),
        ("param", "model_type"),
        ("tag", "version"),
        ("tag", "stage"),
        ("metric", "accuracy"),
        ("metric", "roc_auc"),
        ("metric", "revenue_impact_usd"),
        ("threshold_metrics", "f1_threshold_0.3"),
        ("png", "confusion_matrix.png"),
        ("png", "feature_importance.png"),
        ("artifact", "requirements.txt"),
    ]:
        assert status[key] == "present", key
    # The doc's own names (random_state, dataset_hash, python_version) are not the standard's names.
    for key in [
        ("param", "seed.split"),
        ("param", "data.hash"),
        ("param", "task"),
        ("param", "cv.folds"),
        ("tag", "git.commit"),
        ("tag", "python.version"),
        ("tag", "os.platform"),
        ("dataset_input", "training"),
        ("metric", "pr_auc"),
        ("metric", "log_loss"),
        ("threshold_metrics", "precision_threshold_0.3"),
        ("threshold_metrics", "recall_threshold_0.7"),
        ("cv_metric", "cv_accuracy_mean"),
        ("pickle", "pickle/pipeline.joblib"),
        ("tag", "model.pickle_sha256"),
        ("png", "roc_curve.png"),
        ("png", "pr_curve.png"),
        ("artifact", "manifest.json"),
    ]:
        assert status[key] == "missing", key
    # Fold runs as the doc's CV section logs them: only accuracy and f1.
    assert status[("nested_runs", "cv.folds")] == "malformed"
    assert (
        "lacks precision, recall, roc_auc, pr_auc, log_loss" in found[("nested_runs", "cv.folds")]["detail"]
    )
    # model_type "logistic_regression" names no known estimator; the model has no signature.
    assert status[("hyperparameters", "model_type")] == "malformed"
    assert (
        "'logistic_regression' is not a scikit-learn or XGBoost estimator"
        in (found[("hyperparameters", "model_type")]["detail"])
    )
    assert status[("model", "model")] == "malformed"
    assert "has no signature" in found[("model", "model")]["detail"]
    # Dagster's tags do not apply to a run Dagster did not make.
    for name in DAGSTER_TAGS:
        assert found[("tag", name)]["status"] == "n/a"
        assert found[("tag", name)]["detail"] == "run not logged by Dagster"

    code, out, err = audit(
        capsys, "--experiment", HAND_EXPERIMENT, "--run-id", foreign.hand, "--tracking-uri", foreign.uri
    )
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"run {foreign.hand} (") and "binary): INCOMPLETE (" in lines[0]
    problems = int(lines[0].split("INCOMPLETE (")[1].split()[0])
    assert problems == sum(f["status"] in ("missing", "malformed") for f in run["findings"]) > 20
    assert any(line.split() == ["param", "seed.split", "missing"] for line in lines)
    assert any(line.split()[:3] == ["nested_runs", "cv.folds", "malformed"] for line in lines)
    assert any(
        line.split() == ["tag", "dagster.run_id", "n/a", "run", "not", "logged", "by", "Dagster"]
        for line in lines
    )
    assert "0/1 runs of 'breast-cancer-by-hand' are complete." in out


def test_foreign_run_logging_everything_the_standard_requires_is_complete(foreign, capsys):
    code, report = audit_json(capsys, "--experiment", COMPLETE_EXPERIMENT, "--tracking-uri", foreign.uri)
    assert code == 0
    assert report == {"experiment": COMPLETE_EXPERIMENT, "complete": True, "runs": report["runs"]}
    (run,) = report["runs"]  # the five fold runs are nested, not audited on their own
    assert run["run_id"] == foreign.complete and run["task"] == "binary" and run["complete"] is True
    found = findings(run)
    assert {key: f["status"] for key, f in found.items() if f["status"] != "present"} == {
        **{("tag", name): "n/a" for name in DAGSTER_TAGS},
        **NOT_APPLICABLE_SEARCH,
    }
    assert found[("param", "search.enabled")]["status"] == "present"
    assert found[("tag", "registry.version")]["status"] == "present"
    assert found[("nested_runs", "cv.folds")]["detail"] == "5 folds"
    assert found[("model", "model")]["detail"].startswith("models:/m-")  # found through the run's outputs
    assert (
        found[("hyperparameters", "model_type")]["detail"]
        == f"{len(LogisticRegression().get_params())} hyperparameters"
    )
    thresholds = {name for kind, name in found if kind == "threshold_metrics"}
    assert thresholds == {f"{m}_threshold_{t:g}" for t in THRESHOLDS for m in ("f1", "precision", "recall")}

    code, out, _ = audit(capsys, "--experiment", COMPLETE_EXPERIMENT, "--tracking-uri", foreign.uri)
    assert code == 0
    assert f"run {foreign.complete} (breast_cancer-complete, binary): COMPLETE" in out
    assert "1/1 runs of 'breast-cancer-complete' are complete." in out


@pytest.mark.slow
def test_console_command_exit_codes_on_foreign_runs(foreign):
    complete, bare = audit_processes(
        ["--experiment", COMPLETE_EXPERIMENT, "--tracking-uri", foreign.uri],
        ["--experiment", BARE_EXPERIMENT, "--tracking-uri", foreign.uri, "--json"],
    )
    assert complete.returncode == 0, complete.stderr
    assert f"run {foreign.complete} (breast_cancer-complete, binary): COMPLETE" in complete.stdout
    assert "1/1 runs of 'breast-cancer-complete' are complete." in complete.stdout

    assert bare.returncode == 1, bare.stderr
    report = json.loads(bare.stdout)
    (run,) = report["runs"]
    assert report["complete"] is False and run["run_id"] == foreign.bare
    found = findings(run)
    assert found[("status", "FINISHED")]["status"] == "present"
    assert found[("model", "model")] == {
        "kind": "model",
        "name": "model",
        "asset": "final_model",
        "status": "missing",
        "detail": "no logged model",
    }


def test_run_id_restricts_the_audit_to_that_run(foreign, capsys):
    code, report = audit_json(capsys, "--experiment", HAND_EXPERIMENT, "--tracking-uri", foreign.uri)
    assert code == 1 and report["complete"] is False
    assert sorted(r["run_id"] for r in report["runs"]) == sorted([foreign.hand, foreign.complete_beside_hand])

    code, report = audit_json(
        capsys,
        "--experiment",
        HAND_EXPERIMENT,
        "--run-id",
        foreign.complete_beside_hand,
        "--tracking-uri",
        foreign.uri,
    )
    assert code == 0 and report["complete"] is True
    assert [r["run_id"] for r in report["runs"]] == [foreign.complete_beside_hand]

    code, out, _ = audit(
        capsys, "--experiment", HAND_EXPERIMENT, "--run-id", foreign.hand, "--tracking-uri", foreign.uri
    )
    assert code == 1
    assert out.count("\nrun ") + out.startswith("run ") == 1 and foreign.complete_beside_hand not in out


# --- bad arguments and unreachable stores: exit 2 with a clear message -----------------------
def test_missing_experiment_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["audit", "--json"])
    assert exc.value.code == 2
    assert "the following arguments are required: --experiment" in capsys.readouterr().err


def test_unknown_experiment_exits_2_naming_the_ones_there(foreign, capsys):
    code, out, err = audit(capsys, "--experiment", "no-such-experiment", "--tracking-uri", foreign.uri)
    assert code == 2 and out == ""
    assert err.startswith("experiments-dagster audit: No experiment named 'no-such-experiment'")
    assert "'breast-cancer-by-hand'" in err and "'breast-cancer-complete'" in err


def test_run_of_another_experiment_or_unknown_run_exits_2(foreign, capsys):
    code, out, err = audit(
        capsys, "--experiment", COMPLETE_EXPERIMENT, "--run-id", foreign.hand, "--tracking-uri", foreign.uri
    )
    hand_experiment = MlflowClient(foreign.uri).get_experiment_by_name(HAND_EXPERIMENT).experiment_id
    assert code == 2 and out == ""
    assert (
        f"Run {foreign.hand} belongs to experiment id {hand_experiment}, not 'breast-cancer-complete'" in err
    )

    code, out, err = audit(
        capsys, "--experiment", COMPLETE_EXPERIMENT, "--run-id", "0" * 32, "--tracking-uri", foreign.uri
    )
    assert code == 2 and out == ""
    assert f"No run '{'0' * 32}' in this store" in err


def test_nonexistent_sqlite_store_exits_2_and_is_not_created(tmp_path, capsys):
    db = tmp_path / "nowhere" / "mlflow.db"
    code, out, err = audit(capsys, "--experiment", "iris", "--tracking-uri", f"sqlite:///{db}")
    assert code == 2 and out == ""
    assert f"No MLflow store at sqlite:///{db}: the SQLite file does not exist" in err
    assert not db.exists() and not db.parent.exists()

    # The default store ($MLFLOW_TRACKING_URI, a tmp path set by conftest) is not created either.
    default_db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    code, _, err = audit(capsys, "--experiment", "iris")
    assert code == 2 and "the SQLite file does not exist" in err
    assert not default_db.exists() and not default_db.parent.exists()


@pytest.mark.slow
def test_console_command_exits_2_on_bad_arguments_and_unreachable_stores(foreign):
    url = f"http://127.0.0.1:{closed_port()}"
    missing, dead = audit_processes(
        ["--tracking-uri", foreign.uri],
        ["--experiment", "iris", "--tracking-uri", url],
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert "the following arguments are required: --experiment" in missing.stderr
    assert dead.returncode == 2 and dead.stdout == ""
    assert f"experiments-dagster audit: MLflow store {url} is unreachable" in dead.stderr
    assert "Traceback" not in dead.stderr


def test_unreachable_http_store_exits_2(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = audit(capsys, "--experiment", "iris", "--tracking-uri", url)
    assert code == 2 and out == ""
    assert f"MLflow store {url} is unreachable" in err and "Connection refused" in err


# --- robustness on stores and runs made elsewhere --------------------------------------------
def test_relative_sqlite_uri_of_an_existing_store_is_audited(foreign, tmp_path, monkeypatch, capsys):
    """``sqlite:///mlflow.db`` is ``mlflow.db`` in the working directory (as in MLflow's own docs)."""
    shutil.copyfile(foreign.uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    code, out, err = audit(
        capsys, "--experiment", COMPLETE_EXPERIMENT, "--tracking-uri", "sqlite:///mlflow.db"
    )
    # BUG: exits 2 with "the SQLite file does not exist": paths.sqlite_path reads it as /mlflow.db.
    assert err == ""
    assert code == 0 and "1/1 runs of 'breast-cancer-complete' are complete." in out


def test_unparseable_thresholds_param_is_reported_not_a_crash(foreign, tmp_path, capsys):
    """A foreign run that logged ``thresholds`` as a list: ``log_param("thresholds", [0.3, 0.5, 0.7])``."""
    shutil.copyfile(foreign.uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("odd-params", (tmp_path / "odd-params").as_uri()))
    client.log_param(run.info.run_id, "task", "binary")
    client.log_param(run.info.run_id, "thresholds", str([0.3, 0.5, 0.7]))
    client.set_terminated(run.info.run_id)

    # BUG: raises ValueError ("could not convert string to float: '[0.3'") instead of reporting it.
    code, report = audit_json(capsys, "--experiment", "odd-params", "--tracking-uri", uri)
    assert code == 1 and report["complete"] is False
    (audited,) = report["runs"]
    assert audited["run_id"] == run.info.run_id
    threshold_findings = [f for f in audited["findings"] if f["kind"] == "threshold_metrics"]
    assert threshold_findings and not any(f["status"] in ("present", "n/a") for f in threshold_findings)
