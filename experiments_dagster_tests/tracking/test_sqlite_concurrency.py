"""Several processes on one fresh embedded store: no migration race, no lock error, nothing lost."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow
PROCESSES = 4
STEPS = 25


def _hammer(uri: str, i: int) -> None:
    from experiments_dagster.tracking.store import Tracker

    tracker = Tracker(uri)
    run_id = tracker.start_run(tracker.experiment_id("race"), f"r{i}", {"worker": str(i)})
    for step in range(STEPS):
        tracker.log_metrics(run_id, {f"m{j}": step * j for j in range(10)}, step=step)
        tracker.set_tags(run_id, {"step": step})
    tracker.end_run(run_id)


def test_concurrent_processes_on_a_fresh_store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # not created beforehand
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_hammer, args=(uri, i)) for i in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "race"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["worker"] for r in runs) == [str(i) for i in range(PROCESSES)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "m7")
        assert sorted(m.value for m in history) == [7.0 * s for s in range(STEPS)]
