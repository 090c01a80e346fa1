"""MlflowTracking opens its store in the background at set-up; errors surface in the step."""

from pathlib import Path

import dagster as dg
import pytest

from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import store


def _opening_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "mlflow-store-open"]


def test_setup_opens_an_existing_store_in_the_background_and_the_tracker_shares_it(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    store.Tracker(uri)  # the store exists (created by an earlier run)
    store._open_client.cache_clear()  # ... but this process has not opened it yet
    resource = MlflowTracking(tracking_uri=uri)
    with dg.build_resources({"mlflow": resource}) as resources:  # runs setup_for_execution
        threads = _opening_threads()
        assert len(threads) == 1
        threads[0].join()
        assert store._open_client.cache_info().currsize == 1  # opened by the prefetch
        opened = store._open_client.cache_info().currsize
        tracker = resources.mlflow.tracker()
        assert store._open_client.cache_info().currsize == opened  # not opened a second time
        assert tracker.client is store._client(uri)
        assert tracker.client.search_experiments()[0].name == "Default"


def test_a_new_store_is_not_created_at_setup(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    with dg.build_resources({"mlflow": MlflowTracking(tracking_uri=uri)}) as resources:
        assert _opening_threads() == []
        assert not (tmp_path / "new").exists()
        assert resources.mlflow.tracker().client.search_experiments()  # the step creates it
    assert (tmp_path / "new" / "mlflow.db").is_file()


def test_a_store_that_cannot_open_fails_in_the_step_not_in_setup(tmp_path: Path):
    db = tmp_path / "broken" / "mlflow.db"
    db.parent.mkdir()
    db.write_text("not a SQLite database")
    uri = f"sqlite:///{db}"
    with dg.build_resources({"mlflow": MlflowTracking(tracking_uri=uri)}) as resources:
        for thread in _opening_threads():
            thread.join()  # failed quietly in the background
        with pytest.raises(Exception, match="file is not a database"):
            resources.mlflow.tracker()
