"""Liveness of the CLI's Dagster runs comes from their heartbeat, never from a PID that is alive."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import dagster as dg

from experiments_dagster.defs.attempts import ATTEMPT_TAG
from experiments_dagster.defs.heartbeat import (
    HEARTBEAT_TAG,
    RUN_WORKER_TAG,
    STALE_S,
    RunHeartbeat,
    dead_run_reason,
    first_beat,
    run_worker,
)
from experiments_dagster.defs.reconciliation import reconcile_runs
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.liveness import process_start

NOW = 1_900_000_000.0


def a_run(beat: float | None, worker: str | None = None, status=dg.DagsterRunStatus.STARTED) -> dg.DagsterRun:
    run_tags = {} if beat is None else {HEARTBEAT_TAG: str(int(beat)), RUN_WORKER_TAG: worker or run_worker()}
    return dg.DagsterRun(job_name="experiment_job", run_id=str(uuid.uuid4()), status=status, tags=run_tags)


def test_a_fresh_heartbeat_is_alive():
    assert dead_run_reason(a_run(NOW - 5), now=NOW) is None


def test_a_stale_heartbeat_is_dead_although_its_pid_is_alive():
    # The run worker named is this very process, alive: the heartbeat decides, not the PID.
    reason = dead_run_reason(a_run(NOW - STALE_S - 30), now=NOW)
    assert reason == "its run worker stopped beating 90 s ago (more than 60 s)"


def test_a_pid_held_by_another_process_is_dead_at_once():
    # Same host, same PID, another start time: the PID was reused (an idle pool process, say).
    worker = f"{socket.gethostname()}:{os.getpid()}:1"
    reason = dead_run_reason(a_run(NOW - 1, worker), now=NOW)
    assert reason == f"process {os.getpid()} died (killed or out of memory): its run worker is gone"


def test_a_gone_process_is_dead_at_once():
    done = subprocess.Popen(["true"])
    done.wait()
    worker = f"{socket.gethostname()}:{done.pid}:{process_start(os.getpid())}"
    assert dead_run_reason(a_run(NOW - 1, worker), now=NOW).startswith(f"process {done.pid} died")


def test_runs_without_a_heartbeat_or_ended_are_left_to_dagster():
    assert dead_run_reason(a_run(None), now=NOW) is None  # launched by the daemon or the UI
    assert dead_run_reason(a_run(NOW - 999, status=dg.DagsterRunStatus.FAILURE), now=NOW) is None


def test_the_reconciler_fails_a_dead_dagster_run_and_its_mlflow_runs(instance, tracker):
    alive_pid_tags = {HEARTBEAT_TAG: str(int(time.time() - STALE_S - 10)), RUN_WORKER_TAG: run_worker()}
    dead = instance.add_run(
        dg.DagsterRun(job_name="experiment_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                      tags=alive_pid_tags)
    )  # fmt: skip
    alive = instance.add_run(
        dg.DagsterRun(job_name="experiment_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                      tags=first_beat())
    )  # fmt: skip
    exp = tracker.experiment_id("iris")
    # The MLflow runs' own process tags name this (alive) process: they must not matter.
    parent = tracker.start_run(
        exp, "iris@v1", {tags.DAGSTER_RUN_ID: dead.run_id, "process.pid": str(os.getpid())}
    )
    other = tracker.start_run(exp, "iris@v2", {tags.DAGSTER_RUN_ID: alive.run_id})

    (done,) = reconcile_runs(tracker, instance)
    assert (done.mlflow_run_id, done.status) == (parent, "FAILED")
    assert done.reason.startswith("its run worker stopped beating")
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    run = tracker.client.get_run(parent)
    assert run.info.status == "FAILED" and run.data.tags["reconciled.reason"] == done.reason
    assert tracker.client.get_run(other).info.status == "RUNNING"


def test_the_heartbeat_finds_its_run_by_the_attempt_tag_and_beats(instance):
    attempt = str(uuid.uuid4())
    start = {**first_beat(), HEARTBEAT_TAG: "1", ATTEMPT_TAG: attempt}
    with RunHeartbeat(instance, attempt, interval_s=0.1):
        time.sleep(0.3)  # before the run exists: no error, it keeps looking
        run = instance.add_run(dg.DagsterRun(job_name="experiment_job", run_id=str(uuid.uuid4()), tags=start))
        deadline = time.monotonic() + 10
        while instance.get_run_by_id(run.run_id).tags[HEARTBEAT_TAG] == "1":
            assert time.monotonic() < deadline, "no heartbeat written in 10 s"
            time.sleep(0.1)
    assert abs(float(instance.get_run_by_id(run.run_id).tags[HEARTBEAT_TAG]) - time.time()) < 5
