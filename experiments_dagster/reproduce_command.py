"""The ``reproduce`` subcommand's arguments; its work is in ``reproducing`` (imported when it runs)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Reproduce one run: 0 all match, 1 a metric differs, 2 bad arguments or a blocking check."""
    from experiments_dagster.reproducing import run_command

    return run_command(args)


def add_parser(sub: Any) -> None:
    """Add ``reproduce RUN_ID [--strict] [--at-commit] [--json] [--tracking-uri] [--repo]``."""
    p = sub.add_parser("reproduce", help="rerun an experiment run from its manifest and compare")
    p.add_argument("run_id", metavar="RUN_ID", help="the MLflow parent run to reproduce")
    p.add_argument("--strict", action="store_true", help="a package version difference stops it (exit 2)")
    p.add_argument(
        "--at-commit",
        action="store_true",
        help="run the code of the run's git commit, from a temporary git worktree",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or the embedded one)")
    p.add_argument("--repo", help="git repository of the code (default: this project's)")
    p.set_defaults(func=cmd_reproduce)
