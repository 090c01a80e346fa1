"""Materialize the real graph on tmp stores and read the MLflow record back."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path

import dagster as dg
import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from experiments_dagster.core.cpus import usable_cpus
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.ml.parallel import fold_workers
from experiments_dagster.ml.training import estimator_of
from experiments_dagster.tracking.model_io import load_verified_model

pytestmark = pytest.mark.slow

COMMON_PARAMS = {
    "model_type",
    "dataset.name",
    "dataset.version",
    "data.hash",
    "dataset.rows",
    "dataset.columns",
    "dataset.size_bytes",
    "dataset.rows_dropped_missing_target",
    "split.train_rows",
    "split.test_rows",
    "split.test_size",
    "cv.folds",
    "seed.split",
    "seed.cv",
    "seed.model",
    "seed.numpy",
    "task",
    "target",
}
TASK_METRICS = {
    "binary": {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss"},
    "multiclass": {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc_ovr",
    },
    "regression": {"rmse", "mae", "r2", "mape"},
}
TASK_PLOTS = {
    "binary": {"confusion_matrix.png", "feature_importance.png", "roc_curve.png", "pr_curve.png"},
    "multiclass": {"confusion_matrix.png", "feature_importance.png", "roc_curve.png", "pr_curve.png"},
    "regression": {"feature_importance.png", "residuals.png", "residual_distribution.png"},
}
CASES = [("breast_cancer/v2", "binary"), ("iris/v1", "multiclass"), ("diabetes/v1", "regression")]


def materialize(instance, resources, key, selection=None, run_config=None, raise_on_error=True):
    if key not in instance.get_dynamic_partitions(DATASET_VERSIONS):
        instance.add_dynamic_partitions(DATASET_VERSIONS, [key])
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key=key,
        selection=selection,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def runs_of(client: MlflowClient) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def parent_runs(client: MlflowClient) -> list:
    return [r for r in runs_of(client) if "mlflow.parentRunId" not in r.data.tags]


def data_file(data_dir: Path, key: str) -> Path:
    dataset, version = key.split("/")
    return next((data_dir / dataset).glob(f"{version}.*"))


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@pytest.mark.parametrize(("key", "task"), CASES)
def test_graph_logs_complete_experiment(instance, resources, tracking_uri, data_dir, tmp_path, key, task):
    result = materialize(instance, resources, key)
    assert result.success
    client = MlflowClient(tracking_uri)
    parents = parent_runs(client)
    assert len(parents) == 1
    parent = parents[0]
    dataset, version = key.split("/")
    spec = yaml.safe_load((data_dir / dataset / "experiment.yaml").read_text())
    path = data_file(data_dir, key)
    frame = read_frame(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    dropped = int(frame[spec["target"]].isna().sum())

    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == f"{dataset}@{version} #1" and parent.data.tags["attempt"] == "1"
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags

    # Params: dataset facts, split, seeds, and every hyperparameter of the fitted estimator.
    assert COMMON_PARAMS <= set(params)
    assert params["data.hash"] == sha
    assert params["dataset.rows"] == str(len(frame))
    assert params["dataset.columns"] == str(frame.shape[1])
    assert params["dataset.size_bytes"] == str(path.stat().st_size)
    assert params["dataset.rows_dropped_missing_target"] == str(dropped)
    assert int(params["split.train_rows"]) + int(params["split.test_rows"]) == len(frame) - dropped
    assert params["task"] == task
    pickle_path = client.download_artifacts(parent.info.run_id, "pickle/pipeline.joblib", str(tmp_path))
    pipeline = joblib.load(pickle_path)
    estimator = estimator_of(pipeline)
    for name, value in estimator.get_params().items():
        assert params[name] == str(value), name
    assert params["model_type"] == f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    for name, value in spec["hyperparameters"].items():
        assert params[name] == str(value)

    # Metrics: task metrics, CV mean/std equal to the nested fold runs, binary extras.
    assert TASK_METRICS[task] <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    folds = [r for r in runs_of(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(folds) == 5
    assert {r.info.status for r in folds} == {"FINISHED"}
    assert sorted(r.data.params["fold"] for r in folds) == ["0", "1", "2", "3", "4"]
    for name in TASK_METRICS[task]:
        per_fold = [r.data.metrics[name] for r in folds]
        assert metrics[f"cv_{name}_mean"] == pytest.approx(np.mean(per_fold))
        assert metrics[f"cv_{name}_std"] == pytest.approx(np.std(per_fold))

    # The final model is the refit `fold_models` trained in its pool beside the last folds: the
    # same trees as the pickle, a lone fit's n_jobs, and the pool's wall time on the parent.
    refit = result.output_for_node("fold_models").refit
    booster = estimator_of(refit.pipeline).get_booster().save_raw("ubj")
    assert booster == estimator.get_booster().save_raw("ubj")
    assert estimator.get_params()["n_jobs"] == usable_cpus()
    assert metrics["fit_time_seconds"] == pytest.approx(refit.fit_seconds)
    assert metrics["training_wall_seconds"] >= metrics["fit_time_seconds"] > 0

    # The pyfunc model predicts exactly as the pickled pipeline does, on raw test rows.
    test_rows = frame.dropna(subset=[spec["target"]]).drop(columns=[spec["target"]]).head(40)
    mlflow.set_tracking_uri(tracking_uri)
    model = load_verified_model(client, tags["model.uri"])
    np.testing.assert_array_equal(np.asarray(model.predict(test_rows)), pipeline.predict(test_rows))
    if task != "regression":
        proba = model.predict(test_rows, params={"predict_method": "predict_proba"})
        np.testing.assert_allclose(proba.to_numpy(), pipeline.predict_proba(test_rows), rtol=1e-6)
    assert model.metadata.signature is not None
    reqs = Path(mlflow.pyfunc.get_model_dependencies(tags["model.uri"])).read_text()
    assert "xgboost-cpu==3.2.0" in reqs and f"mlflow=={mlflow.__version__}" in reqs

    if task == "binary":
        for t in spec["thresholds"]:
            assert {f"f1_threshold_{t}", f"precision_threshold_{t}", f"recall_threshold_{t}"} <= set(metrics)
        values = spec["business_values"]
        expected = sum(metrics[f"test_{k}"] * values[k] for k in ("tp", "fp", "tn", "fn"))
        assert metrics["revenue_impact_usd"] == pytest.approx(expected)
        assert metrics["test_tp"] + metrics["test_fn"] > 0

    # Artifacts: plots (real PNGs), pickle with its sha256, requirements, manifest.
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert TASK_PLOTS[task] | {"requirements.txt", "manifest.json", "pickle"} <= artifacts
    for name in TASK_PLOTS[task]:
        png = Path(client.download_artifacts(parent.info.run_id, name, str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert hashlib.sha256(Path(pickle_path).read_bytes()).hexdigest() == tags["model.pickle_sha256"]
    reqs_txt = Path(
        client.download_artifacts(parent.info.run_id, "requirements.txt", str(tmp_path))
    ).read_text()
    assert f"mlflow=={mlflow.__version__}" in reqs_txt and "dagster==1.13.27" in reqs_txt
    manifest = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "manifest.json", str(tmp_path))).read_text()
    )
    assert manifest["dataset"]["sha256"] == sha and manifest["mlflow"]["run_id"] == parent.info.run_id

    # Tags: version/stage, dataset identity, git from the project's repo, platform, Dagster.
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    expected_commit = head.stdout.strip() or "unknown"
    assert tags["version"] == spec["version"]
    # `stage` starts from config and follows promotion: the first complete model becomes champion.
    assert (
        spec["stage"] == "candidate"
        and tags["stage"] == "production"
        and tags["registry.alias"] == "champion"
    )
    registered = client.get_model_version(f"{dataset}_model", tags["registry.version"])
    assert registered.tags["promotion.decision"] == "promoted" and registered.tags["data.hash"] == sha
    assert tags["dataset.name"] == dataset and tags["dataset.version"] == version and tags["data.hash"] == sha
    assert tags["git.commit"] == tags["mlflow.source.git.commit"] == expected_commit
    assert tags["git.dirty"] in {"true", "false", "unknown"}
    assert tags["python.version"] == platform.python_version() and tags["os.platform"] == platform.platform()
    assert tags["dagster.run_id"] == result.run_id and tags["dagster.partition_key"] == key
    assert all(r.data.tags["dagster.run_id"] == result.run_id for r in folds)

    # Dataset input with our sha256 (MLflow digests are capped at 36 characters).
    # The test split is a second input: the evaluation dataset of the test metrics.
    inputs = client.get_run(parent.info.run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert len(inputs) == 2 and set(by_context) == {"training", "test"}
    assert by_context["training"].digest == sha[:36] and by_context["training"].name == key.replace("/", "@")
    assert json.loads(by_context["training"].profile)["sha256"] == sha
    test_profile = json.loads(by_context["test"].profile)
    assert by_context["test"].name == f"{key.replace('/', '@')}/test"
    assert test_profile["num_rows"] == int(parent.data.params["split.test_rows"])

    # Dagster metadata carries the run URL and the key numbers.
    final = result.asset_materializations_for_node("final_model")[0].metadata
    assert final["mlflow_run_id"].value == parent.info.run_id
    assert parent.info.run_id in final["mlflow_run_url"].value
    first_metric = sorted(TASK_METRICS[task])[0]
    assert final[first_metric].value == pytest.approx(metrics[first_metric])
    # Each metric once: a float entry per test metric, no second copy in a markdown table.
    assert not [k for k, v in final.items() if isinstance(v, dg.MarkdownMetadataValue)]
    floats = {k for k, v in final.items() if isinstance(v, dg.FloatMetadataValue)}
    assert TASK_METRICS[task] <= floats
    # Every plot in one markdown entry (one click in the UI), each a PNG data URI.
    plots_meta = result.asset_materializations_for_node("evaluation_plots")[0].metadata
    markdown = [k for k, v in plots_meta.items() if isinstance(v, dg.MarkdownMetadataValue)]
    assert markdown == ["plots"]
    # The evaluation plots beside them (mlflow.models.evaluate's): lift and calibration, binary only.
    shown = TASK_PLOTS[task] | ({"lift_curve.png", "calibration_curve.png"} if task == "binary" else set())
    assert plots_meta["plots"].value.count("](data:image/png;base64,") == len(shown)
    assert all(f"![{name}](data:image/png;base64," in plots_meta["plots"].value for name in shown)
    for name in TASK_PLOTS[task]:
        assert f"![{name}](data:image/png;base64," in plots_meta["plots"].value


def test_downstream_alone_logs_into_the_run_of_its_input(instance, resources, tracking_uri):
    key = "iris/v1"
    first = materialize(instance, resources, key)
    client = MlflowClient(tracking_uri)
    (parent,) = parent_runs(client)
    before = {a.path for a in client.list_artifacts(parent.info.run_id)}
    again = materialize(instance, resources, key, selection=["evaluation_plots"])
    assert again.success and again.run_id != first.run_id
    (same,) = parent_runs(client)
    assert same.info.run_id == parent.info.run_id
    assert same.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == before
    assert len(runs_of(client)) == 6  # one parent, five folds: nothing new


def test_exception_in_an_asset_marks_runs_failed_with_the_error(
    instance, resources, tracking_uri, monkeypatch
):
    # splits' sample fit would refuse this solver before any run: skip it to fail inside fold_models.
    monkeypatch.setattr("experiments_dagster.ml.prepare.check_model_trains", lambda *args: None)
    config = {
        "ops": {
            "splits": {
                "config": {
                    "model": "sklearn.linear_model.LogisticRegression",
                    "hyperparameters": {"solver": "no-such-solver"},
                }
            }
        }
    }
    result = materialize(instance, resources, "iris/v1", run_config=config, raise_on_error=False)
    assert not result.success
    client = MlflowClient(tracking_uri)
    (parent,) = parent_runs(client)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error.asset"] == "fold_models"
    assert parent.data.tags["error.type"] == "InvalidParameterError"
    assert "no-such-solver" in parent.data.tags["error.message"]
    folds = [r for r in runs_of(client) if "mlflow.parentRunId" in r.data.tags]
    # Only the folds that started together (as many as train at once) exist: the first failure
    # FAILED its run; a sibling either failed the same way or was KILLED still training.
    assert 1 <= len(folds) <= fold_workers(5)
    assert "FAILED" in {r.info.status for r in folds} and {r.info.status for r in folds} <= {
        "FAILED",
        "KILLED",
    }
    assert all(r.data.tags["error.type"] == "InvalidParameterError" for r in folds)
    assert {r.info.status for r in runs_of(client)} <= {"FAILED", "KILLED"}


def test_bad_input_fails_before_any_run_with_a_clear_error(instance, resources, tracking_uri):
    config = {"ops": {"splits": {"config": {"target": "no_such_column"}}}}
    result = materialize(instance, resources, "iris/v1", run_config=config, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else ""
    message += failure.step_failure_data.error.message
    assert "no_such_column" in message and "species" in message and "experiment.yaml" in message
    assert runs_of(MlflowClient(tracking_uri)) == []


def test_a_stored_fold_models_value_without_a_refit_gets_its_final_model_fitted_in_final_model(
    instance, resources, tracking_uri, monkeypatch, tmp_path
):
    """A `FoldModels` value stored before the refit joined the CV's pool has no refit:
    `final_model` fits the model itself, with the same trees, and the experiment is complete."""
    from dataclasses import replace

    from experiments_dagster.experiment import training as asset_logging
    from experiments_dagster.ml import cv
    from experiments_dagster.tracking.audit import Auditor

    def without_refit(*args, **kwargs):
        return replace(cv.cross_validate_and_refit(*args, **kwargs), refit=None)

    monkeypatch.setattr(asset_logging, "cross_validate_and_refit", without_refit)
    fitted_here: list = []
    real_fit = asset_logging.fit_final_model

    def recording_fit(*args, **kwargs):
        fitted_here.append(real_fit(*args, **kwargs))
        return fitted_here[-1]

    monkeypatch.setattr(asset_logging, "fit_final_model", recording_fit)

    result = materialize(instance, resources, "iris/v1")

    assert result.success
    assert result.output_for_node("fold_models").refit is None
    assert len(fitted_here) == 1  # the fallback ran, once
    client = MlflowClient(tracking_uri)
    (parent,) = parent_runs(client)
    assert parent.data.metrics["fit_time_seconds"] == pytest.approx(fitted_here[0].fit_seconds)
    pipeline = joblib.load(
        client.download_artifacts(parent.info.run_id, "pickle/pipeline.joblib", str(tmp_path))
    )
    assert estimator_of(pipeline).get_params()["n_jobs"] == usable_cpus()
    assert Auditor(client).audit(parent.info.run_id).complete
