"""Finding the complete parent run that makes a dataset version up to date."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient

from experiments_dagster.tracking import tags


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
        f"tags.`{tags.EXPERIMENT_KEY}` = '{key}' and attributes.status = 'FINISHED' "
        f"and tags.`dataset.name` = '{dataset}' and tags.`dataset.version` = '{version}'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags and run.data.tags.get(tags.AUDIT_STATUS) == "complete":
            return run
    return None
