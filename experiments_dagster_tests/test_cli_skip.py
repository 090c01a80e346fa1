"""`experiments-dagster run` skips up-to-date versions, retrains changed ones, and `--force` retrains all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")
DATASETS = ("iris", "diabetes")


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(CLI), "run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def parents(client: MlflowClient, dataset: str) -> list:
    experiment = client.get_experiment_by_name(dataset)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def registry_versions(client: MlflowClient, dataset: str) -> set[str]:
    return {str(v.version) for v in client.search_model_versions(f"name = '{dataset}_model'")}


def test_second_run_trains_nothing_then_changes_and_force_retrain(tmp_path: Path, data_dir: Path):
    data = tmp_path / "skip-data"
    for name in DATASETS:
        shutil.copytree(data_dir / name, data / name)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"EXPERIMENTS_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / '.mlflow' / 'mlflow.db'}")

    run_cli(env, tmp_path)
    first = {d: {r.info.run_id for r in parents(client, d)} for d in DATASETS}
    registered = {d: registry_versions(client, d) for d in DATASETS}
    assert {d: len(ids) for d, ids in first.items()} == {"iris": 1, "diabetes": 1}
    assert registered == {"iris": {"1"}, "diabetes": {"1"}}

    again = run_cli(env, tmp_path)
    for d in DATASETS:
        (run_id,) = first[d]
        assert re.search(rf"{d}/v1\s+up to date\s+http\S+/runs/{run_id}", again.stdout), again.stdout
        assert {r.info.run_id for r in parents(client, d)} == first[d]  # no new parent run
        assert registry_versions(client, d) == registered[d]  # no new registry version

    spec = data / "iris" / "experiment.yaml"
    spec.write_text(spec.read_text().replace("n_estimators: 60", "n_estimators: 61"))
    changed = run_cli(env, tmp_path)
    assert re.search(r"iris/v1\s+SUCCESS", changed.stdout) and re.search(
        r"diabetes/v1\s+up to date", changed.stdout
    )
    iris = parents(client, "iris")
    assert len(iris) == 2 and {r.info.run_id for r in parents(client, "diabetes")} == first["diabetes"]
    newest = max(iris, key=lambda r: r.info.start_time)
    assert newest.info.run_name == "iris@v1 #2" and newest.data.params["n_estimators"] == "61"
    assert (
        newest.data.tags["config.hash"] != next(r for r in iris if r is not newest).data.tags["config.hash"]
    )
    assert registry_versions(client, "iris") == {"1", "2"} and registry_versions(client, "diabetes") == {"1"}

    forced = run_cli(env, tmp_path, "--force")
    assert re.search(r"iris/v1\s+SUCCESS", forced.stdout) and re.search(
        r"diabetes/v1\s+SUCCESS", forced.stdout
    )
    assert "up to date" not in forced.stdout
    assert len(parents(client, "iris")) == 3 and len(parents(client, "diabetes")) == 2
    assert {r.info.run_name for r in parents(client, "diabetes")} == {"diabetes@v1 #1", "diabetes@v1 #2"}
    assert registry_versions(client, "iris") == {"1", "2", "3"}
    assert registry_versions(client, "diabetes") == {"1", "2"}
