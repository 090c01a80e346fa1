"""`experiments-dagster run` under concurrency and faults, in real subprocesses: two processes on the
same versions, a SIGKILLed run, a full disk under DAGSTER_HOME."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments_dagster.tracking.store import Tracker

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")


def cli_env(tmp_path: Path, data: Path, home: Path) -> tuple[dict[str, str], str]:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {
        **os.environ,
        "EXPERIMENTS_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": uri,
    }
    return env, uri


def parents(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]


def test_two_run_processes_on_the_same_versions_never_share_an_attempt(tmp_path: Path, data_dir: Path):
    data = tmp_path / "run-data"
    for name in ("iris", "diabetes"):
        shutil.copytree(data_dir / name, data / name)
        # Long enough (tens of seconds a version) that the two processes overlap on every version
        # even when one starts seconds after the other; run one after the other, each would train
        # its own attempt, which is not what this test is about.
        path = data / name / "experiment.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["hyperparameters"] = {**spec.get("hyperparameters", {}), "n_estimators": 1500}
        path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"  # fresh: both processes create the instance at once
    env, uri = cli_env(tmp_path, data, home)
    procs = [
        subprocess.Popen(
            [str(CLI), "run"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = [p.returncode for p in procs]
    text = "\n".join(o + e for o, e in outs)
    assert "Traceback" not in text and "already exists" not in text, text[-3000:]
    client = MlflowClient(uri)
    for name, key in (("iris", "iris/v1"), ("diabetes", "diabetes/v1")):
        (parent,) = parents(client, name)  # one attempt per version, whoever ran it
        assert parent.info.status == "FINISHED" and parent.data.tags["audit.status"] == "complete"
        trained = [o for o, _ in outs if re.search(rf"{re.escape(key)}\s+SUCCESS\s+http", o)]
        assert len(trained) == 1, text[-3000:]
        assert parent.info.run_id in trained[0]  # the process that trained it printed its own run
        versions = client.search_model_versions(f"name = '{name}_model'")
        assert [v.run_id for v in versions] == [parent.info.run_id]
        # The other process was refused while it trained (BUSY), or came after it had finished
        # and found the version up to date, linking the same run.
        rows = [
            re.search(rf"^  {re.escape(key)}\s+(SUCCESS|BUSY|up to date)\s+(.*)$", o, re.M) for o, _ in outs
        ]
        assert sorted(r.group(1) for r in rows) in (["BUSY", "SUCCESS"], ["SUCCESS", "up to date"]), text[
            -3000:
        ]
        assert all(parent.info.run_id in r.group(2) for r in rows if r.group(1) == "up to date")
    refusals = re.findall(
        r"is being trained by another `experiments-dagster run` \(Dagster run ([0-9a-f-]{36})", text
    ) + re.findall(r"has a Dagster run in progress \(([0-9a-f-]{36})", text)
    busy = [len(re.findall(r"\s+BUSY\s+", o)) for o, _ in outs]
    assert sum(busy) >= 1 and len(refusals) >= sum(busy), text[-3000:]
    assert codes == [1 if n else 0 for n in busy], text[-3000:]  # exit 1 only for a BUSY row
    for name in ("iris", "diabetes"):
        audit = subprocess.run(
            [str(CLI), "audit", "--experiment", name], env=env, capture_output=True, text=True, timeout=300
        )
        assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]


def test_a_sigkilled_run_is_closed_by_the_next_command(tmp_path: Path, data_dir: Path):
    data = tmp_path / "run-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    (data / "iris" / "experiment.yaml").write_text("target: species\nhyperparameters: {n_estimators: 4000}\n")
    home = tmp_path / "home"
    env, uri = cli_env(tmp_path, data, home)
    proc = subprocess.Popen(
        [str(CLI), "run"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    client = None
    while time.monotonic() < deadline:  # until a fold is training
        time.sleep(0.5)
        if (tmp_path / "store" / "mlflow.db").exists():
            # Through the project's store opener: it waits for the creating process's migration.
            client = client or Tracker(uri).client
            exp = client.get_experiment_by_name("iris")
            if exp and client.search_runs(
                [exp.experiment_id], "tags.`cv.fold` != '' and attributes.status = 'RUNNING'"
            ):
                break
    else:
        proc.kill()
        pytest.fail("no fold started training within 300 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    (parent,) = parents(client, "iris")
    assert parent.info.status == "RUNNING"  # nothing could close it: the process is gone

    audit = subprocess.run(
        [str(CLI), "audit", "--experiment", "iris"], env=env, capture_output=True, text=True, timeout=300
    )
    assert re.search(
        rf"closed MLflow run {parent.info.run_id} before the audit: FAILED \(process {proc.pid} died",
        audit.stderr,
    ), audit.stderr[-3000:]
    assert audit.returncode == 1  # the killed attempt is incomplete, and says so
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FAILED" and "died" in run.data.tags["error.message"]
    exp = client.get_experiment_by_name("iris")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert run.data.params["dataset.name"] == "iris"  # what was logged before the kill is still there


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 4 MB tmpfs here to fill a disk for real: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_dagster_home_gives_one_clear_line(
    tmp_path: Path, data_dir: Path, small_disk: Path
):
    data = tmp_path / "run-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    home = small_disk / "home"
    home.mkdir()
    # Leave ~400 KB: the instance's SQLite files outgrow it during the run.
    (small_disk / "filler").write_bytes(bytes(3700 * 1024))
    env, uri = cli_env(tmp_path, data, home)
    done = subprocess.run(
        [str(CLI), "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    assert re.search(
        r"iris/v1\s+FAILURE\s+.*(No space left on device|disk full|could not be written)",
        done.stdout + done.stderr,
    ), (done.stdout + done.stderr)[-3000:]
    row = re.search(r"iris/v1\s+FAILURE\s+(.*)", done.stdout)
    assert row and f"DAGSTER_HOME {home}" in row.group(1), done.stdout  # the row names the folder
    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert "RUNNING" not in {r.info.status for r in runs}  # whatever was opened was closed
    for parent in [r for r in runs if "mlflow.parentRunId" not in r.data.tags]:
        assert parent.info.status == "FAILED" and parent.data.tags["error.message"]


def test_a_full_artifact_disk_fails_the_run_with_the_path(tmp_path: Path, data_dir: Path, small_disk: Path):
    """The store's database has room, its artifact folder does not: the step fails, its MLflow runs
    end FAILED with the error, and the row names the full path."""
    data = tmp_path / "run-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    home = tmp_path / "home"
    env, uri = cli_env(tmp_path, data, home)
    client = Tracker(uri).client
    client.create_experiment("iris", artifact_location=(small_disk / "artifacts").as_uri())
    (small_disk / "filler").write_bytes(bytes(4 * 1024 * 1024 - 64 * 1024))  # ~64 KB left
    done = subprocess.run(
        [str(CLI), "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    row = re.search(r"iris/v1\s+FAILURE\s+(.*)", done.stdout)
    assert row and "No space left on device" in row.group(1) and str(small_disk) in row.group(1), out[-3000:]
    runs = [r for r in client.search_runs([client.get_experiment_by_name("iris").experiment_id])]
    assert runs and "RUNNING" not in {r.info.status for r in runs}
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and "No space left on device" in parent.data.tags["error.message"]
    assert parent.data.params["dataset.name"] == "iris"  # logged before the disk filled: kept
