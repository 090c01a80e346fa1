"""Keeping MLflow run status truthful after crashes, and cleaning up old failed runs."""

import re
import time
from dataclasses import dataclass
from typing import Literal

import dagster as dg
from mlflow.entities import Run
from pydantic import Field

from experiments_dagster.defs.heartbeat import ALIVE, dead_run_reason
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.liveness import process_is_dead
from experiments_dagster.tracking.run_lookup import runs_left_running, runs_matching
from experiments_dagster.tracking.store import Tracker


@dataclass(frozen=True)
class Reconciled:
    """An MLflow run that was left RUNNING, the status it was given, and why."""

    mlflow_run_id: str
    dagster_run_id: str
    status: str
    reason: str


def step_failure(instance: dg.DagsterInstance, dagster_run_id: str) -> tuple[str, str] | None:
    """(step, first line of its error) of the Dagster run's first failed step, if one failed."""
    records = instance.get_records_for_run(
        dagster_run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
    ).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return _lost_step(instance, dagster_run_id)
    event = records[0].event_log_entry.dagster_event
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause is not None:  # Dagster's wrapper -> the user's error
        error = error.cause
    message = error.message.strip().splitlines()[0] if error and error.message.strip() else "step failed"
    return event.step_key or "unknown", message


def _lost_step(instance: dg.DagsterInstance, dagster_run_id: str) -> tuple[str, str] | None:
    """A step whose Celery worker died has no STEP_FAILURE: the run's failure names it, as
    dagster-celery writes it (``[<step>]: <error>``, e.g. ``WorkerLostError ... signal 9``)."""
    # Not limit=1: when a step ends without success or failure event, Dagster writes a first
    # RUN_FAILURE with no error before the executor's own, which carries the message.
    records = instance.get_records_for_run(dagster_run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        found = lost_step_in(error.message) if error is not None else None
        if found is not None:
            return found
    return None


def lost_step_in(message: str) -> tuple[str, str] | None:
    """(step key, error) from a run failure's ``[<step>]: <error>`` line; step keys of mapped
    steps hold brackets themselves (``search_trials.search_worker[1]``)."""
    for line in message.splitlines():
        found = re.match(r"\[(.+?)\]: (.+)", line.strip())
        if found:
            return found.group(1), found.group(2)
    return None


def _verdict(run: Run, instance: dg.DagsterInstance, dead: dict[str, str]) -> tuple[str, str] | None:
    """(status, reason) for an MLflow run left RUNNING, or None if its Dagster run is alive.
    ``dead``: the Dagster runs just reported failed because their run worker is dead."""
    dagster_run_id = run.data.tags[tags.DAGSTER_RUN_ID]
    if dagster_run_id in dead:
        return "FAILED", dead[dagster_run_id]
    dagster_run = instance.get_run_by_id(dagster_run_id)
    if dagster_run is None:
        # A run of another Dagster instance on the same store: its process is the only clue.
        dead_process = process_is_dead(run.data.tags)
        if dead_process is False:
            return None
        return "FAILED", "its Dagster run does not exist in this instance" + (
            f" and its process {run.data.tags['process.pid']} is gone" if dead_process else ""
        )
    status = dagster_run.status
    if status == dg.DagsterRunStatus.CANCELED:
        return "KILLED", "its Dagster run was canceled"
    if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS):
        failed = step_failure(instance, dagster_run_id)
        if failed is not None:
            return "FAILED", f"step {failed[0]} of its Dagster run failed: {failed[1]}"
        what = "failed" if status == dg.DagsterRunStatus.FAILURE else "ended"
        return "FAILED", f"its Dagster run {what} before the experiment's last asset logged"
    return None  # in progress: alive until Dagster or the heartbeat (heartbeat.py) says otherwise


def fail_dead_dagster_runs(instance: dg.DagsterInstance, dagster_run_id: str | None = None) -> dict[str, str]:
    """Report FAILURE for every STARTED/STARTING Dagster run (``dagster_run_id`` only, if given)
    whose run worker is dead by its heartbeat (heartbeat.py); returns {run id: reason}."""
    filters = dg.RunsFilter(statuses=list(ALIVE), run_ids=[dagster_run_id] if dagster_run_id else None)
    dead: dict[str, str] = {}
    for record in instance.get_run_records(filters):
        reason = dead_run_reason(record.dagster_run)
        if reason is not None:
            instance.report_run_failed(record.dagster_run, f"Its run worker is dead: {reason}.")
            dead[record.dagster_run.run_id] = reason
    return dead


def reconcile_runs(
    tracker: Tracker, instance: dg.DagsterInstance, dagster_run_id: str | None = None
) -> list[Reconciled]:
    """Fail the Dagster runs whose run worker is dead, then close every MLflow run left RUNNING
    whose Dagster run is no longer alive (only those of ``dagster_run_id`` if given).

    Liveness is the Dagster run's: its status, and for runs of the CLI its heartbeat. A Dagster
    run that ended without the experiment's last asset never leaves its MLflow runs FINISHED:
    only ``repro_manifest`` ends a parent complete.
    """
    dead = fail_dead_dagster_runs(instance, dagster_run_id)
    done: list[Reconciled] = []
    for run in runs_left_running(tracker, dagster_run_id):
        verdict = _verdict(run, instance, dead)
        if verdict is None:
            continue
        status, reason = verdict
        run_dagster_id = run.data.tags[tags.DAGSTER_RUN_ID]
        new = {
            tags.RECONCILED_REASON: reason,
            tags.ERROR_ASSET: run.data.tags.get(tags.DAGSTER_ASSET_KEY, "unknown"),
            tags.ERROR_TYPE: "DagsterRunEnded",
            tags.ERROR_MESSAGE: reason,
        }
        tracker.set_tags(run.info.run_id, new)
        tracker.end_run(run.info.run_id, status)
        done.append(Reconciled(run.info.run_id, run_dagster_id, status, reason))
    return done


@dg.failure_hook(required_resource_keys={"mlflow"})
def mlflow_runs_failed(context: dg.HookContext) -> None:
    """A failed step ends the MLflow runs its Dagster run left RUNNING FAILED, with the step's error.

    Errors inside an asset body are recorded by the body's ``Tracker.activity``; this catches
    what happens around it: the IO manager's write of the output, a resource, the step's
    framework code. Attached to every logging asset (``hooks=``), so it runs in every job.
    """
    tracker = context.resources.mlflow.tracker()
    exc = context.op_exception or RuntimeError(f"step {context.step_key} failed")
    for run in runs_left_running(tracker, context.run_id):
        tracker.mark_failed(run.info.run_id, context.step_key, exc)


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails Dagster runs whose run worker is dead and closes the MLflow runs left RUNNING "
    "by canceled, failed or dead Dagster runs.",
)
def mlflow_run_reconciler(context: dg.SensorEvaluationContext, mlflow: MlflowTracking) -> dg.SkipReason:
    """Keeps MLflow run status truthful when a Dagster run ends without closing its runs."""
    done = reconcile_runs(mlflow.tracker(), context.instance)
    for r in done:
        context.log.warning(
            f"MLflow run {r.mlflow_run_id} -> {r.status}: {r.reason} (Dagster run {r.dagster_run_id})"
        )
    return dg.SkipReason(
        f"Closed {len(done)} MLflow runs left RUNNING." if done else "No MLflow run left RUNNING."
    )


class CleanupConfig(dg.Config):
    """Which failed runs to clean up, and how."""

    older_than_days: float = Field(default=30.0, ge=0, description="Only runs that ended this long ago.")
    action: Literal["tag", "delete"] = Field(
        default="tag",
        description="'tag' marks them cleanup.status=stale-failure; 'delete' soft-deletes them.",
    )


def tag_or_delete_failed_runs(
    tracker: Tracker, older_than_days: float, action: str, now_ms: int | None = None
) -> list[str]:
    """FAILED/KILLED runs that ended over ``older_than_days`` ago: tag or soft-delete them."""
    cutoff = (now_ms or int(time.time() * 1000)) - int(older_than_days * 86_400_000)
    # MLflow's filter syntax has no OR: one search per status.
    runs = [
        r
        for status in ("FAILED", "KILLED")
        for r in runs_matching(tracker, f"attributes.status = '{status}'")
    ]
    stale = [
        r
        for r in runs
        if (r.info.end_time or r.info.start_time) <= cutoff
        and (action == "delete" or r.data.tags.get(tags.CLEANUP_STATUS) != "stale-failure")
    ]
    for run in stale:
        if action == "delete":
            tracker.client.delete_run(run.info.run_id)
        else:
            tracker.set_tags(run.info.run_id, {tags.CLEANUP_STATUS: "stale-failure"})
    return [r.info.run_id for r in stale]


@dg.op(description="Tag or delete FAILED/KILLED MLflow runs older than the configured age.")
def clean_up_failed_runs(
    context: dg.OpExecutionContext, config: CleanupConfig, mlflow: MlflowTracking
) -> list[str]:
    """Clean up failed runs: tag or delete them."""
    ids = tag_or_delete_failed_runs(mlflow.tracker(), config.older_than_days, config.action)
    context.log.info(f"{config.action}: {len(ids)} failed runs older than {config.older_than_days} days")
    return ids


@dg.job(description="Clean up failed MLflow runs older than a configurable age (tag or delete).")
def failed_run_cleanup_job() -> None:
    clean_up_failed_runs()
