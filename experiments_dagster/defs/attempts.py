"""One experiment attempt per partition at a time, for `experiments-dagster run` as for queued runs.

Queued runs already obey the instance's ``dagster/partition`` limit (``dagster.yaml``); runs made
by ``execute_in_process`` bypass the queue. Two such processes on one version would share its
stored values at ``<asset>/<partition>`` and log into each other's runs, so the CLI takes an
exclusive, non-blocking ``flock`` per partition under ``$DAGSTER_HOME/locks`` (the kernel drops
it when the holder dies, even by SIGKILL) and also refuses a partition with a run in progress in
the instance (a sensor run, a backfill). On a shared instance across machines (the production
profile) the file lock is not enough; that profile serializes through its database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.tracking.sqlite_store import file_lock

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
PARTITION_TAG = "dagster/partition"
# The Dagster run id is known only once execute_job has made the run (Celery); this tag, set on
# every run of the CLI, ties it to the attempt.
ATTEMPT_TAG = "experiments.attempt"


class AttemptInProgress(ExperimentInputError):
    """Another attempt at the same partition is running."""


def open_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance of ``home``, its storage created under a lock.

    Two processes opening a fresh ``DAGSTER_HOME`` at once race Dagster's SQLite schema creation
    ("table secondary_indexes already exists"); the first creates it while the other waits.
    """
    with file_lock(home / "locks" / "instance-init.lock"):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # run storage
        instance.get_latest_materialization_event(dg.AssetKey("raw_data"))  # event log index
    return instance


def _lock_path(home: Path, partition_key: str) -> Path:
    digest = hashlib.sha256(partition_key.encode()).hexdigest()[:32]
    return home / "locks" / f"partition-{digest}.lock"


@contextmanager
def partition_attempt(
    instance: dg.DagsterInstance, home: Path, partition_key: str, dagster_run_id: str
) -> Iterator[None]:
    """Hold the partition for ``dagster_run_id``; refuse, naming the other run, if it is taken."""
    path = _lock_path(home, partition_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            raise AttemptInProgress(
                f"{partition_key} is being trained by another `experiments-dagster run` (Dagster run "
                f"{holder.get('dagster_run_id', '?')}, pid {holder.get('pid', '?')}). Wait for it to end, "
                "or stop it, then run this version again."
            ) from None
        others = instance.get_runs(
            filters=dg.RunsFilter(tags={PARTITION_TAG: partition_key}, statuses=IN_PROGRESS)
        )
        if others:
            raise AttemptInProgress(
                f"{partition_key} has a Dagster run in progress ({others[0].run_id}, "
                f"{others[0].status.value}, job {others[0].job_name}). Wait for it to end, or cancel it in "
                "the Dagster UI, then run this version again."
            )
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"dagster_run_id": dagster_run_id, "pid": os.getpid(), "partition": partition_key}
            ).encode(),
        )
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_holder(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def attempt_run(instance: dg.DagsterInstance, attempt_id: str) -> dg.DagsterRun | None:
    """The Dagster run of the attempt tagged ``attempt_id`` (None before it is made)."""
    records = instance.get_run_records(dg.RunsFilter(tags={ATTEMPT_TAG: attempt_id}), limit=1)
    return records[0].dagster_run if records else None


def abandon_attempt(
    signum: int, instance: dg.DagsterInstance | None = None, tracker=None, attempt_id: str | None = None
) -> None:
    """Record an attempt the command stops on ``signum``: its Dagster run CANCELED (if still in
    progress), then its MLflow runs left RUNNING KILLED with the signal as the error."""
    if instance is None or tracker is None or attempt_id is None:
        return  # no run under way
    from experiments_dagster.tracking.run_lookup import runs_left_running

    why = f"experiments-dagster run was stopped by {signal.Signals(signum).name}"
    run = attempt_run(instance, attempt_id)
    if run is None:
        return
    if not run.is_finished:
        instance.report_run_canceled(run, why)
    for left in runs_left_running(tracker, run.run_id):
        tracker.mark_failed(left.info.run_id, "dagster", KeyboardInterrupt(why), "KILLED")
