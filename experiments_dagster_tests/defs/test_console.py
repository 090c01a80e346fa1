"""What a run prints on the console: step starts/ends and check results by default, everything at DEBUG,
and no warning on every run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments_dagster.core.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

# experiment_job with the run config the sensor and the CLI give it, for data and hash only.
SCRIPT = """
import sys
import dagster as dg
from experiments_dagster.defs import defs
from experiments_dagster.defs.console import CONSOLE_RUN_CONFIG

job = defs.resolve_job_def("experiment_job")
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("dataset_versions", ["iris/v1"])
result = job.execute_in_process(
    instance=instance,
    partition_key="iris/v1",
    asset_selection=[dg.AssetKey("raw_data"), dg.AssetKey("data_hash")],
    run_config={**CONSOLE_RUN_CONFIG, "resources": {"data": {"config": {"data_dir": sys.argv[1]}}}},
)
assert result.success
"""


def run_two_steps(data_dir: Path, tmp_path: Path, **env: str) -> str:
    """stderr of a run of raw_data and data_hash in a fresh interpreter (Python's default warning filters)."""
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", **env}
    if "EXPERIMENTS_LOG_LEVEL" not in env:
        environment.pop("EXPERIMENTS_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data_dir)],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_default_console_shows_steps_not_debug_events_and_no_warning(data_dir: Path, tmp_path: Path) -> None:
    out = run_two_steps(data_dir, tmp_path)
    assert out.count("STEP_START") == 2 and out.count("STEP_SUCCESS") == 2, out
    assert "ASSET_MATERIALIZATION" in out
    for noise in ("LOADED_INPUT", "HANDLED_OUTPUT", "STEP_OUTPUT", "ASSET_MATERIALIZATION_PLANNED"):
        assert noise not in out, noise
    assert "Warning" not in out, out


def test_debug_level_is_one_setting_away(data_dir: Path, tmp_path: Path) -> None:
    out = run_two_steps(data_dir, tmp_path, EXPERIMENTS_LOG_LEVEL="DEBUG")
    assert "HANDLED_OUTPUT" in out and "STEP_OUTPUT" in out and out.count("STEP_START") == 2
