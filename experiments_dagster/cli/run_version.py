"""``experiments-dagster run``, one dataset version at a time: skip it when up to date, run the
experiment job on its partition (in process or on Celery workers), turn the outcome into a row."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments_dagster.cli.audit import report_reconciled
from experiments_dagster.cli.shutdown import Shutdown
from experiments_dagster.cli.version_failures import storage_failure, version_failure
from experiments_dagster.core import paths
from experiments_dagster.core.profile import CELERY, Profile

UP_TO_DATE = "up to date"
Row = tuple[str, str, str]  # partition key, status, where (a URL, a run id or why it failed)


@dataclass(frozen=True)
class Session:
    """What every version's run shares: the profile, the job and its selection, the stores."""

    profile: Profile
    job: Any  # the experiment job, resolved from the definitions
    selection: list[Any] | None  # asset keys; None: every asset
    run_tags: dict[str, str]
    home: Path  # DAGSTER_HOME
    instance: Any  # dagster.DagsterInstance
    tracker: Any  # tracking.store.Tracker
    check_up_to_date: bool  # False with --force, --select or --reproduction-of


def run_versions(
    session: Session, versions: list[Any], attempt: dict[str, Any], shutdown: Shutdown
) -> list[Row]:
    """A row per version; a signal stops before the next version that would run (one version's
    failure never stops the others)."""
    rows: list[Row] = []
    for v in versions:
        if session.check_up_to_date:
            row = up_to_date_row(session.tracker, v)
            if row is not None:
                rows.append(row)
                continue
        if shutdown.signum is not None:  # stopped while the previous version ran: no new run
            break
        rows.append(run_version(session, v, attempt))
    return rows


def up_to_date_row(tracker: Any, v: Any) -> Row | None:
    """The row of a version that is up to date, or of one whose check failed; None: run it."""
    from experiments_dagster.experiment.up_to_date import up_to_date_url

    try:
        done = up_to_date_url(tracker, v, paths.data_dir())
    except Exception as exc:  # one version's failure never stops the others
        return (v.partition_key, "FAILURE", version_failure(exc, "checking whether it is up to date"))
    return None if done is None else (v.partition_key, UP_TO_DATE, done)


def run_version(session: Session, v: Any, attempt: dict[str, Any]) -> Row:
    """Run the job on the version's partition under an attempt lock and a heartbeat; its row."""
    from experiments_dagster.defs.attempts import ATTEMPT_TAG, AttemptInProgress, partition_attempt
    from experiments_dagster.defs.heartbeat import RunHeartbeat, first_beat

    instance = session.instance
    run_id = str(uuid.uuid4())  # known before the run starts, so a crash can still be traced to it
    attempt.update(instance=instance, tracker=session.tracker, attempt_id=run_id)
    beat = {ATTEMPT_TAG: run_id, **first_beat()}
    try:
        # The heartbeat tells the reconciler this run's worker is alive (heartbeat.py).
        with (
            partition_attempt(instance, session.home, v.partition_key, run_id),
            RunHeartbeat(instance, run_id),
        ):
            result = execute_version(session, v.partition_key, run_id, beat)
    except AttemptInProgress as exc:
        print(f"experiments-dagster run: {exc}", file=sys.stderr)
        return (v.partition_key, "BUSY", str(exc))
    except Exception as exc:  # the instance itself failed (disk full, I/O error): one line, runs closed
        return instance_failure_row(session, v.partition_key, run_id, exc)
    if result.success:
        return success_row(v.partition_key, result)
    return failure_row(session, v.partition_key, result)


def execute_version(session: Session, partition_key: str, run_id: str, beat: dict[str, str]) -> Any:
    """The job's run on one partition: its result (a failed run does not raise)."""
    import dagster as dg

    from experiments_dagster.defs.console import CONSOLE_RUN_CONFIG
    from experiments_dagster.defs.definitions import experiment_job_on_workers

    # The data folder travels in the run's config: on Celery, steps read it on the workers.
    run_config = {
        **CONSOLE_RUN_CONFIG,
        "resources": {"data": {"config": {"data_dir": str(paths.data_dir())}}},
    }
    if session.profile.executor == CELERY:
        # The run's process orchestrates; its steps go to the workers (execute_job with the
        # reconstructable job; execute_in_process runs everything here).
        return dg.execute_job(
            dg.reconstructable(experiment_job_on_workers),
            instance=session.instance,
            run_config=run_config,
            tags={"dagster/partition": partition_key, **beat, **session.run_tags},
            raise_on_error=False,
            asset_selection=session.selection,
        )
    return session.job.execute_in_process(
        partition_key=partition_key,
        instance=session.instance,
        raise_on_error=False,
        run_config=run_config,
        asset_selection=session.selection,
        run_id=run_id,
        tags={**beat, **session.run_tags},
    )


def instance_failure_row(session: Session, partition_key: str, run_id: str, exc: Exception) -> Row:
    """Running the version raised (the instance failed): close its MLflow runs, say why in one line."""
    from experiments_dagster.defs.attempts import attempt_run
    from experiments_dagster.tracking.run_lookup import runs_left_running

    if session.profile.executor == CELERY:  # execute_job raised: find its run by the attempt tag
        made = attempt_run(session.instance, run_id)
        run_id = made.run_id if made else run_id
    for run in runs_left_running(session.tracker, run_id):
        session.tracker.mark_failed(run.info.run_id, "dagster", exc)
    why = storage_failure(exc, session.home) or version_failure(exc, "running it")
    print(f"experiments-dagster run: {partition_key}: {why}", file=sys.stderr)
    return (partition_key, "FAILURE", why)


def success_row(partition_key: str, result: Any) -> Row:
    """A successful run's row: its last MLflow run URL, or BLOCKED when the champion could not be scored."""
    from experiments_dagster.experiment.registry import BLOCKED, RECOVERY

    materialized = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    urls = [meta["mlflow_run_url"].value for meta in materialized if "mlflow_run_url" in meta]
    blocked = [m["reason"].value for m in materialized if _text(m.get("decision")) == BLOCKED]
    if blocked:  # trained and logged, but the champion could not be scored: exit non-zero
        return (partition_key, "BLOCKED", f"{blocked[-1]} {RECOVERY}")
    return (partition_key, "SUCCESS", urls[-1] if urls else result.run_id)


def failure_row(session: Session, partition_key: str, result: Any) -> Row:
    """A failed run's row (the failed step and its error); its MLflow runs are closed if the server answers."""
    from experiments_dagster.defs.outcomes import sweep
    from experiments_dagster.defs.reconciliation import step_failure
    from experiments_dagster.tracking.server import server_problem

    tracker = session.tracker
    try:
        report_reconciled(sweep(tracker, session.instance, result.run_id), "after its Dagster run failed")
    except Exception as exc:
        # The tracking server went away with the step: the reconciler closes the runs later.
        problem = server_problem(exc, tracker.tracking_uri)
        if problem is None:
            raise
        print(
            f"experiments-dagster run: {partition_key}: its MLflow runs cannot be closed now ({problem}) "
            "The reconciler marks them FAILED once the server answers (the daemon's "
            "mlflow_run_reconciler, or the next `run` or `audit`).",
            file=sys.stderr,
        )
    failed = step_failure(session.instance, result.run_id)
    why = f"{failed[0]}: {failed[1]}" if failed else "the run failed"
    return (partition_key, "FAILURE", f"{why} (Dagster run {result.run_id})")


def _text(value: object) -> str | None:
    """A Dagster metadata entry's text (None when absent)."""
    return None if value is None else str(getattr(value, "value", value))
