"""Launching a backfill of ``experiment_job`` the way a user does: Dagster's CLI against the workspace."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from experiments_dagster.core.paths import PROJECT_ROOT

BIN = Path(sys.executable).parent


def launch_backfill(keys: Sequence[str], env: Mapping[str, str]) -> None:
    """``dagster job backfill`` of ``experiment_job`` over ``keys``; the daemon of ``env``'s instance runs it."""
    subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "experiment_job",
            "--partitions",
            ",".join(keys),
            "--noprompt",
        ],
        cwd=PROJECT_ROOT,
        env=dict(env),
        check=True,
        capture_output=True,
        timeout=300,
    )
