"""The graph logs the evaluation of mlflow.models.evaluate per task, and the audit enforces it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments_dagster.tracking.audit import Auditor, png_problem
from experiments_dagster_tests.defs.test_graph import materialize, parent_runs

pytestmark = pytest.mark.slow

EXPECTED = {
    "binary": ({"lift_curve.png", "calibration_curve.png"}, {"brier_score"}),
    "multiclass": ({"per_class_metrics.csv"}, set()),
    "regression": (set(), set()),
}


@pytest.mark.parametrize(
    ("key", "task"),
    [("breast_cancer/v2", "binary"), ("iris/v1", "multiclass"), ("diabetes/v1", "regression")],
)
def test_evaluation_artifacts_and_metrics(instance, resources, tracking_uri, tmp_path, key, task) -> None:
    result = materialize(instance, resources, key)
    assert result.success
    client = MlflowClient(tracking_uri)
    (parent,) = parent_runs(client)
    run_id, metrics, params = parent.info.run_id, parent.data.metrics, parent.data.params
    files, names = EXPECTED[task]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert files <= artifacts and "shap_summary.png" not in artifacts
    for name in files - {"per_class_metrics.csv"}:
        assert png_problem(Path(client.download_artifacts(run_id, name, str(tmp_path))).read_bytes()) is None
    assert names <= set(metrics)
    assert metrics["train_example_count"] == int(params["split.train_rows"])
    assert metrics["test_example_count"] == int(params["split.test_rows"])
    assert params["shap.enabled"] == "false"
    meta = result.asset_materializations_for_node("evaluation_plots")[0].metadata
    assert meta["test_example_count"].value == metrics["test_example_count"]
    if task == "binary":
        assert 0.0 <= metrics["brier_score"] <= 0.25
        assert "![lift_curve.png](data:image/png;base64," in meta["plots"].value
    if task == "multiclass":
        table = pd.read_csv(client.download_artifacts(run_id, "per_class_metrics.csv", str(tmp_path)))
        assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
        assert table["support"].sum() == metrics["test_example_count"]
        assert set(table["class"]) == {"setosa", "versicolor", "virginica"}
        # macro f1 is the mean of the per-class f1 column
        assert np.mean(table["f1"]) == pytest.approx(metrics["f1_macro"])
        records = meta["per_class_metrics"].value.records
        assert [r.data["class"] for r in records] == table["class"].tolist()
    # The audit names the new items, and SHAP is not required when not asked for.
    audit = Auditor(client).audit(run_id)
    assert audit.complete, audit.problems
    found = {f.name: f.status for f in audit.findings}
    assert found["shap_summary.png"] == "n/a"
    assert {found[n] for n in files | names | {"train_example_count", "test_example_count"}} == {"present"}


@pytest.mark.skipif(
    importlib.util.find_spec("shap") is None, reason="the optional package shap is not installed"
)
def test_shap_summary_logged_and_required_when_asked(instance, resources, tracking_uri, tmp_path) -> None:
    config = {"ops": {"splits": {"config": {"shap": True, "shap_sample_size": 20}}}}
    result = materialize(instance, resources, "iris/v1", run_config=config)
    assert result.success
    client = MlflowClient(tracking_uri)
    (parent,) = parent_runs(client)
    run_id = parent.info.run_id
    assert parent.data.params["shap.enabled"] == "true" and parent.data.params["shap.sample_rows"] == "20"
    png = Path(client.download_artifacts(run_id, "shap_summary.png", str(tmp_path))).read_bytes()
    assert png_problem(png) is None
    table = pd.read_csv(client.download_artifacts(run_id, "shap_importance.csv", str(tmp_path)))
    assert set(table["column"]) == {
        "sepal_length_(cm)",
        "sepal_width_(cm)",
        "petal_length_(cm)",
        "petal_width_(cm)",
    }
    found = {f.name: f.status for f in Auditor(client).audit(run_id).findings}
    assert found["shap_summary.png"] == "present"
