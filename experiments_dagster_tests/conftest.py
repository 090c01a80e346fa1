"""Shared fixtures: tmp MLflow store, tmp data directory, tmp Dagster instance."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs.io_manager import ExperimentIOManager
from experiments_dagster.defs.resources import Coordination, ExperimentData, MlflowTracking
from experiments_dagster.tracking.store import Tracker

SHIPPED_DATA = PROJECT_ROOT / "data"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test touches the project's own stores; MLflow's global state is reset after each."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env-store' / 'mlflow.db'}")
    monkeypatch.setenv("EXPERIMENTS_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    store = tmp_path / "mlflow"
    store.mkdir()
    return f"sqlite:///{store / 'mlflow.db'}"


@pytest.fixture
def tracker(tracking_uri: str) -> Tracker:
    return Tracker(tracking_uri)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the shipped datasets (their data and experiment.yaml files only)."""
    target = tmp_path / "data"
    for folder in SHIPPED_DATA.iterdir():
        if folder.is_dir() and (folder / "experiment.yaml").exists():
            shutil.copytree(folder, target / folder.name)
    return target


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def resources(tracking_uri: str, data_dir: Path) -> dict[str, object]:
    return {
        "mlflow": MlflowTracking(tracking_uri=tracking_uri),
        "data": ExperimentData(data_dir=str(data_dir)),
        "io_manager": ExperimentIOManager(),
        "coordination": Coordination(),
    }
