"""EXPERIMENTS_SENSOR=off starts the retrain sensor stopped; by default it runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from experiments_dagster.core.paths import PROJECT_ROOT

PROBE = (
    "from experiments_dagster.defs.sensors import dataset_version_sensor as s; print(s.default_status.value)"
)


@pytest.mark.parametrize(("value", "status"), [(None, "RUNNING"), ("off", "STOPPED"), ("on", "RUNNING")])
def test_sensor_default_status_follows_the_environment(value: str | None, status: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EXPERIMENTS_SENSOR"}
    if value is not None:
        env["EXPERIMENTS_SENSOR"] = value
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == status
