"""A Dagster run that fails after its MLflow parent was ended FINISHED leaves the parent FAILED."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from experiments_dagster.defs.outcomes import (
    fail_finished_parents,
    fail_parents_of_recent_failures,
    mlflow_parent_outcome,
)
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.store import Tracker


@dg.op
def model_promotion() -> None:
    raise RuntimeError("Redis went away while the result was on its way")


@dg.op
def fine() -> None:
    pass


@dg.job
def failing_job() -> None:
    model_promotion()


@dg.job
def passing_job() -> None:
    fine()


def finished_runs(tracker: Tracker, dagster_run_id: str) -> tuple[str, str]:
    """A FINISHED parent and a FINISHED nested run, both logged by ``dagster_run_id``."""
    exp = tracker.experiment_id("iris")
    logged = {tags.DAGSTER_RUN_ID: dagster_run_id}
    parent = tracker.start_run(exp, "iris@v1", logged)
    fold = tracker.start_run(exp, "fold-1", logged, parent_run_id=parent)
    for run_id in (fold, parent):
        tracker.end_run(run_id, "FINISHED")
    return parent, fold


@pytest.fixture
def failed(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result


def test_a_failed_dagster_run_ends_its_finished_parent_failed(tracker, instance, failed):
    parent, fold = finished_runs(tracker, failed.run_id)
    passed = passing_job.execute_in_process(instance=instance)
    other, _ = finished_runs(tracker, passed.run_id)

    (done,) = fail_finished_parents(tracker, instance, failed.run_id)
    assert (done.mlflow_run_id, done.status) == (parent, "FAILED")
    run = tracker.client.get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.asset"] == "model_promotion"
    assert run.data.tags["error.type"] == "DagsterRunFailed"
    assert run.data.tags["reconciled.reason"] == (
        "its Dagster run failed after this run was finished: step model_promotion failed: "
        "RuntimeError: Redis went away while the result was on its way"
    )
    assert tracker.client.get_run(fold).info.status == "FINISHED"  # a finished fold is true as it is
    assert tracker.client.get_run(other).info.status == "FINISHED"  # its Dagster run succeeded
    assert fail_finished_parents(tracker, instance, passed.run_id) == []
    assert fail_finished_parents(tracker, instance, failed.run_id) == []  # once


def test_the_sweep_of_run_and_audit_finds_recent_failures(tracker, instance, failed):
    parent, _ = finished_runs(tracker, failed.run_id)
    older = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    old_parent, _ = finished_runs(tracker, older.run_id)
    two_days_ago = int((time.time() - 2 * 86_400) * 1000)
    tracker.client.set_terminated(old_parent, "FINISHED", end_time=two_days_ago)  # out of the window
    assert [r.mlflow_run_id for r in fail_parents_of_recent_failures(tracker, instance)] == [parent]
    assert tracker.client.get_run(parent).info.status == "FAILED"
    assert tracker.client.get_run(old_parent).info.status == "FINISHED"  # the sensor's, not the sweep's


def test_the_run_failure_sensor_fails_the_parent(tracker, tracking_uri, instance, failed):
    parent, _ = finished_runs(tracker, failed.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="mlflow_parent_outcome",
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        dagster_event=failed.get_run_failure_event(),
        resources={"mlflow": MlflowTracking(tracking_uri=tracking_uri)},
    ).for_run_failure()
    mlflow_parent_outcome(context)
    run = tracker.client.get_run(parent)
    assert run.info.status == "FAILED" and "Redis went away" in run.data.tags["error.message"]
