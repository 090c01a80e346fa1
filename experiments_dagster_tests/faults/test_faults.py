"""Faults injected for real into `experiments-dagster run`: cancellation and SIGKILL.

(An exception inside an asset is covered in defs/test_graph.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from experiments_dagster.defs.reconciler_sensor import mlflow_run_reconciler
from experiments_dagster.defs.reconciliation import reconcile_runs
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.ml.parallel import fold_workers
from experiments_dagster.tracking.store import Tracker

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")


@pytest.fixture
def slow_experiment(tmp_path: Path, data_dir: Path, tracking_uri: str):
    """A dataset whose folds train for seconds, and the env of a cold `experiments-dagster run`."""
    data = tmp_path / "slow-data"
    shutil.copytree(data_dir / "breast_cancer", data / "breast_cancer")
    spec_path = data / "breast_cancer" / "experiment.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["hyperparameters"] = {"n_estimators": 20000, "max_depth": 8, "learning_rate": 0.001}
    spec_path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "EXPERIMENTS_DATA_DIR": str(data),
    }
    return env, home


def start_run_and_wait_for_a_fold(env: dict, tracking_uri: str) -> tuple[subprocess.Popen, MlflowClient]:
    proc = subprocess.Popen(
        [str(CLI), "run", "--dataset", "breast_cancer", "--version", "v1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = MlflowClient(tracking_uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the fault could be injected"
        try:
            runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        except Exception:  # the store may still be being created by the child
            runs = []
        if any(r.info.run_name == "fold-0" and r.info.status == "RUNNING" for r in runs):
            time.sleep(1.0)  # let the fold be well inside training
            return proc, client
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("no fold run started within 180 s")


def all_runs(client: MlflowClient) -> dict[str, object]:
    return {
        r.info.run_name: r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }


def folds_in_flight(runs: dict[str, object]) -> list[str]:
    """The folds that were training when the fault hit: the highest-numbered unfinished ones.

    Several folds train at once (one per CPU), and earlier folds may finish first under load.
    """
    folds = sorted((name for name in runs if name.startswith("fold-")), key=lambda n: int(n.split("-")[1]))
    unfinished = [name for name in folds if runs[name].info.status != "FINISHED"]
    assert unfinished, "no fold was training when the fault hit"
    assert unfinished == folds[-len(unfinished) :]  # everything before them finished
    assert len(unfinished) <= fold_workers(5)
    return unfinished


def test_sigkill_leaves_running_runs_that_the_reconciler_marks_failed(slow_experiment, tracking_uri):
    env, home = slow_experiment
    proc, client = start_run_and_wait_for_a_fold(env, tracking_uri)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    runs = all_runs(client)
    in_flight = folds_in_flight(runs)
    assert {runs[name].info.status for name in ["breast_cancer@v1 #1", *in_flight]} == {
        "RUNNING"
    }  # left dangling

    with dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(str(home))) as instance:
        dagster_run_id = runs["breast_cancer@v1 #1"].data.tags["dagster.run_id"]
        assert instance.get_run_by_id(dagster_run_id).status == dg.DagsterRunStatus.STARTED
        resources = {"mlflow": MlflowTracking(tracking_uri=tracking_uri)}
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            skip = mlflow_run_reconciler(context)
        assert skip.skip_message == f"Closed {1 + len(in_flight)} MLflow runs left RUNNING."
        assert instance.get_run_by_id(dagster_run_id).status == dg.DagsterRunStatus.FAILURE
        assert reconcile_runs(Tracker(tracking_uri), instance) == []  # idempotent

    for name in ("breast_cancer@v1 #1", *in_flight):
        run = client.get_run(runs[name].info.run_id)
        assert run.info.status == "FAILED" and run.info.end_time is not None
        assert run.data.tags["error.type"] == "DagsterRunEnded"
        assert f"process {proc.pid} died" in run.data.tags["error.message"]
        assert run.data.tags["error.asset"] in {"splits", "fold_models"}


def test_cancellation_marks_runs_killed(slow_experiment, tracking_uri):
    env, home = slow_experiment
    proc, client = start_run_and_wait_for_a_fold(env, tracking_uri)
    dagster_run_id = all_runs(client)["breast_cancer@v1 #1"].data.tags["dagster.run_id"]
    with dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(str(home))) as instance:
        # What Dagster's run termination does to an in-process run worker: mark CANCELING, interrupt.
        instance.report_run_canceling(instance.get_run_by_id(dagster_run_id))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        runs = all_runs(client)
        in_flight = folds_in_flight(runs)
        for name in ("breast_cancer@v1 #1", *in_flight):
            run = runs[name]
            assert run.info.status == "KILLED", (name, run.info.status)
            assert run.data.tags["error.asset"] == "fold_models"
            assert run.data.tags["error.type"] in {"KeyboardInterrupt", "DagsterExecutionInterruptedError"}
        assert {runs[name].info.status for name in in_flight} == {
            "KILLED"
        }  # nothing started after the interrupt
        status = instance.get_run_by_id(dagster_run_id).status
        assert status in {
            dg.DagsterRunStatus.CANCELED,
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELING,
        }
        assert reconcile_runs(Tracker(tracking_uri), instance) == []  # nothing left RUNNING
