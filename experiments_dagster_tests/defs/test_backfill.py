"""A real backfill: the shipped dagster.yaml, the daemon, 6 versions, 3 runs at once, a fresh store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs import defs
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster_tests.backfill import launch_backfill

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
VERSIONS = [f"v{i}" for i in range(1, 7)]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


@pytest.fixture
def backfill_env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # this process opens the same instance as the daemon
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the shipped one
    data = tmp_path / "six"
    (data / "iris").mkdir(parents=True)
    shutil.copy(data_dir / "iris" / "experiment.yaml", data / "iris")
    frame = pd.read_csv(data_dir / "iris" / "v1.csv")
    for i, version in enumerate(VERSIONS):
        frame.sample(frac=0.9, random_state=i).to_csv(data / "iris" / f"{version}.csv", index=False)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EXPERIMENTS_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'fresh-store' / 'mlflow.db'}",
    }  # not created yet
    return env, home


def test_backfill_of_six_versions_three_at_a_time(backfill_env):
    env, home = backfill_env
    keys = [f"iris/{v}" for v in VERSIONS]
    with dg.DagsterInstance.from_ref(dg._core.instance.InstanceRef.from_dir(str(home))) as instance:
        instance.add_dynamic_partitions(DATASET_VERSIONS, keys)
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            launch_backfill(keys, env)
            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                records = instance.get_run_records(dg.RunsFilter(job_name="experiment_job"))
                if len(records) == 6 and all(r.dagster_run.is_finished for r in records):
                    break
                time.sleep(3)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        records = instance.get_run_records(dg.RunsFilter(job_name="experiment_job"))
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == keys
        failures = "\n".join(
            f"{r.dagster_run.tags['dagster/partition']}: {e.message} "
            f"{getattr(getattr(e.dagster_event.event_specific_data, 'error', None), 'message', '')}"
            for r in records
            if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
            for e in instance.all_logs(r.dagster_run.run_id)
            if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")
        )
        assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}, failures
        assert all("dagster/backfill" in r.dagster_run.tags for r in records)
        assert max_overlap([(r.start_time, r.end_time) for r in records]) >= 3
        evaluations = [
            e.dagster_event.event_specific_data
            for r in records
            for e in instance.all_logs(
                r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        checks_per_run = len(defs.resolve_asset_graph().asset_check_keys)
        assert len(evaluations) == 6 * checks_per_run and all(e.passed for e in evaluations)

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "iris"]  # no stray experiment
    (experiment,) = [e for e in client.search_experiments() if e.name == "iris"]
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(p.data.tags["dataset.version"] for p in parents) == VERSIONS  # one each, none duplicated
    assert {p.info.status for p in parents} == {"FINISHED"}
    assert len(runs) == 6 * (1 + 5)
    auditor = Auditor(client, load_models=False)
    assert all(auditor.audit(p.info.run_id).complete for p in parents)
    dagster_ids = {r.dagster_run.run_id for r in records}
    assert {p.data.tags["dagster.run_id"] for p in parents} == dagster_ids
