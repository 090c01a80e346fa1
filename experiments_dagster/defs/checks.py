"""Asset checks: each logging asset's share of the standard, and the whole experiment."""

import warnings

import dagster as dg

from experiments_dagster.defs.partitions import dataset_versions
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking.audit import Auditor, RunAudit
from experiments_dagster.tracking.store import Tracker

# asset -> the standard's items it is checked for (None: the whole experiment).
CHECKED_ASSETS: dict[str, set[str] | None] = {
    "splits": {"splits"},
    "search_trials": {"search_trials"},
    "fold_models": {"fold_models"},
    "cv_metrics": {"cv_metrics"},
    "final_model": {"final_model"},
    "evaluation_plots": {"evaluation_plots"},
    "repro_manifest": None,
}


class IncompleteLogError(Exception):
    """Raised into the MLflow run's error tags when a check finds the log incomplete."""


def latest_mlflow_run_id(instance: dg.DagsterInstance, asset: str, partition: str) -> str | None:
    """The MLflow run id in the metadata of the asset's latest materialization of a partition."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    meta = records[0].asset_materialization.metadata if records[0].asset_materialization else {}
    value = meta.get("mlflow_run_id")
    return value.value if value is not None else None


def _problems_markdown(audit: RunAudit) -> dg.MetadataValue:
    rows = "\n".join(f"| {f.kind} | {f.name} | {f.status} | {f.detail} |" for f in audit.problems)
    return dg.MetadataValue.md(f"| kind | item | status | detail |\n|---|---|---|---|\n{rows}")


def audit_result(
    instance: dg.DagsterInstance, partition_key: str, tracker: Tracker, asset: str, check: str
) -> dg.AssetCheckResult:
    """Audit the asset's MLflow run; on failure mark the run FAILED with what is missing."""
    run_id = latest_mlflow_run_id(instance, asset, partition_key)
    if run_id is None:
        return dg.AssetCheckResult(
            passed=False, metadata={"problem": f"no materialization of {asset} with an mlflow_run_id"}
        )
    scope = CHECKED_ASSETS[asset]
    audit = Auditor(tracker.client, load_models=scope is None or "final_model" in scope).audit(run_id, scope)
    metadata = {
        "mlflow_run_id": run_id,
        "items_checked": len(audit.findings),
        "problems": len(audit.problems),
        "missing_or_malformed": dg.MetadataValue.json([f"{f.kind} {f.name}: {f.status} {f.detail}".strip()
                                                       for f in audit.problems]),
    }
    if audit.problems:
        metadata["detail"] = _problems_markdown(audit)
    if scope is None:
        tracker.set_tags(run_id, {"audit.status": "complete" if audit.complete else "incomplete",
                                  "audit.problems": len(audit.problems)})
    if not audit.complete:
        summary = "; ".join(f"{f.kind} {f.name} {f.status}" for f in audit.problems[:20])
        tracker.mark_failed(run_id, check, IncompleteLogError(summary))
    return dg.AssetCheckResult(passed=audit.complete, metadata=metadata)


def _build_check(asset: str) -> dg.AssetChecksDefinition:
    name = "experiment_logged_completely" if CHECKED_ASSETS[asset] is None else f"{asset}_logged_completely"
    what = "the whole parent run against the logging standard" if CHECKED_ASSETS[asset] is None else (
        f"what `{asset}` must log, per the logging standard")

    @dg.asset_check(
        asset=asset,
        name=name,
        blocking=True,
        partitions_def=dataset_versions,
        description=f"Audits {what}; lists each missing or malformed item and marks the run FAILED.",
    )
    def _check(context: dg.AssetCheckExecutionContext, mlflow: MlflowTracking) -> dg.AssetCheckResult:
        return audit_result(context.instance, context.partition_key, mlflow.tracker(), asset, name)

    return _check


with warnings.catch_warnings():
    # Partitioned asset checks are "preview" in Dagster 1.13; they are what lets each
    # dataset version's checks show on its own partition.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    LOGGING_CHECKS = [_build_check(asset) for asset in CHECKED_ASSETS]
