"""MLflow run lifecycle through ``MlflowClient`` with explicit run ids (no fluent state)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.paths import artifact_root_for, default_tracking_uri, sqlite_path
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.sqlite_store import open_sqlite_client

log = logging.getLogger(__name__)

# Column types come from a sample; whether a column may be missing comes from the whole frame
# (MLflow's own check walks every sampled value in Python: 0.4 s for 10,000 x 30).
DATASET_SCHEMA_SAMPLE_ROWS = 1_000



class IncompleteAttempt(Exception):
    """Recorded on a parent run whose Dagster run ended before the experiment's last asset."""


@lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    db = sqlite_path(uri)
    if db is not None:
        return open_sqlite_client(uri, db)
    return MlflowClient(tracking_uri=uri)


def model_artifact_location(client: MlflowClient, uri: str) -> str:
    """Where a model's files are (``file:``, ``mlflow-artifacts:``, ``s3:`` ...), asked of ``client``.

    ``models:/<id>`` and ``models:/<name>/<version>`` are resolved here because MLflow's own
    resolution of them goes through the process-global tracking URI, not a client's.
    """
    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/").strip("/")
        name, sep, version = rest.partition("/")
        if sep:
            return client.get_model_version(name, version).source
        return client.get_logged_model(rest).artifact_location
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
    return uri


def download_model(client: MlflowClient, uri: str, dst: Path) -> Path:
    """The model's files, downloaded from ``client``'s store into ``dst``; returns the local folder."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_artifact_location(client, uri), dst_path=str(dst),
        tracking_uri=client.tracking_uri,
    )
    return Path(local)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Tracker:
    """One tracking store. Every call names its run id explicitly."""

    def __init__(self, tracking_uri: str | None = None, ui_url: str | None = None) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.ui_url = ui_url
        self.client = _client(self.tracking_uri)

    # --- experiments and runs -------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """Id of the named experiment, created (artifacts beside a local SQLite store) if absent."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ExperimentInputError(
                    f"MLflow experiment {name!r} is deleted; restore it in the MLflow UI or set "
                    "`experiment_name` to another name."
                )
            return exp.experiment_id
        root = artifact_root_for(self.tracking_uri)
        try:
            return self.client.create_experiment(
                name, artifact_location=f"{root}/{name}" if root else None
            )
        except MlflowException:
            # Another run created it between our lookup and create.
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Create a RUNNING run (nested under ``parent_run_id`` if given); return its id."""
        all_tags = {**tags, MLFLOW_RUN_NAME: run_name}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Set a terminal status (FINISHED, FAILED or KILLED) and end time."""
        self.client.set_terminated(run_id, status=status)

    def reopen(self, run_id: str) -> str:
        """Mark a run RUNNING again for more logging; return its previous status.

        Reopening a FAILED/KILLED run (a re-execution from failure) moves its error tags to
        ``retry.previous_error.*`` and counts ``retry.count``, so a run that then finishes
        does not carry a stale error.
        """
        run = self.client.get_run(run_id)
        if run.info.lifecycle_stage == "deleted":
            raise ExperimentInputError(
                f"MLflow run {run_id} was deleted; re-materialize from `splits` to start a new "
                "experiment attempt."
            )
        previous = run.info.status
        if previous in ("FAILED", "KILLED"):
            tags = run.data.tags
            errors = {k: v for k, v in tags.items() if k.startswith("error.")}
            self.set_tags(run_id, {
                **{f"retry.previous_{k}": v for k, v in errors.items()},
                "retry.previous_status": previous,
                "retry.count": int(tags.get("retry.count", "0")) + 1,
            })
            for key in errors:
                self.client.delete_tag(run_id, key)
        if previous != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        return previous

    @contextmanager
    def activity(
        self, run_id: str, asset: str, finish: bool, unfinished: Sequence[str] = ()
    ) -> Iterator[None]:
        """Log inside a run: on error mark it FAILED (KILLED if interrupted); on success end it
        FINISHED if ``finish`` (the experiment's last asset logged) or if it was FINISHED before
        (a downstream asset re-materialized alone). Otherwise, if ``unfinished`` names the assets
        this attempt leaves out, end it FAILED with them as the error: never RUNNING, never
        FINISHED while incomplete.
        """
        previous = self.reopen(run_id)
        try:
            yield
        except BaseException as exc:
            # Interrupts (Dagster's cancellation, Ctrl-C) are not Exceptions: the run was KILLED.
            self.mark_failed(run_id, asset, exc, "FAILED" if isinstance(exc, Exception) else "KILLED")
            raise
        if finish or previous == "FINISHED":
            self.end_run(run_id, "FINISHED")
        elif unfinished:
            self.mark_failed(run_id, asset, IncompleteAttempt(
                f"this Dagster run ended after {asset}; not materialized: {', '.join(unfinished)}. "
                "Materialize them (or the whole experiment) to complete the run."
            ))

    def mark_failed(self, run_id: str, asset: str, exc: BaseException, status: str = "FAILED") -> None:
        """End a run with ``status`` and record which asset failed, with what."""
        message = f"{exc}"[: MAX_TAG_VAL_LENGTH - 100] or type(exc).__name__
        try:
            self.set_tags(
                run_id,
                {tags.ERROR_ASSET: asset, tags.ERROR_TYPE: type(exc).__name__, tags.ERROR_MESSAGE: message},
            )
        finally:
            self.end_run(run_id, status)

    # --- params, metrics, tags ------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches; identical re-logs are skipped, conflicting ones refused."""
        existing = self.client.get_run(run_id).data.params
        new: dict[str, str] = {}
        conflicts = []
        for key, value in params.items():
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                text = text[: MAX_PARAM_VAL_LENGTH - 14] + "...[truncated]"
            if key in existing:
                if existing[key] != text:
                    conflicts.append(f"{key}: logged {existing[key]!r}, now {text!r}")
                continue
            new[key] = text
        if conflicts:
            raise ExperimentInputError(
                f"MLflow params are immutable and run {run_id} already has different values "
                f"({'; '.join(conflicts[:5])}). Re-materialize from `splits` to start a new "
                "experiment attempt with the new settings."
            )
        for chunk in _chunks(list(new.items()), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics in batches of MLflow's maximum size."""
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags in batches (values truncated to MLflow's limit)."""
        items = [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)

    # --- artifacts ------------------------------------------------------------------------
    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> str:
        """Upload one file; return its artifact path."""
        self.client.log_artifact(run_id, str(path), artifact_dir)
        return f"{artifact_dir}/{path.name}" if artifact_dir else path.name

    def log_bytes(self, run_id: str, name: str, data: bytes) -> str:
        """Upload bytes as an artifact called ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            return self.log_file(run_id, path)

    def log_figure(self, run_id: str, fig: Figure, name: str) -> bytes:
        """Save a figure as PNG, upload it, and return the PNG bytes (for Dagster metadata)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            fig.savefig(path, format="png", dpi=100)
            self.log_file(run_id, path)
            return path.read_bytes()

    def log_json(self, run_id: str, name: str, payload: Any) -> str:
        """Upload a JSON document."""
        return self.log_bytes(run_id, name, json.dumps(payload, indent=2, default=str).encode())

    def log_dataset(
        self,
        run_id: str,
        frame: pd.DataFrame,
        *,
        name: str,
        digest: str,
        source: str,
        target: str,
        context: str = "training",
    ) -> None:
        """``log_input`` with our sha256 as digest, schema from a sample and the true row count."""
        from mlflow.models import infer_signature
        from mlflow.types.schema import ColSpec, Schema

        sampled = infer_signature(frame.head(DATASET_SCHEMA_SAMPLE_ROWS).drop(columns=[target])).inputs
        missing = {str(c): bool(v) for c, v in frame.isna().any().items()}  # no copy of the frame itself
        schema = Schema([
            ColSpec(spec.type, spec.name, required=not missing.get(str(spec.name), False))
            if isinstance(spec, ColSpec) else spec
            for spec in sampled.inputs
        ])
        dataset = Dataset(
            name=name,
            digest=digest[:36],
            source_type="local",
            source=json.dumps({"uri": Path(source).resolve().as_uri()}),
            schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
            profile=json.dumps(
                {"num_rows": int(len(frame)), "num_elements": int(frame.size), "sha256": digest, "targets": target}
            ),
        )
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        )

    def log_pyfunc_model(
        self,
        run_id: str,
        pipeline: Any,
        X_example: pd.DataFrame,
        *,
        name: str = "model",
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        model_type: str | None = None,
    ) -> str:
        """Log the pipeline as an MLflow LoggedModel linked to the run; return its model id.

        Before the files are uploaded, the sha256 of each is recorded as the LoggedModel's
        ``model.files_sha256`` tag, in the tracking store, where ``model_io.load_verified_model``
        checks them. Any failure (a type the loader would not trust included) marks the model
        FAILED, never READY.
        """
        from experiments_dagster.tracking.model_io import digests_tag, save_pyfunc_model  # only when logging

        run = self.client.get_run(run_id)
        model = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=name,
            source_run_id=run_id,
            params={k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in (params or {}).items()},
            tags=dict(tags or {}),
            model_type=model_type,
        )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "model"
                mlflow_model = Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=run_id,
                    model_id=model.model_id,
                )
                save_pyfunc_model(pipeline, X_example, local, mlflow_model=mlflow_model)
                self.client.set_logged_model_tags(model.model_id, digests_tag(local))
                self.client.log_model_artifacts(model.model_id, str(local))
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    # --- links ----------------------------------------------------------------------------
    def run_url(self, run_id: str, experiment_id: str) -> str:
        """Link to the run in the MLflow UI (the tracking server itself when it is HTTP)."""
        base = self.ui_url or (
            self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        )
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

