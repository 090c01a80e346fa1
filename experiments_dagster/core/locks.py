"""Named locks shared by every process of a deployment: PostgreSQL session advisory locks.

The Celery executor ignores Dagster's concurrency pools, so what must happen one at a time
across workers (deciding on the champion, handing out a search's last trials) takes a lock
here. With a PostgreSQL URL the lock is ``pg_try_advisory_lock`` on a connection of its own:
held until released, and released by the server when the holder's process dies (a SIGKILLed
worker never leaves it held). Without a URL (the embedded default, one machine) it is a
``threading.Lock`` of this process; across the embedded default's processes Dagster's
``model_registry`` pool (dagster.yaml) already keeps promotions apart.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from experiments_dagster.core.errors import ExperimentInputError

_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name`` (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LockTimeout(ExperimentInputError):
    """The lock stayed held by another process for longer than the timeout."""


class NamedLock:
    """``with NamedLock(url, "promotion:<model>"):`` -- or ``acquire()``/``release()`` when the
    critical section spans two callbacks. ``acquire`` returns the seconds it waited."""

    def __init__(self, url: str | None, name: str, timeout_s: float = 600.0, poll_s: float = 0.05):
        self.url, self.name, self.timeout_s, self.poll_s = url, name, timeout_s, poll_s
        self._conn: Any = None
        self._engine: Any = None
        self._local: threading.Lock | None = None
        self.held = False

    def acquire(self) -> float:
        started = time.monotonic()
        if self.url is None:
            with _LOCAL_GUARD:
                self._local = _LOCAL.setdefault(self.name, threading.Lock())
            if not self._local.acquire(timeout=self.timeout_s):
                raise LockTimeout(f"lock {self.name!r} stayed held for over {self.timeout_s:.0f} s")
            self.held = True
            return time.monotonic() - started
        import sqlalchemy as sa  # the embedded default never pays for it

        self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        self._conn = self._engine.connect()
        key = lock_key(self.name)
        try:
            while not self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                self._conn.rollback()  # no transaction left open while waiting
                if time.monotonic() - started > self.timeout_s:
                    raise LockTimeout(
                        f"lock {self.name!r} (PostgreSQL advisory lock {key}) stayed held by another "
                        f"process for over {self.timeout_s:.0f} s; see pg_locks for its holder"
                    )
                time.sleep(self.poll_s)
            self._conn.commit()  # session-level lock: it outlives the transaction
        except BaseException:
            self._close()
            raise
        self.held = True
        return time.monotonic() - started

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._local is not None:
            self._local.release()
            return
        import sqlalchemy as sa

        try:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.name)})
            self._conn.commit()
        finally:
            self._close()  # closing the session frees the lock even if the unlock failed

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> NamedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
