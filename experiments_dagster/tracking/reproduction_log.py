"""What reproducing a run reads from MLflow (manifest, requirements, the rerun) and writes (tags)."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.spec import ExperimentSpec
from experiments_dagster.tracking import tags

MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"


def read_artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    """The text of one of a run's artifacts; an input error naming the run if it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as exc:  # MlflowException or OSError, by store
            raise ExperimentInputError(
                f"Run {run_id} has no {path}: only a complete experiment run (its `repro_manifest` "
                f"step ran) can be reproduced. ({type(exc).__name__}: {exc})"
            ) from exc
        return Path(local).read_text()


def read_manifest(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The run's ``manifest.json``."""
    return json.loads(read_artifact_text(client, run_id, MANIFEST))


def find_rerun(client: MlflowClient, experiment_id: str, original_run_id: str) -> Any | None:
    """The newest parent run tagged ``reproduction.of=<original_run_id>``, or None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{tags.REPRODUCTION_OF}` = '{original_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


def record_verdict(client: MlflowClient, original_run_id: str, rerun_id: str, verdict: str) -> str:
    """Tag the original run with when it was last reproduced, the verdict and the rerun; return the time."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in (
        (tags.REPRODUCED_AT, when),
        (tags.REPRODUCED_VERDICT, verdict),
        (tags.REPRODUCED_BY, rerun_id),
    ):
        client.set_tag(original_run_id, key, value)
    return when


def logged_spec(client: MlflowClient, run_id: str) -> ExperimentSpec:
    """The resolved experiment config in the run's manifest, as the spec to train again."""
    return ExperimentSpec.model_validate(read_manifest(client, run_id)["spec"])
