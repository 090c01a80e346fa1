"""Making the embedded SQLite MLflow store safe for several runs at once.

Two things break when concurrent processes share one SQLite file through MLflow:
- a fresh store is created and migrated by whichever process comes first, and two doing it at
  once race (``table already exists``). A file lock serializes creation across processes.
- SQLAlchemy's pysqlite opens deferred transactions; a reader that later writes while another
  process writes fails at once with ``database is locked`` (SQLite does not wait when waiting
  could deadlock). Starting every transaction with ``BEGIN IMMEDIATE`` takes the write lock up
  front, and ``busy_timeout`` makes the others wait for it instead of failing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

BUSY_TIMEOUT_MS = 120_000
_hardened: set[int] = set()


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


def harden_engine(engine: Engine) -> None:
    """WAL, a long busy timeout and BEGIN IMMEDIATE on every connection of this engine."""
    if id(engine) in _hardened:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.close()

    engine.dispose()  # pooled connections made before the hooks are dropped
    _hardened.add(id(engine))


def open_sqlite_client(uri: str, db: Path) -> MlflowClient:
    """A client on a SQLite store, created/migrated under a cross-process lock, then hardened."""
    with file_lock(db.with_name(db.name + ".lock")):
        client = MlflowClient(tracking_uri=uri)
        store = client._tracking_client.store  # creates and migrates the tables
        with store.engine.connect() as conn:  # WAL is a property of the file: set it once, under the lock
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
        harden_engine(store.engine)
        registry = client._get_registry_client().store  # the Model Registry's engine on the same file
        harden_engine(registry.engine)
    return client
