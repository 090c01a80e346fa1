"""Opening the embedded SQLite MLflow store safely when several processes share it.

What this module does, and only this:
- **Creation under a lock.** A fresh store is created and migrated by whichever process opens
  it first; two doing so at once race (``table ... already exists``). The first calls that
  touch the tracking store and the Model Registry (each builds its SQLAlchemy engine and runs
  MLflow's migrations) happen under an exclusive ``flock`` on ``<db>.lock``, across processes.
- **WAL journal.** The file is switched to ``journal_mode=WAL`` once, under the same lock,
  with the standard library's ``sqlite3`` (WAL is a property of the file, not of a
  connection): readers then never block the one writer.
- **Waiting for the write lock** is MLflow's own: its SQLAlchemy store runs
  ``PRAGMA busy_timeout = 20000`` at the start of every session, so a writer waits up to 20 s
  for another's transaction instead of failing with ``database is locked``. We do not change
  MLflow's engines or transactions (no ``BEGIN IMMEDIATE``): there is no public hook for it,
  and 20 s is far above the longest write our runs make (measured by
  ``experiments_dagster_tests/tracking/test_sqlite_concurrency.py``: 4 processes on a fresh
  store, every write kept).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from mlflow import MlflowClient


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held across processes for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_sqlite_client(uri: str, db: Path) -> MlflowClient:
    """A client on a SQLite store, created and migrated under a cross-process lock, in WAL mode."""
    with file_lock(db.with_name(db.name + ".lock")):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates the tracking tables
        client.search_registered_models(max_results=1)  # the Model Registry's engine on the same file
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
    return client
