"""The run worker's heartbeat: whether a Dagster run of `experiments-dagster run` is still alive.

Runs that the CLI executes (``execute_in_process``, or ``execute_job`` orchestrating Celery
steps) are not launched through a run launcher, so Dagster's run monitoring cannot check their
worker. While such a run executes, a thread of the process that orchestrates it writes the
Dagster run's tag ``experiments/heartbeat`` (Unix seconds) every ``INTERVAL_S`` and, once,
``experiments/run_worker`` (``<host>:<pid>:<pid start time>``). A run STARTED or STARTING is dead
when its heartbeat is older than ``STALE_S``, or at once when its run worker's process is gone
from this host. A PID that another process holds now never makes a run look alive: only a fresh
heartbeat does, and a process's start time tells a reused PID apart. Heartbeats are compared by
wall clock across machines (keep them in sync), and a process suspended for over ``STALE_S`` is
judged dead.

Runs launched by the daemon or the UI carry no heartbeat: the code server that runs them marks
them failed when their process exits, and ``run_monitoring`` (dagster.yaml) fails those that
never start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import TracebackType

import dagster as dg

from experiments_dagster.defs.attempts import attempt_run
from experiments_dagster.tracking.liveness import process_start

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "experiments/heartbeat"
RUN_WORKER_TAG = "experiments/run_worker"
INTERVAL_S = 10.0
RETRY_S = 2.0  # while the instance cannot be written (a database restarting): beat again soon
STALE_S = 60.0
ALIVE = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def run_worker() -> str:
    """``<host>:<pid>:<start time of the pid>`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"


def first_beat() -> dict[str, str]:
    """The tags a run of the CLI is made with, so that it has a heartbeat from its start."""
    return {HEARTBEAT_TAG: str(int(time.time())), RUN_WORKER_TAG: run_worker()}


class RunHeartbeat:
    """``with RunHeartbeat(instance, attempt_id):`` around the execution of the attempt's run."""

    def __init__(self, instance: dg.DagsterInstance, attempt_id: str, interval_s: float = INTERVAL_S):
        self.instance, self.attempt_id, self.interval_s = instance, attempt_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _beat(self) -> None:
        run_id: str | None = None
        while not self._stop.is_set():
            wait = self.interval_s
            try:
                if run_id is None:
                    run = attempt_run(self.instance, self.attempt_id)
                    run_id = run.run_id if run is not None else None
                if run_id is not None:
                    self.instance.add_run_tags(run_id, {HEARTBEAT_TAG: str(int(time.time()))})
                else:
                    wait = RETRY_S  # the run is not made yet
            except Exception as exc:  # the instance's database is away: the run may still go on
                log.warning("heartbeat of attempt %s not written: %s", self.attempt_id, exc)
                wait = RETRY_S
            self._stop.wait(wait)


def run_worker_gone(worker: str) -> bool:
    """True when ``worker`` (``run_worker()``) ran on this host and its process is gone."""
    host, _, rest = worker.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return process_start(int(pid)) != start  # "" when no such process


def dead_run_reason(run: dg.DagsterRun, now: float | None = None) -> str | None:
    """Why the STARTED/STARTING run ``run`` of the CLI is dead, or None (alive, or not the CLI's)."""
    beat = run.tags.get(HEARTBEAT_TAG)
    if run.status not in ALIVE or beat is None:
        return None
    worker = run.tags.get(RUN_WORKER_TAG, "")
    if worker and run_worker_gone(worker):
        return f"process {worker.split(':')[1]} died (killed or out of memory): its run worker is gone"
    age = (now or time.time()) - float(beat)
    if age > STALE_S:
        return f"its run worker stopped beating {age:.0f} s ago (more than {STALE_S:.0f} s)"
    return None
