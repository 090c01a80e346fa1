"""Asset checks: green on a complete experiment, red (and the run FAILED) when an item is broken."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg
import pytest
from mlflow import MlflowClient

from experiments_dagster.cli.main import main as cli_main
from experiments_dagster.defs.checks import LOGGING_CHECKS, audit_result
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.experiment import training as asset_logging
from experiments_dagster.tracking import standard
from experiments_dagster.tracking.standard import Requirement
from experiments_dagster.tracking.store import Tracker

pytestmark = pytest.mark.slow
KEY = "iris/v1"
CHECK_NAMES = {
    "splits_logged_completely",
    "search_trials_logged_completely",
    "fold_models_logged_completely",
    "cv_metrics_logged_completely",
    "final_model_logged_completely",
    "evaluation_plots_logged_completely",
    "experiment_logged_completely",
}


def run_graph(instance, resources, key=KEY):
    instance.add_dynamic_partitions(DATASET_VERSIONS, [key])
    return dg.materialize(
        [*ASSETS, *LOGGING_CHECKS],
        instance=instance,
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )


def parent_of(client: MlflowClient):
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent


def local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def problems(result: dg.AssetCheckResult) -> list[str]:
    return result.metadata["missing_or_malformed"].value


@pytest.fixture
def experiment(instance, resources, tracking_uri):
    result = run_graph(instance, resources)
    assert result.success
    tracker = Tracker(tracking_uri)
    return instance, tracker, parent_of(tracker.client), result


def check(instance, tracker, asset: str, name: str) -> dg.AssetCheckResult:
    return audit_result(tracker, parent_of(tracker.client).info.run_id, asset, name)


def test_complete_experiment_has_every_check_green(experiment):
    _, tracker, parent, result = experiment
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == CHECK_NAMES
    assert all(e.passed for e in evaluations.values())
    assert evaluations["experiment_logged_completely"].metadata["items_checked"].value > 60
    tags = tracker.client.get_run(parent.info.run_id).data.tags
    assert tags["audit.status"] == "complete" and tags["audit.problems"] == "0"
    assert tracker.client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_deleted_fold_run_fails_fold_models_check_and_marks_the_run(experiment):
    instance, tracker, parent, _ = experiment
    folds = tracker.client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    tracker.client.delete_run(folds[0].info.run_id)
    result = check(instance, tracker, "fold_models", "fold_models_logged_completely")
    assert not result.passed
    assert problems(result) == ["nested_runs cv.folds: missing 4 fold runs, cv.folds is 5"]
    run = tracker.client.get_run(parent.info.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.asset"] == "fold_models_logged_completely"
    assert run.data.tags["error.type"] == "IncompleteLogError"


def test_nan_metric_is_malformed(experiment):
    instance, tracker, parent, _ = experiment
    tracker.log_metrics(parent.info.run_id, {"accuracy": math.nan}, step=1)
    result = check(instance, tracker, "final_model", "final_model_logged_completely")
    assert not result.passed
    assert problems(result) == ["metric accuracy: malformed value is nan"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "does not decode: OSError: Truncated File Read"),
        (lambda p: p.write_bytes(b""), "not a PNG (0 bytes)"),
        (lambda p: p.unlink(), "png confusion_matrix.png: missing"),
    ],
)
def test_broken_plot_fails_evaluation_plots_check(experiment, damage, expected):
    instance, tracker, parent, _ = experiment
    damage(local_path(parent.info.artifact_uri) / "confusion_matrix.png")
    result = check(instance, tracker, "evaluation_plots", "evaluation_plots_logged_completely")
    assert not result.passed
    (problem,) = problems(result)
    assert problem.startswith("png confusion_matrix.png") and expected in problem


def test_model_that_does_not_load_fails_final_model_check(experiment):
    instance, tracker, parent, _ = experiment
    model = tracker.client.get_logged_model(parent.data.tags["model.id"])
    (booster,) = local_path(model.artifact_location).rglob("estimator.ubj")
    booster.write_bytes(b"not a booster")
    result = check(instance, tracker, "final_model", "final_model_logged_completely")
    assert not result.passed
    (problem,) = problems(result)
    assert problem.startswith("model model: malformed models:/") and "does not load/predict" in problem


def test_pickle_with_wrong_sha256_fails_final_model_check(experiment):
    instance, tracker, parent, _ = experiment
    pickle = local_path(parent.info.artifact_uri) / "pickle" / "pipeline.joblib"
    pickle.write_bytes(pickle.read_bytes() + b"tampered")
    result = check(instance, tracker, "final_model", "final_model_logged_completely")
    assert not result.passed
    (problem,) = problems(result)
    assert (
        problem.startswith("pickle pickle/pipeline.joblib: malformed sha256")
        and "does not match tag" in problem
    )


def test_missing_manifest_fails_whole_experiment_check(experiment):
    instance, tracker, parent, _ = experiment
    (local_path(parent.info.artifact_uri) / "manifest.json").unlink()
    result = check(instance, tracker, "repro_manifest", "experiment_logged_completely")
    assert not result.passed
    assert problems(result) == ["artifact manifest.json: missing"]
    run = tracker.client.get_run(parent.info.run_id)
    assert run.data.tags["audit.status"] == "incomplete"
    assert run.info.status == "FAILED" and run.data.tags["error.asset"] == "experiment_logged_completely"


def test_missing_param_blocks_downstream_and_fails_the_run(instance, resources, tracking_uri, monkeypatch):
    original = asset_logging.split_params
    monkeypatch.setattr(
        asset_logging, "split_params", lambda *a: {k: v for k, v in original(*a).items() if k != "seed.cv"}
    )
    result = run_graph(instance, resources)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "splits_logged_completely" and not evaluation.passed
    assert evaluation.metadata["missing_or_malformed"].value == ["param seed.cv: missing"]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_data", "data_hash", "splits"}  # the blocking check stopped fold_models
    run = parent_of(MlflowClient(tracking_uri))
    assert run.info.status == "FAILED" and run.data.tags["error.asset"] == "splits_logged_completely"


def test_missing_cv_std_blocks_final_model(instance, resources, tracking_uri, monkeypatch):
    original = asset_logging.summarize_folds
    monkeypatch.setattr(
        asset_logging,
        "summarize_folds",
        lambda m: {k: v for k, v in original(m).items() if k != "cv_f1_macro_std"},
    )
    result = run_graph(instance, resources)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["cv_metrics_logged_completely"]
    assert failed[0].metadata["missing_or_malformed"].value == ["cv_metric cv_f1_macro_std: missing"]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "final_model" not in materialized


def test_one_line_standard_change_is_enforced_everywhere(
    instance, resources, tracking_uri, monkeypatch, capsys
):
    """A new metric is computed, logged per fold and aggregated; a new artifact fails check and audit."""
    monkeypatch.setattr(
        standard,
        "STANDARD",
        (
            *standard.STANDARD,
            Requirement("metric", "balanced_accuracy", "final_model", frozenset({"multiclass"})),
            Requirement("png", "calibration.png", "evaluation_plots"),
        ),
    )
    result = run_graph(instance, resources)
    client = MlflowClient(tracking_uri)
    parent = parent_of(client)
    assert 0.0 < parent.data.metrics["balanced_accuracy"] <= 1.0
    assert (
        "cv_balanced_accuracy_mean" in parent.data.metrics
        and "cv_balanced_accuracy_std" in parent.data.metrics
    )
    folds = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert all("balanced_accuracy" in f.data.metrics for f in folds)
    verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert (
        verdicts["final_model_logged_completely"].passed and verdicts["cv_metrics_logged_completely"].passed
    )
    plots = verdicts["evaluation_plots_logged_completely"]
    assert not plots.passed and plots.metadata["missing_or_malformed"].value == [
        "png calibration.png: missing"
    ]
    assert "repro_manifest" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    code = cli_main(["audit", "--experiment", "iris", "--tracking-uri", tracking_uri])
    out = capsys.readouterr().out
    assert code == 1
    assert "png calibration.png" in out and "missing" in out.split("png calibration.png")[1].splitlines()[0]
