"""SIGTERM ends `experiments-dagster run` within seconds on the embedded profile with a tracking
server (``MLFLOW_TRACKING_URI=http://...``): with the server answering, and with a server that
accepts connections but never answers (SIGSTOPped), the case that used to hang for minutes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from experiments_dagster.cli.shutdown import GRACE_S, RECORD_S
from experiments_dagster_tests.ui_servers import Server, free_port, started

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CLI = BIN / "experiments-dagster"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``mlflow server`` on a SQLite store and an artifact folder under ``tmp_path``."""
    port = free_port()
    argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with started(argv, url, "/health", {}, tmp_path / "mlflow.log") as running:
        yield running
        os.killpg(running.process.pid, signal.SIGCONT)  # if a test froze it: let it stop


def start_slow_run(tmp_path: Path, data_dir: Path, url: str) -> tuple[subprocess.Popen, dict, MlflowClient]:
    """`run` on one slow iris version against ``url``; returns once a CV fold is training."""
    data = tmp_path / "run-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    first = next((data / "iris").glob("v1.*"))
    shutil.copy(first, first.with_stem("v2"))  # a second version the signal must not start
    (data / "iris" / "experiment.yaml").write_text("target: species\nhyperparameters: {n_estimators: 4000}\n")
    env = {**os.environ, "EXPERIMENTS_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "home")}
    env["MLFLOW_TRACKING_URI"] = url
    for key in ("EXPERIMENTS_PROFILE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        env.pop(key, None)  # the embedded profile with MLflow's settings left to the command
    (tmp_path / "home").mkdir()
    proc = subprocess.Popen(
        [str(CLI), "run", "--dataset", "iris"], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = MlflowClient(url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        exp = client.get_experiment_by_name("iris")
        if exp and client.search_runs(
            [exp.experiment_id], "tags.`cv.fold` != '' and attributes.status = 'RUNNING'"
        ):
            return proc, env, client
    proc.kill()
    pytest.fail(f"no fold started training within 300 s: {proc.communicate()[1][-3000:]}")


def stop_and_time(proc: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[float, str]:
    started_at = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return time.monotonic() - started_at, err


def iris_runs(client: MlflowClient) -> list:
    return client.search_runs([client.get_experiment_by_name("iris").experiment_id])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_run_in_seconds_and_its_mlflow_runs_killed(
    tmp_path: Path, data_dir: Path, server, signum: signal.Signals
):
    proc, _, client = start_slow_run(tmp_path, data_dir, server.url)
    took, err = stop_and_time(proc, signum)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert took < GRACE_S, err[-3000:]
    assert f"experiments-dagster run: stopped by {signum.name} after iris/v1." in err, err[-3000:]
    runs = iris_runs(client)
    assert runs and {r.info.status for r in runs} <= {"KILLED", "FAILED"}, [r.info.status for r in runs]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["error.type"] == "DagsterExecutionInterruptedError"


def test_sigterm_ends_a_run_whose_tracking_server_hangs(
    tmp_path: Path, data_dir: Path, server, monkeypatch: pytest.MonkeyPatch
):
    proc, env, client = start_slow_run(tmp_path, data_dir, server.url)
    os.killpg(server.process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        took, err = stop_and_time(proc)
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
    assert took < GRACE_S + RECORD_S + 3, err[-3000:]
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert "stopped by SIGTERM; the run did not stop within 5 s, so it is recorded as CANCELED" in err
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.get_run_records()  # the second version was never started
        assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED
        assert (
            "stopped by SIGTERM"
            in instance.get_records_for_run(record.dagster_run.run_id).records[-1].event_log_entry.message
        )
    # The server answers again: the next command's sweep closes what the killed one could not.
    audit = subprocess.run(
        [str(CLI), "audit", "--experiment", "iris"], env=env, capture_output=True, text=True, timeout=300
    )
    assert audit.returncode == 1, audit.stdout[-2000:] + audit.stderr[-2000:]
    runs = iris_runs(client)
    assert runs and "RUNNING" not in {r.info.status for r in runs}, [r.info.status for r in runs]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"
