"""Attempts of a dataset version: their numbers, and the complete run that makes one up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from experiments_dagster.core.catalog import DatasetVersion
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.versioning import expected_identity
from experiments_dagster.experiment.values import DataFingerprint
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.store import Tracker


def _version_filter(dataset: str, version: str) -> str:
    return f"tags.`dataset.name` = '{dataset}' and tags.`dataset.version` = '{version}'"


def next_attempt(tracker: Tracker, experiment_id: str, fp: DataFingerprint) -> int:
    """1 + the highest attempt number among the version's parent runs (runs older than the
    ``attempt`` tag count as one attempt each), so names tell attempts apart in the runs list."""
    runs = tracker.client.search_runs(
        [experiment_id], _version_filter(fp.dataset, fp.version), max_results=50_000
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    numbered = [
        int(r.data.tags[tags.ATTEMPT]) for r in parents if r.data.tags.get(tags.ATTEMPT, "").isdigit()
    ]
    return max([len(parents), *numbered]) + 1


def complete_run(
    client: MlflowClient, experiment_name: str, dataset: str, version: str, key: str
) -> Any | None:
    """The newest FINISHED parent run of this dataset version with this experiment key whose
    audit found it complete (another version with identical bytes does not count: it is its own)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{tags.EXPERIMENT_KEY}` = '{key}' and attributes.status = 'FINISHED' and "
        + _version_filter(dataset, version),
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags and run.data.tags.get(tags.AUDIT_STATUS) == "complete":
            return run
    return None


def up_to_date_url(tracker: Tracker, version: DatasetVersion, data_dir: Path) -> str | None:
    """The link of the complete parent run that makes ``version`` up to date (same data hash,
    resolved experiment.yaml and code version), or None if it needs training."""
    try:
        experiment, key = expected_identity(version.dataset, version.path, data_dir)
    except (ExperimentInputError, OSError):
        return None  # a bad experiment.yaml or an unreadable file: the run reports it
    run = complete_run(tracker.client, experiment, version.dataset, version.version, key)
    return None if run is None else tracker.run_url(run.info.run_id, run.info.experiment_id)
