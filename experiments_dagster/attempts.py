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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.tracking.sqlite_store import file_lock

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
PARTITION_TAG = "dagster/partition"


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
