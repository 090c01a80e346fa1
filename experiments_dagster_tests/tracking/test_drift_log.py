"""Drift metric names MLflow accepts, one per feature."""

from __future__ import annotations

from mlflow import MlflowClient

from experiments_dagster.experiment.drift import MAX_METRIC_NAME, metric_keys


def test_metric_keys_are_accepted_by_mlflow_unique_and_bounded(tracker) -> None:
    features = ["petal_length_(cm)", "petal_length_[cm]", "ok name", "x" * 400, "ünï/cödé"]
    keys = metric_keys(features)
    assert keys["petal_length_(cm)"] == "drift.petal_length__cm_.psi"
    assert keys["ok name"] == "drift.ok name.psi"
    assert len(set(keys.values())) == len(features)  # "(cm)" and "[cm]" collide, then differ by sha1
    assert all(len(k) <= MAX_METRIC_NAME for k in keys.values())
    run_id = tracker.start_run(tracker.experiment_id("drift-names"), "r", {})
    tracker.log_metrics(run_id, {k: 1.0 for k in keys.values()})  # MLflow validates every name
    assert set(MlflowClient(tracker.tracking_uri).get_run(run_id).data.metrics) == set(keys.values())
