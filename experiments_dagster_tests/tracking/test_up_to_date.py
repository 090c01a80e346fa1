"""Which parent run makes a dataset version up to date."""

from __future__ import annotations

from experiments_dagster.experiment.up_to_date import complete_run
from experiments_dagster.tracking.store import Tracker

KEY = "aaaaaaaaaaaa-bbbbbbbbbbbb-cccccccccccc"


def parent(
    tracker: Tracker, version: str, key: str, status: str = "FINISHED", audit: str = "complete"
) -> str:
    experiment_id = tracker.experiment_id("iris")
    tags = {"dataset.name": "iris", "dataset.version": version, "experiment.key": key, "audit.status": audit}
    run_id = tracker.start_run(experiment_id, f"iris@{version} #1", tags)
    tracker.end_run(run_id, status)
    return run_id


def test_only_a_complete_finished_parent_of_the_same_version_and_key_counts(tracker: Tracker):
    assert complete_run(tracker.client, "iris", "iris", "v1", KEY) is None  # no experiment yet
    parent(tracker, "v1", KEY, status="FAILED")
    parent(tracker, "v1", KEY, audit="incomplete")
    parent(tracker, "v1", KEY.replace("c", "d"))
    parent(tracker, "v2", KEY)  # identical bytes under another version name: not v1's run
    assert complete_run(tracker.client, "iris", "iris", "v1", KEY) is None
    fold = tracker.start_run(
        tracker.experiment_id("iris"),
        "fold-0",
        {"dataset.name": "iris", "dataset.version": "v1", "experiment.key": KEY, "audit.status": "complete"},
        parent_run_id=parent(tracker, "v3", KEY),
    )
    tracker.end_run(fold)
    assert complete_run(tracker.client, "iris", "iris", "v1", KEY) is None  # a nested run never counts
    good = parent(tracker, "v1", KEY)
    assert complete_run(tracker.client, "iris", "iris", "v1", KEY).info.run_id == good
    assert complete_run(tracker.client, "iris", "iris", "v2", KEY).info.run_id != good
