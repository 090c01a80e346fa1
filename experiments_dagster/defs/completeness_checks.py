"""Our logging-completeness checks for a user's own asset that logs to MLflow.

Attach them to an asset that logs with dagster-mlflow's ``mlflow_tracking`` resource (or with
this project's tags) to get the same audit the experiment graph gets::

    defs = dg.Definitions(
        assets=[my_model],
        asset_checks=mlflow_completeness_checks(my_model, task="binary", standard=["accuracy", ...]),
    )

See ``examples/dagster_mlflow_user/`` for a whole example.
"""

import warnings
from collections.abc import Iterable, Sequence

import dagster as dg
from mlflow import MlflowClient

from experiments_dagster.core.dataset import TASKS
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster.tracking.run_lookup import pick_run, runs_of_dagster_run
from experiments_dagster.tracking.standard import Requirement, requirements

__all__ = ["mlflow_completeness_checks", "standard_items"]


def standard_items(task: str, standard: Iterable[Requirement | str] | None = None) -> list[Requirement]:
    """The standard's items for ``task``, or the subset named (by item name, e.g. ``"f1"``,
    ``"confusion_matrix.png"``, ``"model"``) or given as ``Requirement`` objects."""
    if task not in TASKS:
        raise ExperimentInputError(f"task {task!r} is not one of {list(TASKS)}; pass task=... accordingly.")
    every = requirements(task)
    if standard is None:
        return every
    chosen: list[Requirement] = []
    unknown: list[str] = []
    for item in standard:
        if isinstance(item, Requirement):
            chosen.append(item)
            continue
        matches = [r for r in every if r.name == item]
        chosen += matches
        if not matches:
            unknown.append(item)
    if unknown:
        names = sorted({r.name for r in every})
        raise ExperimentInputError(
            f"{unknown} name no item of the logging standard for {task} tasks; "
            f"pass names from: {', '.join(names)}."
        )
    return chosen


def _asset_key(asset: dg.AssetsDefinition | dg.AssetKey | str) -> dg.AssetKey:
    if isinstance(asset, dg.AssetsDefinition):
        return asset.key
    return asset if isinstance(asset, dg.AssetKey) else dg.AssetKey.from_user_string(asset)


def _checked_materialization(
    context: dg.AssetCheckExecutionContext, key: dg.AssetKey
) -> dg.EventLogEntry | None:
    """The materialization this check judges: the one of its own Dagster run when the asset was
    materialized in it (never a concurrent run's of the same partition), else the latest."""
    partition = context.partition_key if context.has_partition_key else None
    own = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(own):
        event = record.event_log_entry.asset_materialization
        if event is not None and event.asset_key == key and event.partition == partition:
            return record.event_log_entry
    if not context.has_partition_key:
        return context.instance.get_latest_materialization_event(key)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(key, asset_partitions=[context.partition_key]), limit=1
    ).records
    return records[0].event_log_entry if records else None


def mlflow_completeness_checks(
    asset: dg.AssetsDefinition | dg.AssetKey | str,
    task: str,
    standard: Sequence[Requirement | str] | None = None,
    tracking_uri: str | None = None,
    blocking: bool = False,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetChecksDefinition]:
    """One asset check that audits the MLflow run the asset's materialization logged to (the one
    of the check's own Dagster run, or the latest when the check runs alone)
    against the logging standard of ``task`` (or the ``standard`` subset).

    The run is the one tagged with the materializing Dagster run's id, by dagster-mlflow's
    ``mlflow_tracking`` (``dagster_run_id``) or by us (``dagster.run_id``); a materialization
    whose metadata names ``mlflow_run_id`` points at it directly. ``tracking_uri``: default
    MLflow's own resolution (``MLFLOW_TRACKING_URI``). Missing or malformed items fail the check
    (severity ERROR) and are listed in its metadata. A partitioned asset's check (its
    ``partitions_def``, taken from an ``AssetsDefinition``) audits that partition's latest
    materialization.
    """
    key = _asset_key(asset)
    if partitions_def is None and isinstance(asset, dg.AssetsDefinition):
        partitions_def = asset.partitions_def
    items = standard_items(task, standard)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are "preview" in 1.13
        check = _build(key, items, task, tracking_uri, blocking, partitions_def)
    return [check]


def _build(
    key: dg.AssetKey,
    items: list[Requirement],
    task: str,
    tracking_uri: str | None,
    blocking: bool,
    partitions_def: dg.PartitionsDefinition | None,
) -> dg.AssetChecksDefinition:
    check_name = f"{key.path[-1]}_mlflow_logged_completely"

    @dg.asset_check(
        asset=key,
        name=check_name,
        blocking=blocking,
        partitions_def=partitions_def,
        description=f"Audits the asset's MLflow run against the logging standard ({task}, {len(items)} items).",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        client = MlflowClient(tracking_uri)
        event = _checked_materialization(context, key)
        if event is None or event.asset_materialization is None:
            return dg.AssetCheckResult(passed=False, metadata={"problem": "the asset was never materialized"})
        named = event.asset_materialization.metadata.get("mlflow_run_id")
        run_id = str(named.value) if named is not None else None
        if run_id is None:
            run = pick_run(runs_of_dagster_run(client, event.run_id), key.to_user_string())
            run_id = run.info.run_id if run is not None else None
        if run_id is None:
            return dg.AssetCheckResult(
                passed=False,
                metadata={
                    "dagster_run_id": event.run_id,
                    "problem": "no MLflow run is tagged with this Dagster run's id (dagster_run_id or "
                    "dagster.run_id): log through dagster-mlflow's mlflow_tracking resource",
                },
            )
        audit = Auditor(client).audit(run_id, items=items, task=task)
        missing = [f"{f.kind} {f.name}: {f.status} {f.detail}".strip() for f in audit.problems]
        return dg.AssetCheckResult(
            passed=audit.complete,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "mlflow_run_id": run_id,
                "dagster_run_id": event.run_id,
                "items_checked": len(audit.findings),
                "problems": len(audit.problems),
                "missing_or_malformed": dg.MetadataValue.json(missing),
            },
        )

    return _check
