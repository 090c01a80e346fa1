"""``experiments-dagster reproduce``: its arguments, the rerun in a subprocess, the printed report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experiments_dagster.core import paths
from experiments_dagster.core.errors import UsageError
from experiments_dagster.experiment import reproduce_checks as reproduction
from experiments_dagster.experiment.reproduce import (
    Report,
    commit_worktree,
    format_report,
    reproduce,
    subprocess_rerun,
)
from experiments_dagster.tracking import reproduce as reproduction_log
from experiments_dagster.tracking.server import answering_client


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Reproduce one run: 0 all match, 1 a metric differs, 2 bad arguments or a blocking check."""
    client = answering_client(args.tracking_uri)
    try:
        original = client.get_run(args.run_id)
    except Exception as exc:  # MlflowException for unknown ids
        raise UsageError(f"No run {args.run_id!r} in {client.tracking_uri}: {exc}") from exc
    repo = Path(args.repo).resolve() if args.repo else paths.PROJECT_ROOT
    manifest = reproduction_log.verified_manifest(client, original)
    commit = manifest["code"]["git.commit"]  # a full hex SHA: verified_manifest refuses anything else

    def run(code_dir: Path | None) -> Report:
        rerun = subprocess_rerun(client.tracking_uri, code_dir)
        return reproduce(
            client,
            args.run_id,
            rerun,
            repo=repo,
            data_dir=paths.data_dir(),
            strict=args.strict,
            at_commit=args.at_commit,
            original=original,
            manifest=manifest,
        )

    missing = any(f.blocking for f in reproduction.check_commit(manifest, repo, True))
    if args.at_commit and not missing:
        with commit_worktree(repo, commit) as code_dir:
            report = run(code_dir)
    else:
        report = run(None)  # a missing commit blocks in the checks, before any rerun
    for finding in report.findings:
        level = "error" if finding.blocking else "warning"
        print(f"experiments-dagster reproduce: {level}: {finding.message}", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return report.exit_code


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
