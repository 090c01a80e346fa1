"""Cleaning up old FAILED/KILLED MLflow runs: the function, and the Dagster job around it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from experiments_dagster.defs import defs
from experiments_dagster.defs.cleanup_job import (
    failed_run_cleanup_job,
    tag_or_delete_failed_runs,
)
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking.store import Tracker
from experiments_dagster.tracking.tags import CLEANUP_STATUS as CLEANUP_TAG

DAY_MS = 86_400_000


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


class Runs:
    """Runs of every kind in one store; ``now`` is 40 days after the old ones ended."""

    def __init__(self, tracker: Tracker) -> None:
        client = tracker.client
        exp = tracker.experiment_id("cleanup")
        other = tracker.experiment_id("other-experiment")
        real_now = int(time.time() * 1000)
        self.now = real_now + 40 * DAY_MS

        def run(name: str, experiment: str = exp) -> str:
            return tracker.start_run(experiment, name, {"kind": name})

        # Ended (with today's end time) 40 days before `now`.
        self.old_failed, self.old_killed, self.old_finished = (
            run("old-failed"),
            run("old-killed"),
            run("old-finished"),
        )
        self.old_failed_elsewhere = run("old-failed-elsewhere", other)
        tracker.end_run(self.old_failed, "FAILED")
        tracker.end_run(self.old_killed, "KILLED")
        tracker.end_run(self.old_finished, "FINISHED")
        tracker.end_run(self.old_failed_elsewhere, "FAILED")
        # Marked FAILED without an end time: its start time (40 days before `now`) is its age.
        self.failed_without_end = run("failed-without-end")
        client.update_run(self.failed_without_end, status="FAILED")
        # Still running after 40 days: not a failure (yet).
        self.running = run("running")
        # Ended one day before `now`.
        self.young_failed, self.young_killed = run("young-failed"), run("young-killed")
        client.set_terminated(self.young_failed, "FAILED", end_time=self.now - DAY_MS)
        client.set_terminated(self.young_killed, "KILLED", end_time=self.now - DAY_MS)
        self.tracker = tracker

    @property
    def stale(self) -> set[str]:
        return {self.old_failed, self.old_killed, self.old_failed_elsewhere, self.failed_without_end}

    @property
    def all(self) -> set[str]:
        return self.stale | {self.old_finished, self.running, self.young_failed, self.young_killed}

    def tags(self) -> dict[str, str | None]:
        return {r: self.tracker.client.get_run(r).data.tags.get(CLEANUP_TAG) for r in self.all}

    def stages(self) -> dict[str, str]:
        return {r: self.tracker.client.get_run(r).info.lifecycle_stage for r in self.all}


@pytest.fixture
def runs(tracker: Tracker) -> Runs:
    made = Runs(tracker)
    statuses = {r: tracker.client.get_run(r).info.status for r in made.all}
    assert statuses[made.failed_without_end] == "FAILED" and statuses[made.running] == "RUNNING"
    assert tracker.client.get_run(made.failed_without_end).info.end_time is None
    return made


def test_tag_marks_only_old_failed_and_killed_runs(runs: Runs):
    tagged = tag_or_delete_failed_runs(runs.tracker, older_than_days=30, action="tag", now_ms=runs.now)
    assert sorted(tagged) == sorted(runs.stale)
    assert runs.tags() == {r: "stale-failure" if r in runs.stale else None for r in runs.all}
    assert set(runs.stages().values()) == {"active"}  # tagging deletes nothing
    assert runs.tracker.client.get_run(runs.old_failed).info.status == "FAILED"  # nor changes status


def test_tag_is_idempotent(runs: Runs):
    assert len(tag_or_delete_failed_runs(runs.tracker, 30, "tag", now_ms=runs.now)) == 4
    assert tag_or_delete_failed_runs(runs.tracker, 30, "tag", now_ms=runs.now) == []
    assert runs.tags() == {r: "stale-failure" if r in runs.stale else None for r in runs.all}


def test_age_is_measured_against_now(runs: Runs):
    # 39 days ago is not "older than 40 days"; 0.5 days makes the young failures stale too.
    assert tag_or_delete_failed_runs(runs.tracker, 40.5, "tag", now_ms=runs.now) == []
    young = tag_or_delete_failed_runs(runs.tracker, 0.5, "tag", now_ms=runs.now)
    assert sorted(young) == sorted(runs.stale | {runs.young_failed, runs.young_killed})
    assert runs.tags()[runs.old_finished] is None and runs.tags()[runs.running] is None


def test_delete_soft_deletes_old_failed_and_killed_runs_only(runs: Runs):
    deleted = tag_or_delete_failed_runs(runs.tracker, 30, "delete", now_ms=runs.now)
    assert sorted(deleted) == sorted(runs.stale)
    assert runs.stages() == {r: "deleted" if r in runs.stale else "active" for r in runs.all}
    assert set(runs.tags().values()) == {None}  # delete does not tag
    # Deleted runs are gone from searches, so a second pass finds nothing.
    assert tag_or_delete_failed_runs(runs.tracker, 30, "delete", now_ms=runs.now) == []


def test_delete_after_tag_deletes_the_tagged_runs(runs: Runs):
    """The documented workflow: mark stale failures first, review them, then delete them."""
    assert sorted(tag_or_delete_failed_runs(runs.tracker, 30, "tag", now_ms=runs.now)) == sorted(runs.stale)
    deleted = tag_or_delete_failed_runs(runs.tracker, 30, "delete", now_ms=runs.now)
    assert sorted(deleted) == sorted(runs.stale)
    assert runs.stages() == {r: "deleted" if r in runs.stale else "active" for r in runs.all}


def _cleanup_config(**config: object) -> dict:
    return {"ops": {"clean_up_failed_runs": {"config": config}}}


def test_cleanup_job_from_the_code_location_deletes_failed_runs(tracker: Tracker, tracking_uri, instance):
    exp = tracker.experiment_id("cleanup")
    ids = {
        status: tracker.start_run(exp, status.lower(), {})
        for status in ("FAILED", "KILLED", "FINISHED", "RUNNING")
    }
    for status in ("FAILED", "KILLED", "FINISHED"):
        tracker.end_run(ids[status], status)
    job = defs.resolve_job_def("failed_run_cleanup_job")
    assert job.name == "failed_run_cleanup_job"
    result = job.execute_in_process(
        run_config=_cleanup_config(older_than_days=0, action="delete"),
        resources={"mlflow": MlflowTracking(tracking_uri=tracking_uri)},  # replaces the env-default store
        instance=instance,
    )
    assert result.success
    assert sorted(result.output_for_node("clean_up_failed_runs")) == sorted([ids["FAILED"], ids["KILLED"]])
    stages = {status: tracker.client.get_run(r).info.lifecycle_stage for status, r in ids.items()}
    assert stages == {"FAILED": "deleted", "KILLED": "deleted", "FINISHED": "active", "RUNNING": "active"}
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "delete: 2 failed runs older than 0.0 days" in logs


def test_cleanup_job_with_its_own_definitions_tags_with_defaults(tracker: Tracker, tracking_uri, instance):
    exp = tracker.experiment_id("cleanup")
    failed, finished = tracker.start_run(exp, "f", {}), tracker.start_run(exp, "ok", {})
    tracker.end_run(failed, "FAILED")
    tracker.end_run(finished, "FINISHED")
    job = dg.Definitions(
        jobs=[failed_run_cleanup_job], resources={"mlflow": MlflowTracking(tracking_uri=tracking_uri)}
    ).resolve_job_def("failed_run_cleanup_job")

    # Defaults: tag, 30 days: a run that failed just now is left alone.
    result = job.execute_in_process(instance=instance)
    assert result.success and result.output_for_node("clean_up_failed_runs") == []
    assert CLEANUP_TAG not in tracker.client.get_run(failed).data.tags

    result = job.execute_in_process(run_config=_cleanup_config(older_than_days=0), instance=instance)
    assert result.output_for_node("clean_up_failed_runs") == [failed]
    assert tracker.client.get_run(failed).data.tags[CLEANUP_TAG] == "stale-failure"
    assert CLEANUP_TAG not in tracker.client.get_run(finished).data.tags
    assert {tracker.client.get_run(r).info.lifecycle_stage for r in (failed, finished)} == {"active"}


def test_cleanup_job_refuses_an_unknown_action_before_running(tmp_path):
    job = defs.resolve_job_def("failed_run_cleanup_job")
    db = tmp_path / "never" / "mlflow.db"
    with pytest.raises(dg.DagsterInvalidConfigError, match=r"action not in enum type .* got purge"):
        job.execute_in_process(
            run_config=_cleanup_config(action="purge"),
            resources={"mlflow": MlflowTracking(tracking_uri=f"sqlite:///{db}")},
        )
    assert not db.parent.exists()


def test_cleanup_job_refuses_a_negative_age_without_touching_the_store(tmp_path):
    job = defs.resolve_job_def("failed_run_cleanup_job")
    db = tmp_path / "never" / "mlflow.db"
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        job.execute_in_process(
            run_config=_cleanup_config(older_than_days=-1),
            resources={"mlflow": MlflowTracking(tracking_uri=f"sqlite:///{db}")},
        )
    assert not db.parent.exists()
