"""``experiments-dagster audit``: runs of an experiment against the logging standard; and closing
the MLflow runs that dead or ended Dagster runs left RUNNING (before an audit or a run)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments_dagster.core import paths
from experiments_dagster.core.errors import UsageError
from experiments_dagster.tracking.server import answering_client


def sweep_dead_runs(tracking_uri: str) -> None:
    """Close runs of dead or ended Dagster runs of the local instance before auditing (no daemon needed)."""
    home = Path(os.environ.get("DAGSTER_HOME") or paths.default_dagster_home())
    if not (home / "dagster.yaml").is_file() and not (home / "history").is_dir():
        return  # no Dagster instance here to judge the runs against
    os.environ.setdefault("DAGSTER_HOME", str(home))
    from experiments_dagster.defs.attempts import open_instance
    from experiments_dagster.defs.outcomes import sweep
    from experiments_dagster.tracking.store import Tracker

    report_reconciled(sweep(Tracker(tracking_uri), open_instance(home)), "before the audit")


def report_reconciled(done: Sequence[Any], when: str) -> None:
    """Say which MLflow runs left RUNNING by dead or ended Dagster runs were just closed."""
    for r in done:
        print(
            f"experiments-dagster: closed MLflow run {r.mlflow_run_id} {when}: {r.status} ({r.reason}; "
            f"Dagster run {r.dagster_run_id})",
            file=sys.stderr,
        )


def add_parser(sub: Any) -> None:
    """Add ``audit --experiment E [--run-id R] [--json] [--tracking-uri URI]``."""
    p = sub.add_parser("audit", help="audit MLflow runs against the logging standard")
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--run-id", help="audit only this run (default: every top-level run)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or the embedded one)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit runs of an experiment against the logging standard: 0 complete, 1 incomplete, 2 error."""
    import json

    from experiments_dagster.tracking.audit import Auditor, format_audit

    client = answering_client(args.tracking_uri)
    sweep_dead_runs(client.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UsageError(f"No experiment named {args.experiment!r}; experiments here: {names}.")
    if args.run_id:
        try:
            run = client.get_run(args.run_id)
        except Exception as exc:  # MlflowException for unknown ids
            raise UsageError(f"No run {args.run_id!r} in this store: {exc}") from exc
        if run.info.experiment_id != experiment.experiment_id:
            raise UsageError(
                f"Run {args.run_id} belongs to experiment id {run.info.experiment_id}, "
                f"not {args.experiment!r}."
            )
        run_ids = [args.run_id]
    else:
        runs = client.search_runs([experiment.experiment_id], max_results=50_000)
        run_ids = [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]
    auditor = Auditor(client)
    audits = [auditor.audit(run_id) for run_id in run_ids]
    if args.json:
        print(
            json.dumps(
                {
                    "experiment": args.experiment,
                    "complete": all(a.complete for a in audits),
                    "runs": [a.to_dict() for a in audits],
                },
                indent=2,
            )
        )
    else:
        for audit in audits:
            print(format_audit(audit), end="\n\n")
        print(f"{sum(a.complete for a in audits)}/{len(audits)} runs of {args.experiment!r} are complete.")
    return 0 if audits and all(a.complete for a in audits) else 1
