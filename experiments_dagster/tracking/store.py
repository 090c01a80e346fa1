"""MLflow run lifecycle through ``MlflowClient`` with explicit run ids (no fluent state)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import (
    MAX_TAG_VAL_LENGTH,
)

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import artifact_root_for, default_tracking_uri, sqlite_path
from experiments_dagster.core.profile import bound_http_waits
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.liveness import process_tags
from experiments_dagster.tracking.run_files import RunFiles
from experiments_dagster.tracking.run_values import RunValues
from experiments_dagster.tracking.sqlite_store import open_sqlite_client
from experiments_dagster.tracking.tags import WORKER

log = logging.getLogger(__name__)


class IncompleteAttempt(Exception):
    """Recorded on a parent run whose Dagster run ended before the experiment's last asset."""


@lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    db = sqlite_path(uri)
    if db is not None:
        return open_sqlite_client(uri, db)
    bound_http_waits(uri)  # a server named only here (a resource's config) is bounded too
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
        artifact_uri=model_artifact_location(client, uri),
        dst_path=str(dst),
        tracking_uri=client.tracking_uri,
    )
    return Path(local)


class Tracker(RunValues, RunFiles):
    """One tracking store. Every call names its run id explicitly.

    This module holds the run lifecycle (experiments, runs, status, errors) and links; params,
    metrics and tags in MLflow's batch limits are ``RunValues`` (run_values.py); files, figures, the
    dataset input and the model are ``RunFiles`` (run_files.py).
    """

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
            return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
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

    def reopen(self, run_id: str, asset: str | None = None, dagster_run_id: str | None = None) -> str:
        """Mark a run RUNNING again for more logging; return its previous status.

        The run's ``process.*`` and ``worker`` tags then name this process, so the reconciler
        judges the process that logs now (on Celery, each step may run on another worker);
        ``worker.<asset>`` records each step that ran elsewhere than the run's opener. Likewise
        ``dagster.run_id`` names ``dagster_run_id``, the Dagster run logging now (a re-execution
        of a failed one; the earlier id moves to ``dagster.previous_run_id``): judged by the failed
        run's id, the daemon's reconciler would close the run again in the middle of its retry.

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
        here = process_tags()
        moved = {k: v for k, v in here.items() if run.data.tags.get(k) != v}
        if moved:  # never on the in-process executor: every step runs in the run's process
            if asset is not None:
                moved[f"{WORKER}.{asset}"] = here[WORKER]
        logged_by = run.data.tags.get(tags.DAGSTER_RUN_ID)
        if dagster_run_id is not None and logged_by not in (None, dagster_run_id):
            moved |= {tags.DAGSTER_RUN_ID: dagster_run_id, tags.DAGSTER_PREVIOUS_RUN_ID: logged_by}
        if moved:
            self.set_tags(run_id, moved)
        if previous in ("FAILED", "KILLED"):
            logged = run.data.tags
            errors = {k: v for k, v in logged.items() if k.startswith("error.")}
            self.set_tags(
                run_id,
                {
                    **{f"retry.previous_{k}": v for k, v in errors.items()},
                    "retry.previous_status": previous,
                    "retry.count": int(logged.get("retry.count", "0")) + 1,
                },
            )
            for key in errors:
                self.client.delete_tag(run_id, key)
        if previous != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        return previous

    @contextmanager
    def activity(
        self,
        run_id: str,
        asset: str,
        finish: bool,
        unfinished: Sequence[str] = (),
        dagster_run_id: str | None = None,
    ) -> Iterator[None]:
        """Log inside a run: on error mark it FAILED (KILLED if interrupted); on success end it
        FINISHED if ``finish`` (the experiment's last asset logged) or if it was FINISHED before
        (a downstream asset re-materialized alone). Otherwise, if ``unfinished`` names the assets
        this attempt leaves out, end it FAILED with them as the error: never RUNNING, never
        FINISHED while incomplete.
        """
        previous = self.reopen(run_id, asset, dagster_run_id)
        try:
            yield
        except BaseException as exc:
            # Interrupts (Dagster's cancellation, Ctrl-C) are not Exceptions: the run was KILLED.
            self.mark_failed(run_id, asset, exc, "FAILED" if isinstance(exc, Exception) else "KILLED")
            raise
        if finish or previous == "FINISHED":
            self.end_run(run_id, "FINISHED")
        elif unfinished:
            self.mark_failed(
                run_id,
                asset,
                IncompleteAttempt(
                    f"this Dagster run ended after {asset}; not materialized: {', '.join(unfinished)}. "
                    "Materialize them (or the whole experiment) to complete the run."
                ),
            )

    @contextmanager
    def failures_recorded(self, run_id: str, asset: str) -> Iterator[None]:
        """Log beside a run without reopening it (a search worker, one of several steps at once):
        an error ends the run FAILED (KILLED if interrupted); success leaves its status to the
        step that decides it. A sibling's failure is never undone by reopening the run."""
        try:
            yield
        except BaseException as exc:
            self.mark_failed(run_id, asset, exc, "FAILED" if isinstance(exc, Exception) else "KILLED")
            raise

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

    # --- links ----------------------------------------------------------------------------
    def run_url(self, run_id: str, experiment_id: str) -> str:
        """Link to the run in the MLflow UI (the tracking server itself when it is HTTP)."""
        base = self.ui_url or (
            self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        )
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
