"""The one-line row of a dataset version that failed outside its steps, in `experiments-dagster run`.

Such a failure (the Dagster instance cannot be written, an error before the run starts) ends
that version's attempt only: the other versions of the same `run` still train.
"""

from __future__ import annotations

import sys
from pathlib import Path


def version_failure(exc: BaseException, doing: str) -> str:
    """The row of a version that failed outside its steps (its traceback goes to stderr): the
    other versions of the same `run` still train."""
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
    return f"{type(exc).__name__} while {doing}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def storage_failure(exc: BaseException, home: Path) -> str | None:
    """One line naming the DAGSTER_HOME folder that could not be written, for errors of the
    Dagster instance itself (None for any other error)."""
    import errno
    import sqlite3

    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < 20:  # the whole chain of causes
        seen.append(e)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return (
                f"disk full writing {e.filename or home} (DAGSTER_HOME {home}): free space there "
                "or move DAGSTER_HOME."
            )
        if isinstance(e, sqlite3.OperationalError):
            return (
                f"the Dagster instance in DAGSTER_HOME {home} could not be written (SQLite: {e}); "
                "check free space on that disk or set DAGSTER_HOME to another one."
            )
        e = e.__cause__ or e.__context__
    return None
