"""Finding the complete parent run that makes a dataset version up to date."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient

from experiments_dagster.tracking import tags


def complete_run(client: MlflowClient, experiment_name: str, key: str) -> Any | None:
    """The newest FINISHED parent run with this experiment key whose audit found it complete."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{tags.EXPERIMENT_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags and run.data.tags.get(tags.AUDIT_STATUS) == "complete":
            return run
    return None
