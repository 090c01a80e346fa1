"""data_drift: v1 trained and promoted; v2 lands with one feature shifted and one column removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.drift_assets import data_drift_below_threshold
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster_tests.defs.test_graph import parent_runs

pytestmark = pytest.mark.slow

SHIFTED, REMOVED = "petal_length_(cm)", "sepal_width_(cm)"


def _materialize(instance, resources, key: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(DATASET_VERSIONS, [key])
    return dg.materialize(
        [*ASSETS, data_drift_below_threshold], instance=instance, resources=resources, partition_key=key
    )


def test_drift_against_the_champions_training_data(
    instance, resources, tracking_uri, data_dir, tmp_path
) -> None:
    folder = data_dir / "flowers"
    folder.mkdir()
    shutil.copy(data_dir / "iris" / "experiment.yaml", folder / "experiment.yaml")
    v1 = pd.read_csv(data_dir / "iris" / "v1.csv")
    v1.to_csv(folder / "v1.csv", index=False)
    v2 = v1.drop(columns=[REMOVED]).assign(**{SHIFTED: v1[SHIFTED] + 3.0})
    v2.to_csv(folder / "v2.csv", index=False)
    client = MlflowClient(tracking_uri)

    first = _materialize(instance, resources, "flowers/v1")
    assert first.success
    (check1,) = first.get_asset_check_evaluations()
    drift1 = first.asset_materializations_for_node("data_drift")[0].metadata
    assert drift1["status"].value == "no_champion" and "nothing to compare against" in drift1["reason"].value
    assert check1.passed
    assert str(client.get_model_version_by_alias("flowers_model", "champion").version) == "1"
    (run1,) = parent_runs(client)
    assert run1.data.tags["drift.status"] == "no_champion"

    second = _materialize(instance, resources, "flowers/v2")
    assert second.success
    run2 = next(r for r in parent_runs(client) if r.info.run_name == "flowers@v2 #1")
    meta = second.asset_materializations_for_node("data_drift")[0].metadata
    assert meta["status"].value == "compared" and meta["champion_version"].value == "1"

    # The drift table names the shifted feature above the threshold, and only it.
    table = pd.read_csv(client.download_artifacts(run2.info.run_id, "data_drift.csv", str(tmp_path)))
    row = table.set_index("feature").loc[SHIFTED]
    assert row["psi"] > 0.2 and row["test"] == "ks" and row["p_value"] < 1e-6
    assert table.loc[table["psi"] > 0.2, "feature"].tolist() == [SHIFTED]
    assert REMOVED not in set(table["feature"])
    metrics = run2.data.metrics
    assert metrics["drift.petal_length__cm_.psi"] == pytest.approx(row["psi"])
    assert metrics["drift.sepal_length__cm_.psi"] < 0.01  # unchanged column
    # The removed column is reported, the target did not move.
    schema = json.loads(
        Path(client.download_artifacts(run2.info.run_id, "data_drift_schema.json", str(tmp_path))).read_text()
    )
    assert schema["schema"]["removed"] == [REMOVED] and schema["schema"]["added"] == []
    assert schema["target"]["test"] == "chi2" and schema["target"]["psi"] < 0.01
    assert run2.data.tags["drift.champion_data_hash"] == run1.data.params["data.hash"]
    assert run2.data.tags["drift.champion_dataset_version"] == "v1"
    assert "data_drift_top_features.png" in {a.path for a in client.list_artifacts(run2.info.run_id)}

    # The check warns, naming the feature.
    (check2,) = second.get_asset_check_evaluations()
    assert not check2.passed and check2.severity == dg.AssetCheckSeverity.WARN
    assert list(check2.metadata["features_above_threshold"].value) == [SHIFTED]
    assert check2.metadata["removed_columns"].value == [REMOVED]

    # The champion's score on v2's test split is logged, next to the challenger's.
    comparison = pd.read_csv(
        client.download_artifacts(run2.info.run_id, "champion_comparison.csv", str(tmp_path))
    ).set_index("metric")
    assert 0.0 <= metrics["champion.accuracy"] <= 1.0
    assert comparison.loc["accuracy", "champion"] == pytest.approx(metrics["champion.accuracy"])
    assert comparison.loc["accuracy", "challenger"] == pytest.approx(metrics["accuracy"])
    # v1's model sees petal length shifted by 3 cm and no sepal width: it does worse than v2's.
    assert metrics["champion.accuracy"] < metrics["accuracy"]


def test_drift_between_the_shipped_breast_cancer_versions(
    instance, resources, tracking_uri, tmp_path
) -> None:
    """A categorical column (chi-square), missing values, a string target, v2 as parquet."""
    assert _materialize(instance, resources, "breast_cancer/v1").success
    second = _materialize(instance, resources, "breast_cancer/v2")
    assert second.success
    client = MlflowClient(tracking_uri)
    run2 = next(r for r in parent_runs(client) if r.info.run_name == "breast_cancer@v2 #1")
    assert run2.data.tags["drift.status"] == "compared" and run2.data.tags["drift.champion_version"] == "1"
    table = pd.read_csv(client.download_artifacts(run2.info.run_id, "data_drift.csv", str(tmp_path)))
    assert len(table) == 31  # every feature column of both versions
    clinic = table.set_index("feature").loc["clinic"]
    assert clinic["test"] == "chi2" and 0.0 <= clinic["p_value"] <= 1.0
    metrics = run2.data.metrics
    assert {"drift_target.psi", "drift_target.p_value", "champion.roc_auc", "champion.f1"} <= set(metrics)
    (check,) = second.get_asset_check_evaluations()
    assert check.passed and table["psi"].max() < 0.2  # v2 holds v1's rows and more: little drift
