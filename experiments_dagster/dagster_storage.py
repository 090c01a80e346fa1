"""Dagster's SQLite event log storage, keeping one engine per database file open in a process.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine, connects, and throws both
away for every statement it runs (``create_engine(..., poolclass=NullPool)`` in ``_connect``).
A run of this code location stores ~150 events and asks ~150 times whether its dynamic
partition exists; at 4-10 ms apiece that was 2.1 s of a 14 s run on the small workload, most of
it engine construction and SQL compilation that a kept engine caches.

``PooledSqliteEventLogStorage`` is the same storage (same files, schema, WAL journal, busy
timeout, migrations, watchers, ``wipe``) with ``_connect`` drawing from a per-file engine kept
for the life of the storage. What stays true:

- **Cross-process safety is SQLite's, as before.** An idle pooled connection holds no lock;
  every statement still runs in its own transaction under the storage's thread lock, committed
  before the call returns.
- **Bounded.** The index database's engine and those of the ``MAX_RUN_ENGINES`` most recently
  used run databases are kept (a webserver reads many runs); older ones are disposed.
- **Fork-safe.** A forked child drops (without closing) the engines it inherited and opens its own.
- **wipe / dispose** close every kept connection first, so no connection outlives its file.

It also creates a new run's database without loading Dagster's ~90 alembic revision files twice
(the stock ``_initdb`` builds a fresh ``ScriptDirectory`` for its check and again for its stamp:
~0.3 s per run): the revision map is loaded once per process, and the new file gets the same
tables, WAL journal and ``alembic_version`` head as the stock code writes, with the same retries
when another process initializes the same file at once. A file that already carries a revision
is left alone, as the stock code does.

Selected in ``dagster_home/dagster.yaml`` (``event_log_storage``); with no ``base_dir`` it uses
the directory the default SQLite storage uses, ``$DAGSTER_HOME/history/runs``, so an existing
``DAGSTER_HOME`` keeps its history.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as db
import sqlalchemy.exc as db_exc
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster import Field, StringSource
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import _alembic_lock, get_alembic_config, safe_commit
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

MAX_RUN_ENGINES = 8
INIT_RETRIES = 10
_CONCURRENT_INIT = re.compile(
    r"table [A-Za-z_]* already exists|database is locked|UNIQUE constraint failed: alembic_version.version_num"
)
_live: weakref.WeakSet[PooledSqliteEventLogStorage] = weakref.WeakSet()


def default_base_dir() -> str:
    """Where Dagster's default SQLite storage keeps its event logs: ``$DAGSTER_HOME/history/runs``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError(
            "PooledSqliteEventLogStorage needs a base_dir: set DAGSTER_HOME or give "
            "event_log_storage.config.base_dir in dagster.yaml."
        )
    return os.path.join(home, "history", "runs", "")


@lru_cache(maxsize=1)
def event_log_migrations() -> ScriptDirectory:
    """Dagster's alembic scripts for the SQLite event log (the ones the stock ``_initdb`` uses)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that keeps an engine (one pooled connection) per database file."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir or default_base_dir(), inst_data)
        _live.add(self)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            self._engines[shard] = engine
            runs = [key for key in self._engines if key != INDEX_SHARD_NAME]
            for key in runs[: max(0, len(runs) - MAX_RUN_ENGINES)]:
                self._engines.pop(key).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:  # type: ignore[override]
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        if for_index_shard:  # creating the index database: once per DAGSTER_HOME, the stock way
            super()._initdb(engine, for_index_shard=True)
            return
        script = event_log_migrations()
        for retries_left in range(INIT_RETRIES, -1, -1):
            try:
                with engine.connect() as connection:
                    if MigrationContext.configure(connection).get_current_revision():
                        return  # initialized (by any process, either class): nothing to do
                    SqlEventLogStorageMetadata.create_all(engine)
                    connection.execute(db.text("PRAGMA journal_mode=WAL;"))
                    with _alembic_lock:
                        MigrationContext.configure(connection).stamp(script, "head")
                    safe_commit(connection)
                return
            except (db_exc.DatabaseError, sqlite3.DatabaseError, sqlite3.OperationalError) as exc:
                # Another process (webserver, daemon, run worker) initializing the same file.
                if not _CONCURRENT_INIT.search(str(exc)) or retries_left == 0:
                    raise
                logging.getLogger(__name__).info(
                    "concurrent init of %s, retrying (%d left): %s", engine.url, retries_left, exc
                )
                time.sleep(0.2)

    def has_table(self, table_name: str) -> bool:
        # Asked before every dynamic-partition query; the stock method builds an engine for it.
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def close_engines(self, close: bool = True) -> None:
        """Dispose every kept engine (``close=False``: forget them without touching the sockets)."""
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose(close=close)

    def wipe(self) -> None:
        self.close_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self.close_engines()


def _forget_inherited_engines() -> None:
    for storage in list(_live):
        storage._engines_lock = threading.Lock()
        storage.close_engines(close=False)


os.register_at_fork(after_in_child=_forget_inherited_engines)
