"""`experiments-dagster run` on the embedded defaults, as `make run` calls it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments_dagster.tracking.audit import local_artifact_root

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")


def test_run_uses_the_embedded_store_beside_the_data_dir(tmp_path: Path, data_dir: Path):
    data = tmp_path / "run-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    shutil.copytree(data_dir / "diabetes", data / "diabetes")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"EXPERIMENTS_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run([str(CLI), "run"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    store = tmp_path / ".mlflow" / "mlflow.db"  # beside the data dir, not in it
    assert not (data / ".mlflow").exists()
    assert f"MLflow store:   sqlite:///{store}" in done.stdout
    assert re.search(r"iris/v1\s+SUCCESS", done.stdout) and re.search(r"diabetes/v1\s+SUCCESS", done.stdout)
    assert list(cwd.iterdir()) == []  # nothing written relative to the working directory
    client = MlflowClient(f"sqlite:///{store}")
    names = {e.name for e in client.search_experiments()}
    assert {"iris", "diabetes"} <= names
    for name in ("iris", "diabetes"):
        (parent,) = [
            r
            for r in client.search_runs([client.get_experiment_by_name(name).experiment_id])
            if "mlflow.parentRunId" not in r.data.tags
        ]
        assert parent.info.status == "FINISHED" and parent.data.tags["audit.status"] == "complete"

    # --select: redraw one version's plots into the same parent run; nothing else is retrained.
    iris = client.get_experiment_by_name("iris").experiment_id
    before = {r.info.run_id for r in client.search_runs([iris])}
    (parent,) = [r for r in client.search_runs([iris]) if "mlflow.parentRunId" not in r.data.tags]
    png = local_artifact_root(parent.info.artifact_uri) / "confusion_matrix.png"
    png_mtime = png.stat().st_mtime_ns
    again = subprocess.run(
        [str(CLI), "run", "--dataset", "iris", "--select", "evaluation_plots"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"iris/v1\s+SUCCESS\s+http\S+/runs/" + parent.info.run_id, again.stdout)
    assert "diabetes" not in again.stdout
    assert {r.info.run_id for r in client.search_runs([iris])} == before
    assert png.stat().st_mtime_ns > png_mtime  # drawn again
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    wrong = subprocess.run(
        [str(CLI), "run", "--select", "plots"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert wrong.returncode == 2
    assert (
        "--select plots: no such asset; choose from cv_metrics, data_drift, data_hash, evaluation_plots"
        in wrong.stderr
    )
