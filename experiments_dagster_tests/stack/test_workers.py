"""Steps on the stack's two real Celery workers: which worker ran what, promotions raced across
workers, a worker SIGKILLed mid-step, Redis restarted between runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from devstack.local import LocalStack
from experiments_dagster.core.locks import NamedLock
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster_tests.stack.conftest import (
    BIN,
    client_for,
    copy_dataset,
    reexecute_from_failure,
    run_cli,
    start_cli,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), e.g. a Celery worker's pool children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def worker_pids(stack: LocalStack) -> dict[str, set[int]]:
    """Each Celery worker service and the processes it runs steps in."""
    return {s: descendants(stack.pid(s)) for s in stack.worker_services() if stack.pid(s)}


def instance_for(stack_env: dict, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    monkeypatch.setenv("EXPERIMENTS_DAGSTER_PG_URL", stack_env["EXPERIMENTS_DAGSTER_PG_URL"])
    return dg.DagsterInstance.from_config(stack_env["DAGSTER_HOME"])


def materializations(instance: dg.DagsterInstance, run_id: str, asset: str) -> list[dict]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return [
        {k: v.value for k, v in e.dagster_event.event_specific_data.materialization.metadata.items()}
        for e in events
        if e.dagster_event.event_specific_data.materialization.asset_key.to_user_string() == asset
    ]


def pool_limit(env: dict, limit: int) -> None:
    """``dagster instance concurrency set model_registry <limit>`` on the stack's instance."""
    subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "model_registry", str(limit)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_stack_runs_two_celery_workers_stopped_by_pid(stack: LocalStack, stack_env: dict):
    assert stack.workers == 2 and stack.worker_services() == ["celery-worker-1", "celery-worker-2"]
    pools = worker_pids(stack)
    assert len(pools) == 2 and all(pools.values()), pools  # each worker has its pool child
    assert stack_env["EXPERIMENTS_EXECUTOR"] == "celery"
    assert stack_env["EXPERIMENTS_CELERY_BROKER_URL"].startswith("redis://:")


def test_promotions_raced_on_two_workers_decide_one_after_the_other(
    stack: LocalStack, stack_env: dict, monkeypatch: pytest.MonkeyPatch
):
    """Two runs reach model_promotion of one registered model on the two workers while the
    test holds the promotion lock; released, they decide one at a time: the second one sees
    the first one's champion, never the state before it.

    dagster-celery 0.29.27 claims pool slots in its orchestration loop, so the `model_registry`
    pool (limit 1) alone would start the second promotion only after the first: the test lifts
    the pool's limit to 2 (as a deployment may, or an executor that ignores pools would), so
    the lock is the only thing between the two decisions.
    """
    folder = copy_dataset(stack_env, "iris", as_name="race_iris")
    shutil.copy(folder / "v1.csv", folder / "v2.csv")
    lock = NamedLock(stack_env["EXPERIMENTS_DAGSTER_PG_URL"], "promotion:race_iris_model")
    pool_limit(stack_env, 2)
    lock.acquire()
    runs = []
    try:
        runs = [
            subprocess.Popen(
                [str(BIN / "experiments-dagster"), "run", "--version", version],
                env=stack_env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for version in ("v1", "v2")
        ]
        with instance_for(stack_env, monkeypatch) as instance:
            deadline = time.monotonic() + 400
            started: list = []
            while time.monotonic() < deadline and len(started) < 2:
                assert all(p.poll() is None for p in runs), [p.communicate() for p in runs]
                started = [
                    r
                    for r in instance.get_event_records(
                        dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_START)
                    )
                    if r.event_log_entry.step_key == "model_promotion"
                    and instance.get_run_by_id(r.run_id)
                    .tags.get("dagster/partition", "")
                    .startswith("race_iris/")
                ]
                time.sleep(1)
            assert len(started) == 2, "both promotions should be waiting on the lock"
            time.sleep(2)  # both are inside the step, blocked on the lock the test holds
    finally:
        lock.release()
        try:
            outputs = [p.communicate(timeout=400) for p in runs]
        finally:
            pool_limit(stack_env, 1)
    assert [p.returncode for p in runs] == [0, 0], outputs
    with instance_for(stack_env, monkeypatch) as instance:
        decisions = [m for r in started for m in materializations(instance, r.run_id, "model_promotion")]
    assert len(decisions) == 2
    first, second = sorted(decisions, key=lambda d: d["lock_held_from"])
    assert first["worker"] != second["worker"]  # one on each worker
    workers = set().union(*worker_pids(stack).values())
    assert {int(d["worker"].split(":")[1]) for d in decisions} <= workers
    assert all(d["lock_wait_seconds"] >= 2 for d in decisions)  # both waited for the test's lock
    assert first["lock_held_until"] <= second["lock_held_from"]  # never at the same time
    # The second decided from the first one's result.
    expected = (
        first["challenger_version"] if first["decision"] == "promoted" else first["previous_champion_version"]
    )
    assert second["previous_champion_version"] == expected, (first, second)
    client = client_for(stack_env)
    champion = client.get_model_version_by_alias("race_iris_model", "champion")
    last_promoted = [d for d in (first, second) if d["decision"] == "promoted"]
    assert last_promoted and str(champion.version) == last_promoted[-1]["challenger_version"]


def test_worker_killed_mid_step_fails_the_run_and_a_reexecution_completes(
    stack: LocalStack, stack_env: dict, monkeypatch: pytest.MonkeyPatch
):
    folder = copy_dataset(stack_env, "iris", as_name="killed_iris")
    spec = (folder / "experiment.yaml").read_text().replace("n_estimators: 60", "n_estimators: 4000")
    (folder / "experiment.yaml").write_text(spec)
    client = client_for(stack_env)
    process = start_cli(stack_env, "run")
    try:
        deadline = time.monotonic() + 300
        folds: list = []
        while time.monotonic() < deadline and not folds:
            exp = client.get_experiment_by_name("killed_iris")
            if exp is not None:
                folds = [
                    r
                    for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
                    if (r.info.run_name or "").startswith("fold")
                ]
            time.sleep(0.3)
        assert folds, "the run never reached the CV folds"
        victim = int(folds[0].data.tags["worker"].split(":")[1])
        assert victim in set().union(*worker_pids(stack).values())  # a Celery worker's pool process
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stdout + stderr
    assert re.search(r"killed_iris/v1 +FAILURE +fold_models: ", stdout) and "signal 9" in stdout, stdout
    exp_id = client.get_experiment_by_name("killed_iris").experiment_id
    runs = client.search_runs([exp_id])
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    assert (
        "fold_models" in parent.data.tags["reconciled.reason"]
        and "signal 9" in parent.data.tags["reconciled.reason"]
    )
    dagster_run_id = parent.data.tags["dagster.run_id"]
    # The worker's pool gave it a new process; the stack's two workers are both still there.
    assert all(worker_pids(stack).values())

    # Re-execution from failure (Dagster's public API, as the UI's "from failure" button does).
    retry = reexecute_from_failure(stack_env, dagster_run_id)
    assert retry.returncode == 0 and retry.stdout.split()[-1] == "True", retry.stdout + retry.stderr
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["retry.count"] == "1"
    audit = run_cli(stack_env, "audit", "--experiment", "killed_iris")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert not client.search_runs([exp_id], "attributes.status = 'RUNNING'")


def test_redis_restarted_between_two_runs(stack: LocalStack, stack_env: dict):
    folder = copy_dataset(stack_env, "iris", as_name="redis_iris")
    first = run_cli(stack_env, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    old = stack.pid("redis")
    stack.restart_redis()
    assert stack.pid("redis") not in (None, old)
    shutil.copy(folder / "v1.csv", folder / "v2.csv")
    second = run_cli(stack_env, "run", "--version", "v2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "redis_iris/v2  SUCCESS" in second.stdout
    client = client_for(stack_env)
    exp = client.get_experiment_by_name("redis_iris")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert sorted((p.data.tags["dataset.version"], p.info.status) for p in parents) == [
        ("v1", "FINISHED"),
        ("v2", "FINISHED"),
    ]
