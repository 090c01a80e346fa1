"""What reproducing a run reads from MLflow (manifest, requirements, the rerun) and writes (tags)."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments_dagster.core import manifest
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.tracking import tags

MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"
MAX_MANIFEST_BYTES = 8 * 1024 * 1024  # the most of a manifest or requirements file that is read
PARENT_RUN_ID = "mlflow.parentRunId"


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
        size = Path(local).stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ExperimentInputError(
                f"The {path} of run {run_id} is {size:,} bytes, more than the {MAX_MANIFEST_BYTES:,} "
                "bytes reproduce reads; it is not used."
            )
        try:
            return Path(local).read_text()
        except UnicodeDecodeError as exc:
            raise ExperimentInputError(f"The {path} of run {run_id} is not UTF-8 text: {exc}.") from exc


def nested_run_error(run: Run) -> ExperimentInputError | None:
    """The error for a fold's or trial's run id (None for a parent run)."""
    parent = run.data.tags.get(PARENT_RUN_ID)
    if parent is None:
        return None
    return ExperimentInputError(
        f"Run {run.info.run_id} is a nested run; use its parent {parent} (this one is a CV fold or a "
        f"search trial of it): experiments-dagster reproduce {parent}"
    )


def read_manifest(client: MlflowClient, run_id: str) -> Any:
    """The run's ``manifest.json`` as parsed JSON."""
    text = read_artifact_text(client, run_id, MANIFEST)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands of levels deep
        raise ExperimentInputError(
            f"The {MANIFEST} of run {run_id} is not valid JSON ({exc}); the run cannot be "
            "reproduced from it. Restore the file from the run's artifact store backup."
        ) from exc


def verified_manifest(client: MlflowClient, run: Run) -> dict[str, Any]:
    """The manifest fields reproduce uses, each checked against the run's own params and tags.

    A nested run, a malformed manifest or one that disagrees with its run is refused, naming
    the fields."""
    nested = nested_run_error(run)
    if nested is not None:
        raise nested
    run_id = run.info.run_id
    try:
        taken = manifest.taken_fields(read_manifest(client, run_id))
        wrong = manifest.disagreements(taken, run.data.params, run.data.tags)
    except manifest.ManifestError as exc:
        raise ExperimentInputError(f"The {MANIFEST} of run {run_id} cannot be used: {exc}.") from exc
    if wrong:
        raise ExperimentInputError(
            f"The {MANIFEST} of run {run_id} disagrees with the run's own params and tags in: "
            f"{'; '.join(wrong)}. It was changed after the run; nothing is rerun."
        )
    elsewhere = place_disagreements(client, run, taken["spec"])
    if elsewhere:
        raise ExperimentInputError(
            f"Run {run_id} cannot be reproduced where it was logged: {'; '.join(elsewhere)}. A "
            "reproduction logs and registers only where the original run did; nothing is rerun."
        )
    inputs = run.inputs.dataset_inputs if run.inputs else []
    source = inputs[0].dataset.source if inputs else "(not recorded)"
    return {**taken, "dataset": {**taken["dataset"], "path": source[:300]}}


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


def place_disagreements(client: MlflowClient, run: Run, config: dict[str, Any]) -> list[str]:
    """Where ``config`` would log and register, against where ``run`` did (its experiment and
    its `registry.model_name` tag), as ``what (config X, original run Y)`` for each that differs."""
    try:
        spec = ExperimentSpec.model_validate(config)
    except ValueError as exc:  # pydantic's ValidationError
        return [f"the config is not a valid experiment config ({str(exc).splitlines()[0]})"]
    pairs = (
        ("experiment", spec.experiment, client.get_experiment(run.info.experiment_id).name),
        ("registered model", spec.model_name, run.data.tags.get("registry.model_name")),
    )
    return [
        f"{what} (config {mine!r}, original run {theirs!r})" for what, mine, theirs in pairs if mine != theirs
    ]


def logged_spec(client: MlflowClient, run_id: str) -> ExperimentSpec:
    """The resolved experiment config in the run's verified manifest, as the spec to train again:
    it logs to the original run's experiment and registers under the model name the original run
    registered (``verified_manifest`` refuses anything else)."""
    return ExperimentSpec.model_validate(verified_manifest(client, client.get_run(run_id))["spec"])
