"""The row of a version that failed outside its steps: one line, naming DAGSTER_HOME when it is full."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from experiments_dagster.cli.version_failures import storage_failure, version_failure


def chained(inner: BaseException) -> Exception:
    """``inner`` two wrappers deep, as Dagster's instance raises it."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("event log write failed") from exc
    except RuntimeError as exc:
        try:
            raise ValueError("run storage error") from exc
        except ValueError as outer:
            return outer


def test_a_full_dagster_home_names_the_folder_through_the_whole_chain(tmp_path: Path):
    home = tmp_path / "home"
    full = chained(OSError(errno.ENOSPC, "No space left on device", str(home / "history" / "runs.db")))
    assert storage_failure(full, home) == (
        f"disk full writing {home / 'history' / 'runs.db'} (DAGSTER_HOME {home}): free space there or "
        "move DAGSTER_HOME."
    )
    locked = chained(sqlite3.OperationalError("database or disk is full"))
    assert storage_failure(locked, home) == (
        f"the Dagster instance in DAGSTER_HOME {home} could not be written (SQLite: database or disk is "
        "full); check free space on that disk or set DAGSTER_HOME to another one."
    )
    assert storage_failure(chained(KeyError("x")), home) is None


def test_any_other_failure_is_one_line_and_its_traceback_goes_to_stderr(capsys):
    row = version_failure(RecursionError("maximum recursion depth exceeded\nmore"), "running it")
    assert row == "RecursionError while running it: maximum recursion depth exceeded"
    assert "RecursionError: maximum recursion depth exceeded" in capsys.readouterr().err
