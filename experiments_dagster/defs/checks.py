"""Asset checks: each logging asset's share of the standard, and the whole experiment."""

import warnings
from typing import Any

import dagster as dg

from experiments_dagster.defs.metadata import LOGGING_ORDER
from experiments_dagster.defs.partitions import dataset_versions
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.audit import Auditor, RunAudit
from experiments_dagster.tracking.store import Tracker

# asset -> the standard's items it is checked for (None: the whole experiment, on its last asset).
CHECKED_ASSETS: dict[str, set[str] | None] = {
    **{asset: {asset} for asset in LOGGING_ORDER[:-1]},
    LOGGING_ORDER[-1]: None,
}


class IncompleteLogError(Exception):
    """Raised into the MLflow run's error tags when a check finds the log incomplete."""


def mlflow_run_id(value: Any) -> str:
    """The MLflow run an asset value was logged to (``value.run``; the manifest names it inside)."""
    if isinstance(value, dict):
        return value["mlflow"]["run_id"]
    return value.run.run_id


def _problems_markdown(audit: RunAudit) -> dg.MetadataValue:
    rows = "\n".join(f"| {f.kind} | {f.name} | {f.status} | {f.detail} |" for f in audit.problems)
    return dg.MetadataValue.md(f"| kind | item | status | detail |\n|---|---|---|---|\n{rows}")


def audit_result(tracker: Tracker, run_id: str, asset: str, check: str) -> dg.AssetCheckResult:
    """Audit the asset's MLflow run; on failure mark the run FAILED with what is missing."""
    scope = CHECKED_ASSETS[asset]
    audit = Auditor(tracker.client, load_models=scope is None or "final_model" in scope).audit(run_id, scope)
    metadata = {
        "mlflow_run_id": run_id,
        "items_checked": len(audit.findings),
        "problems": len(audit.problems),
        "missing_or_malformed": dg.MetadataValue.json(
            [f"{f.kind} {f.name}: {f.status} {f.detail}".strip() for f in audit.problems]
        ),
    }
    if audit.problems:
        metadata["detail"] = _problems_markdown(audit)
    if scope is None:
        tracker.set_tags(
            run_id,
            {
                tags.AUDIT_STATUS: "complete" if audit.complete else "incomplete",
                tags.AUDIT_PROBLEMS: len(audit.problems),
            },
        )
    if not audit.complete:
        summary = "; ".join(f"{f.kind} {f.name} {f.status}" for f in audit.problems[:20])
        tracker.mark_failed(run_id, check, IncompleteLogError(summary))
    return dg.AssetCheckResult(passed=audit.complete, metadata=metadata)


def _build_check(asset: str) -> dg.AssetChecksDefinition:
    name = "experiment_logged_completely" if CHECKED_ASSETS[asset] is None else f"{asset}_logged_completely"
    what = (
        "the whole parent run against the logging standard"
        if CHECKED_ASSETS[asset] is None
        else (f"what `{asset}` must log, per the logging standard")
    )

    @dg.asset_check(
        asset=asset,
        name=name,
        blocking=True,
        partitions_def=dataset_versions,
        description=f"Audits {what}; lists each missing or malformed item and marks the run FAILED.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, mlflow: MlflowTracking, value: Any
    ) -> dg.AssetCheckResult:
        # ``value`` is the checked materialization's own output (the one parameter that is
        # neither a resource nor the context is the asset's value): its run, never "the latest".
        result = audit_result(mlflow.tracker(), mlflow_run_id(value), asset, name)
        # At INFO, so the console of a UI-launched run (dagster.yaml's level) shows it too.
        context.log.info(f"Check {name}: {'passed' if result.passed else 'FAILED'}")
        return result

    return _check


with warnings.catch_warnings():
    # Partitioned asset checks are "preview" in Dagster 1.13; they are what lets each
    # dataset version's checks show on its own partition.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    LOGGING_CHECKS = [_build_check(asset) for asset in CHECKED_ASSETS]
