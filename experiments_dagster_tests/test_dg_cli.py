"""Dagster's `dg` CLI finds the code location through [tool.dg] in pyproject.toml."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs.definitions import defs

pytestmark = pytest.mark.slow

DG = PROJECT_ROOT / ".venv" / "bin" / "dg"


def run_dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``dg <args>`` in the project, on a tmp DAGSTER_HOME."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    return subprocess.run(
        [str(DG), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_dg_check_defs_loads_the_location(tmp_path: Path) -> None:
    done = run_dg(tmp_path, "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_list_defs_lists_what_definitions_holds(tmp_path: Path) -> None:
    done = run_dg(tmp_path, "list", "defs", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    repo = defs.get_repository_def()
    assert {a["asset_key"] for a in listed["assets"]} == {
        k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()
    }
    assert {j["name"] for j in listed["jobs"]} == {
        "experiment_job",
        "failed_run_cleanup_job",
        "reproduce_job",
    }
    assert {s["name"] for s in listed["sensors"]} == {
        "dataset_version_sensor",
        "mlflow_run_reconciler",
        "mlflow_parent_outcome",
    }
    assert "final_model_logged_completely" in {c["name"] for c in listed["asset_checks"]}
