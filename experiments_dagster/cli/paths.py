"""``experiments-dagster paths [--tracking-uri]``: the resolved store locations (the Makefile's UI targets)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from experiments_dagster.core import paths


def add_parser(sub: Any) -> None:
    """Add ``paths [--tracking-uri]``."""
    p = sub.add_parser("paths", help="print the data directory, tracking URI and DAGSTER_HOME")
    p.add_argument("--tracking-uri", action="store_true", help="print only the tracking URI")
    p.set_defaults(func=cmd_paths)


def cmd_paths(args: argparse.Namespace) -> int:
    """Print the resolved store locations (used by the Makefile's UI targets)."""
    if args.tracking_uri:
        print(paths.default_tracking_uri())
        return 0
    print(f"data_dir={paths.data_dir()}")
    print(f"tracking_uri={paths.default_tracking_uri()}")
    print(f"dagster_home={os.environ.get('DAGSTER_HOME') or paths.default_dagster_home()}")
    return 0
