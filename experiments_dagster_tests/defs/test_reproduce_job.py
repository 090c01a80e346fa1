"""``reproduce_job``: reproducing a run from Dagster, with the run id as config."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from experiments_dagster.core.versioning import code_version
from experiments_dagster.defs import defs
from experiments_dagster.defs.partitions import DATASET_VERSIONS


@pytest.mark.slow
def test_reproduce_job_reruns_and_compares(
    instance: dg.DagsterInstance, tracking_uri: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # the definitions' store
    data_config = {"resources": {"data": {"config": {"data_dir": str(data_dir)}}}}
    instance.add_dynamic_partitions(DATASET_VERSIONS, ["iris/v1"])
    trained = defs.resolve_job_def("experiment_job").execute_in_process(
        partition_key="iris/v1", instance=instance, run_config=data_config
    )
    assert trained.success
    client = MlflowClient(tracking_uri)
    (original,) = [
        r
        for r in client.search_runs([client.get_experiment_by_name("iris").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    # Dagster's own versions: the code version on the assets, the experiment key as splits' data version.
    splits = instance.get_latest_materialization_event(dg.AssetKey("splits")).asset_materialization
    assert splits.tags["dagster/code_version"] == original.data.tags["code.version"] == code_version()
    assert splits.tags["dagster/data_version"] == original.data.tags["experiment.key"]
    data_hash = instance.get_latest_materialization_event(dg.AssetKey("data_hash")).asset_materialization
    assert original.data.tags["experiment.key"].startswith(data_hash.tags["dagster/data_version"][:12])
    job = defs.resolve_job_def("reproduce_job")
    config = {**data_config, "ops": {"reproduce_run": {"config": {"run_id": original.info.run_id}}}}
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.success
    report = result.output_for_node("reproduce_run")
    assert report["verdict"] == "identical" and report["exit_code"] == 0
    rerun = client.get_run(report["reproduction_run_id"])
    assert rerun.data.tags["reproduction.of"] == original.info.run_id
    assert rerun.data.params == original.data.params
    assert client.get_run(original.info.run_id).data.tags["reproduction.last_verdict"] == "identical"
    # The rerun is a Dagster run of the experiment job, tagged too.
    (dagster_rerun,) = instance.get_runs(
        filters=dg.RunsFilter(tags={"reproduction.of": original.info.run_id})
    )
    assert dagster_rerun.job_name == "experiment_job" and dagster_rerun.tags["dagster/partition"] == "iris/v1"

    # Tampered data: the job fails with both hashes in its error, and nothing is rerun.
    path = data_dir / "iris" / "v1.csv"
    path.write_text(path.read_text().replace("setosa", "Setosa", 1))
    failed = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "blocked" in failure.step_failure_data.error.message
    assert len(instance.get_runs(filters=dg.RunsFilter(tags={"reproduction.of": original.info.run_id}))) == 1
