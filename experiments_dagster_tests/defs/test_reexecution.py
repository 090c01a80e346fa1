"""Re-executing a failed partition from failure reuses its MLflow parent run."""

from __future__ import annotations

import dagster as dg
import pytest
from mlflow import MlflowClient

from experiments_dagster.defs import defs
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.experiment import training as asset_logging
from experiments_dagster.tracking.audit import Auditor

pytestmark = pytest.mark.slow
KEY = "iris/v1"


def experiment_job() -> dg.JobDefinition:
    """Module-level so that Dagster can reconstruct the job for re-execution."""
    return defs.resolve_job_def("experiment_job")


def runs(client: MlflowClient) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.parametrize("failing_step", ["log_final_model", "log_fold_models"])
def test_reexecution_from_failure_supersedes_the_failed_attempt(
    instance, data_dir, monkeypatch, failing_step
):
    # Resources read MLFLOW_TRACKING_URI and EXPERIMENTS_DATA_DIR (set to tmp by conftest).
    monkeypatch.setenv("EXPERIMENTS_DATA_DIR", str(data_dir))
    client = MlflowClient()
    instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    recon = dg.reconstructable(experiment_job)
    original = getattr(asset_logging, failing_step)

    def flaky(*args, **kwargs):
        raise RuntimeError("transient failure")

    monkeypatch.setattr(asset_logging, failing_step, flaky)
    with dg.execute_job(recon, instance, tags={"dagster/partition": KEY}) as first:
        assert not first.success
    (parent,) = [r for r in runs(client) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and parent.data.tags["error.message"] == "transient failure"

    monkeypatch.setattr(asset_logging, failing_step, original)
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    # As the UI does, the re-execution keeps the partition tag of the failed run.
    with dg.execute_job(
        recon, instance, reexecution_options=options, tags={"dagster/partition": KEY}
    ) as retry:
        assert retry.success
    parents = [r for r in runs(client) if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # reused, no second parent
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED"
    assert not any(k.startswith("error.") for k in run.data.tags)
    assert run.data.tags["retry.previous_status"] == "FAILED"
    assert run.data.tags["retry.previous_error.message"] == "transient failure"
    assert run.data.tags["retry.count"] == "1"
    # The run now names the Dagster run that completed it (the reconciler judges that one).
    assert run.data.tags["dagster.run_id"] == retry.run_id
    assert run.data.tags["dagster.previous_run_id"] == first.run_id
    folds = [r for r in runs(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(folds) == 5 and {f.info.status for f in folds} == {"FINISHED"}
    assert Auditor(client).audit(parent.info.run_id).complete
