"""Audit MLflow runs against the logging standard, including runs this project did not create.

``Auditor`` reads a run, picks the requirements that apply to it and runs each one's check;
what each kind of requirement checks is in ``audit_checks.py``, the findings and their report
in ``audit_findings.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments_dagster.tracking import tags
from experiments_dagster.tracking.artifact_files import local_artifact_root, png_problem
from experiments_dagster.tracking.audit_checks import RequirementChecks
from experiments_dagster.tracking.audit_findings import Finding, RunAudit, format_audit
from experiments_dagster.tracking.standard import TASKS, Kind, Requirement, requirements

# Part of this module's API (the CLI, the checks and the tests import them from here).
__all__ = [
    "Auditor",
    "Finding",
    "RunAudit",
    "format_audit",
    "infer_run_task",
    "local_artifact_root",
    "png_problem",
]


def infer_run_task(run: Run) -> str:
    """The run's task: its ``task`` param or tag, else guessed from the metrics it has."""
    task = run.data.params.get("task") or run.data.tags.get("task")
    if task in TASKS:
        return task
    metrics = run.data.metrics
    if "rmse" in metrics or "r2" in metrics:
        return "regression"
    if "roc_auc_ovr" in metrics or "f1_macro" in metrics:
        return "multiclass"
    return "binary"


class Auditor(RequirementChecks):
    """Reads runs through one client; downloads artifacts it must inspect to a temp folder."""

    def __init__(self, client: MlflowClient, load_models: bool = True) -> None:
        self.client = client
        self.load_models = load_models

    def audit(
        self,
        run_id: str,
        assets: set[str] | None = None,
        items: Sequence[Requirement] | None = None,
        task: str | None = None,
    ) -> RunAudit:
        """Audit one run against the standard (optionally only some assets' items, or only
        ``items``); ``task`` overrides the one read from the run."""
        run = self.client.get_run(run_id)
        task = task or infer_run_task(run)
        result = RunAudit(run_id, run.info.run_name or run_id, task)
        from_dagster = tags.DAGSTER_RUN_ID in run.data.tags
        chosen = requirements(task, assets) if items is None else [r for r in items if task in r.tasks]
        # MLflow resolves logged models inside artifact listings through the global URI.
        with tempfile.TemporaryDirectory() as tmp:
            self._tmp = Path(tmp)
            self._local_root = local_artifact_root(run.info.artifact_uri)
            self._artifacts = self._list_artifacts(run_id)
            for req in chosen:
                if req.dagster_only and not from_dagster:
                    result.findings.append(
                        Finding(req.kind, req.name, req.asset, "n/a", "run not logged by Dagster")
                    )
                    continue
                if req.when is not None and run.data.params.get(req.when) != "true":
                    result.findings.append(
                        Finding(req.kind, req.name, req.asset, "n/a", f"{req.when} not set")
                    )
                    continue
                result.findings.extend(self._check(run, req, task))
        return result

    def _check(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        """One requirement's findings; a record that breaks its check is a malformed finding, so
        one odd run cannot end the audit of the others."""
        try:
            return CHECKS[req.kind](self, run, req, task)
        except Exception as exc:  # params and artifacts are whatever the run's writer logged
            return [self._found(req, "malformed", f"cannot be checked: {type(exc).__name__}: {exc}"[:500])]

    def _list_artifacts(self, run_id: str, path: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for info in self.client.list_artifacts(run_id, path):
            if info.is_dir:
                out |= self._list_artifacts(run_id, info.path)
            else:
                out[info.path] = info.file_size or 0
        return out


# The check of each kind of requirement (a fixed table: the kinds are STANDARD's, never a record's).
CHECKS = {kind: getattr(Auditor, f"_check_{kind}") for kind in get_args(Kind)}
