"""MlflowTracking opens its store in the background at set-up; errors surface in the step."""

from pathlib import Path

import dagster as dg
import pytest

from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import store


def _opening_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "mlflow-store-open"]


def test_setup_opens_the_store_in_the_background_and_the_tracker_shares_it(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    resource = MlflowTracking(tracking_uri=uri)
    with dg.build_resources({"mlflow": resource}) as resources:  # runs setup_for_execution
        for thread in _opening_threads():
            thread.join()
        assert (tmp_path / "store" / "mlflow.db").is_file()  # created and migrated by the prefetch
        opened = store._open_client.cache_info().currsize
        tracker = resources.mlflow.tracker()
        assert store._open_client.cache_info().currsize == opened  # not opened a second time
        assert tracker.client is store._client(uri)
        assert tracker.client.search_experiments()[0].name == "Default"


def test_a_store_that_cannot_open_fails_in_the_step_not_in_setup(tmp_path: Path):
    (tmp_path / "not-a-dir").write_text("a file where the store's folder should be")
    uri = f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}"
    with dg.build_resources({"mlflow": MlflowTracking(tracking_uri=uri)}) as resources:
        for thread in _opening_threads():
            thread.join()
        with pytest.raises(OSError):
            resources.mlflow.tracker()
