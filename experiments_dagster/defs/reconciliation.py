"""Keeping MLflow run status truthful after crashes: the Dagster runs whose worker is dead, the MLflow
runs their ended or dead Dagster runs left RUNNING, and the step that failed. Plain functions, used by
the reconciler sensor (reconciler_sensor.py), the outcome sweeps (outcomes.py) and the CLI."""

import re
from dataclasses import dataclass

import dagster as dg
from mlflow.entities import Run

from experiments_dagster.defs.heartbeat import ALIVE, dead_run_reason
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.liveness import process_is_dead
from experiments_dagster.tracking.run_lookup import runs_left_running
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
