"""A real throwaway PostgreSQL for tests: only the local stack's ``postgres`` service
(``LocalStack.start_postgres``: ``initdb`` + ``postgres``, as the `postgres` user when run as root)
on a free 127.0.0.1 port under a temporary folder, stopped by PID and deleted afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.local import LocalStack, pg_program


@contextmanager
def throwaway_postgres() -> Iterator[LocalStack]:
    """A started PostgreSQL (databases of the stack, ``optuna`` among them); skips without initdb."""
    try:
        pg_program("initdb")
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not installed here: {exc}")
    # Under /tmp with mode 0711: as root, PostgreSQL runs as `postgres`, which must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="experiments-pg-", dir="/tmp"))
    root.chmod(0o711)
    stack = LocalStack(root / "stack", preferred_ports=False)
    try:
        stack.start_postgres()
        yield stack
    finally:
        stack.stop("postgres")
        shutil.rmtree(root, ignore_errors=True)
