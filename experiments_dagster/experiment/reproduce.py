"""Reproducing a run: check its manifest against now, rerun it, compare params and metrics.

The same ``reproduce`` function serves the command (which reruns in a subprocess, from a
temporary ``git worktree`` with ``--at-commit``) and Dagster's ``reproduce_job`` (which reruns
the experiment job in process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments_dagster.core import paths, settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.experiment import reproduce_checks as reproduction
from experiments_dagster.experiment.reproduce_checks import Finding, Row
from experiments_dagster.tracking import reproduce as reproduction_log
from experiments_dagster.tracking.environment import installed_requirements

# rerun(partition_key, original_run_id): train the original's logged config into a new parent
# run tagged reproduction.of; True when it succeeded.
Rerun = Callable[[str, str], bool]
FAILED = "rerun failed"
BLOCKED = "blocked"


@dataclass
class Report:
    """What one reproduction found and did."""

    original_run_id: str
    partition_key: str = ""
    findings: list[Finding] = field(default_factory=list)
    blocked: bool = False
    rerun_id: str | None = None
    rows: list[Row] = field(default_factory=list)
    verdict: str = BLOCKED
    reproduced_at: str | None = None

    @property
    def exit_code(self) -> int:
        """0 everything matches, 1 a param or metric differs (or the rerun failed), 2 blocked."""
        if self.blocked:
            return 2
        return 1 if self.verdict in (reproduction.DIFFERENT, FAILED) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_run_id": self.original_run_id,
            "partition_key": self.partition_key,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "reproduction_run_id": self.rerun_id,
            "reproduced_at": self.reproduced_at,
            "warnings": [f.to_dict() for f in self.findings if not f.blocking],
            "blocking": [f.to_dict() for f in self.findings if f.blocking],
            "rows": [r.to_dict() for r in self.rows],
        }


def current_config(dataset: str, data_dir: Path) -> dict[str, Any] | None:
    """The dataset's experiment.yaml resolved now (None if it no longer resolves)."""
    from experiments_dagster.core.catalog import dataset_dir
    from experiments_dagster.core.spec import resolve_spec

    try:
        return resolve_spec(dataset, dataset_dir(data_dir, dataset), {}).model_dump(mode="json")
    except ExperimentInputError:
        return None


def checks(
    client: MlflowClient,
    run_id: str,
    manifest: dict[str, Any],
    *,
    repo: Path,
    data_dir: Path,
    strict: bool,
    at_commit: bool,
) -> list[Finding]:
    """Every check of the manifest against the data, the repository and the installed packages now."""
    dataset = manifest["dataset"]["dataset"]
    # The manifest's package set; runs logged before it had one keep it in requirements.txt.
    packages = manifest.get("packages")
    logged = (
        "\n".join(packages)
        if packages is not None
        else reproduction_log.read_artifact_text(client, run_id, reproduction_log.REQUIREMENTS)
    )
    return [
        *reproduction.check_data(manifest, data_dir),
        *reproduction.check_commit(manifest, repo, at_commit),
        *reproduction.check_packages(logged, installed_requirements(), strict),
        *reproduction.check_config(
            manifest["spec"], current_config(dataset, data_dir), data_dir / dataset / "experiment.yaml"
        ),
    ]


def reproduce(
    client: MlflowClient,
    run_id: str,
    rerun: Rerun,
    *,
    repo: Path,
    data_dir: Path,
    strict: bool,
    at_commit: bool,
    original: Run | None = None,
    manifest: dict[str, Any] | None = None,
) -> Report:
    """Check, rerun and compare; tag the original run with the time and verdict of the rerun.

    ``original`` and ``manifest``: the run and its verified manifest (``verified_manifest``), if
    the caller has read them already."""
    original = original or client.get_run(run_id)
    # Only the manifest's fields that agree with the run's own params and tags (else refused).
    manifest = manifest or reproduction_log.verified_manifest(client, original)
    report = Report(run_id, f"{manifest['dataset']['dataset']}/{manifest['dataset']['version']}")
    report.findings = checks(
        client, run_id, manifest, repo=repo, data_dir=data_dir, strict=strict, at_commit=at_commit
    )
    report.blocked = any(f.blocking for f in report.findings)
    if report.blocked:
        return report
    earlier = reproduction_log.find_rerun(client, original.info.experiment_id, run_id)
    ok = rerun(report.partition_key, run_id)
    again = reproduction_log.find_rerun(client, original.info.experiment_id, run_id)
    if again is not None and earlier is not None and again.info.run_id == earlier.info.run_id:
        again = None  # the rerun made no parent run: this one is an earlier reproduction's
    if not ok or again is None or again.info.status != "FINISHED":
        report.verdict = FAILED
        report.rerun_id = again.info.run_id if again is not None else None
        report.reproduced_at = reproduction_log.record_verdict(
            client, run_id, report.rerun_id or "none", FAILED
        )
        return report
    report.rerun_id = again.info.run_id
    report.rows = reproduction.compare(
        (original.data.params, again.data.params), (original.data.metrics, again.data.metrics)
    )
    report.verdict = reproduction.verdict(report.rows)
    report.reproduced_at = reproduction_log.record_verdict(client, run_id, again.info.run_id, report.verdict)
    return report


@contextmanager
def commit_worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A temporary, detached ``git worktree`` of ``repo`` at ``commit``; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        where = Path(tmp) / "code"
        added = reproduction.git(repo, "worktree", "add", "--detach", str(where), commit)
        if added.returncode != 0:
            raise ExperimentInputError(
                f"git worktree add of {commit} in {repo} failed: {added.stderr.strip()}"
            )
        try:
            yield where
        finally:
            reproduction.git(repo, "worktree", "remove", "--force", str(where))


def subprocess_rerun(tracking_uri: str, code_dir: Path | None) -> Rerun:
    """Rerun with ``experiments-dagster run --reproduction-of`` in a child process whose stdout goes
    to stderr (``--json`` keeps stdout for itself); ``code_dir`` puts another checkout's package first."""

    def rerun(partition_key: str, original_run_id: str) -> bool:
        dataset, version = partition_key.split("/", 1)
        # Explicit, so code from a temporary worktree uses this checkout's stores and data.
        env = settings.child_environment(
            {
                settings.DATA_DIR_ENV: str(paths.data_dir()),
                settings.TRACKING_URI_ENV: tracking_uri,
                settings.DAGSTER_HOME_ENV: str(paths.default_dagster_home()),
            }
        )
        if code_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), env.get("PYTHONPATH")]))
        argv = ["run", "--dataset", dataset, "--version", version, "--reproduction-of", original_run_id]
        done = subprocess.run(
            [sys.executable, "-m", "experiments_dagster.cli.main", *argv],
            env=env,
            cwd=code_dir,
            stdout=sys.stderr,
            check=False,
        )
        return done.returncode == 0

    return rerun


def format_report(report: Report) -> str:
    """The comparison table and the verdict, for people."""
    if report.blocked:
        return f"Run {report.original_run_id} was not reproduced: a check above stops it ({BLOCKED})."
    lines = [reproduction.format_table(report.rows)] if report.rows else []
    skipped = sum(r.result in (reproduction.TIMING, reproduction.PROMOTION) for r in report.rows)
    lines.append(
        f"\nReproduction of {report.original_run_id} ({report.partition_key}): {report.verdict}; "
        f"rerun {report.rerun_id or '(none)'}; {len(report.rows) - skipped} params and metrics compared"
        f"{f', {skipped} timing or promotion metrics listed only' if skipped else ''}."
    )
    return "\n".join(lines)
