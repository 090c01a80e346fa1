"""A parent run is FINISHED only when the experiment's last asset logged; any failure ends it FAILED."""

from __future__ import annotations

import errno
from typing import Any, ClassVar

import dagster as dg
import pytest
from mlflow import MlflowClient

from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS

pytestmark = pytest.mark.slow
KEY = "iris/v1"


class DiskFullOnWrite(dg.ConfigurableIOManager):
    """Values in memory; writing ``fail_asset``'s output raises ENOSPC, as a full disk would."""

    fail_asset: str
    values: ClassVar[dict[tuple[str, ...], Any]] = {}

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_key:  # an op's output inside a graph-backed asset (search_trials)
            self.values[tuple(context.get_identifier())] = obj
            return
        name = context.asset_key.to_user_string()
        if name == self.fail_asset:
            raise OSError(errno.ENOSPC, "No space left on device", f"/full/storage/{name}/{KEY}")
        self.values[(name, context.asset_partition_key)] = obj

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key:
            return self.values[tuple(context.upstream_output.get_identifier())]
        return self.values[(context.asset_key.to_user_string(), context.asset_partition_key)]


def runs_by_name(client: MlflowClient) -> dict[str, Any]:
    return {
        r.info.run_name: r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }


def test_a_failed_write_between_steps_ends_the_parent_failed(instance, resources, tracking_uri):
    instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    result = dg.materialize(
        [*ASSETS, *LOGGING_CHECKS],
        instance=instance,
        partition_key=KEY,
        raise_on_error=False,
        resources={**resources, "io_manager": DiskFullOnWrite(fail_asset="fold_models")},
    )
    assert not result.success
    runs = runs_by_name(MlflowClient(tracking_uri))
    parent = runs["iris@v1 #1"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error.asset"] == "fold_models"
    assert parent.data.tags["error.type"] == "OSError"
    assert "No space left on device" in parent.data.tags["error.message"]
    assert "/full/storage/fold_models" in parent.data.tags["error.message"]
    # Nothing logged before the fault is lost: the split's params and every fold run are there.
    assert parent.data.params["dataset.name"] == "iris" and parent.data.params["cv.folds"] == "5"
    folds = [r for name, r in runs.items() if name.startswith("fold-")]
    assert len(folds) == 5 and {f.info.status for f in folds} == {"FINISHED"}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]


def test_a_partial_run_never_leaves_the_parent_running_or_finished(instance, resources, tracking_uri):
    instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    selection = [a for a in ASSETS if a.key.to_user_string() in {"raw_data", "data_hash", "splits"}]
    result = dg.materialize(selection, instance=instance, partition_key=KEY, resources=resources)
    assert result.success
    parent = runs_by_name(MlflowClient(tracking_uri))["iris@v1 #1"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error.type"] == "IncompleteAttempt"
    assert parent.data.tags["error.message"].startswith(
        "this Dagster run ended after splits; not materialized: search_trials, fold_models, cv_metrics, "
        "final_model, evaluation_plots, repro_manifest."
    )


def test_the_full_graph_ends_the_parent_finished_once(instance, resources, tracking_uri):
    """The status history of the parent: FINISHED is set by repro_manifest alone (in-process, where
    the run's asset selection is empty, the earlier code set it after every step)."""
    instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    finished_by: list[list[str]] = []
    from experiments_dagster.tracking.store import Tracker

    original = Tracker.end_run

    def recording_end_run(self, run_id, status="FINISHED"):
        if status == "FINISHED" and self.client.get_run(run_id).info.run_name == "iris@v1 #1":
            finished_by.append(sorted(a.path for a in self.client.list_artifacts(run_id)))
        return original(self, run_id, status)

    with pytest.MonkeyPatch.context() as mp:  # our own class, observed: not a library patch
        mp.setattr(Tracker, "end_run", recording_end_run)
        result = dg.materialize(ASSETS, instance=instance, partition_key=KEY, resources=resources)
    assert result.success
    (artifacts_when_finished,) = finished_by  # FINISHED set once, when the manifest was there
    assert "manifest.json" in artifacts_when_finished and "requirements.txt" in artifacts_when_finished
    assert runs_by_name(MlflowClient(tracking_uri))["iris@v1 #1"].info.status == "FINISHED"
