"""Drift of a dataset version against the training data of its registered model's champion."""

import warnings
from typing import Any

import dagster as dg
from pydantic import Field

from experiments_dagster.defs.metadata import frame_markdown, plots_markdown, table_metadata
from experiments_dagster.defs.partitions import CODE_VERSION, GROUP, dataset_versions
from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.experiment.drift import COMPARED, DataDrift, log_drift, measure_drift
from experiments_dagster.experiment.registry import Decision
from experiments_dagster.experiment.values import FinalModel, Splits
from experiments_dagster.tracking.liveness import worker_id


class DriftConfig(dg.Config):
    """When the drift check warns."""

    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="A feature whose PSI passes this makes `data_drift_below_threshold` warn.",
    )


def drift_metadata(value: DataDrift, pngs: dict[str, bytes]) -> dict[str, Any]:
    """What the UI shows: status and reason; when compared, the tables, schema and plot."""
    metadata: dict[str, Any] = {
        "status": value.status,
        "reason": value.reason,
        "mlflow_run_id": value.run.run_id,
        "mlflow_run_url": dg.MetadataValue.url(value.run.url),
        "psi_threshold": value.threshold,
        "worker": worker_id(),
    }
    if value.status == COMPARED:
        metadata |= {
            "features_above_threshold": dg.MetadataValue.json(value.above_threshold),
            "max_psi": float(value.table["psi"].max()) if len(value.table) else 0.0,
            "schema_changes": dg.MetadataValue.json(value.schema),
            "target_shift": dg.MetadataValue.json(value.target),
            "drift": table_metadata(value.table.set_index("feature")),
            "champion_version": value.champion.version if value.champion else "none",
        }
        if value.comparison is not None:
            metadata["champion_vs_challenger"] = frame_markdown(value.comparison)
        if value.champion_error:
            metadata["champion_error"] = value.champion_error
        metadata["plots"] = plots_markdown(pngs)
    return metadata


@dg.asset(
    code_version=CODE_VERSION, partitions_def=dataset_versions, group_name=GROUP, kinds={"scipy", "mlflow"}
)
def data_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    mlflow: MlflowTracking,
    data: ExperimentData,
    splits: Splits,
    final_model: FinalModel,
    model_promotion: Decision,
) -> dg.Output[DataDrift]:
    """Schema changes, PSI with KS/chi-square per feature and target shift against the training
    data of the champion this version was judged against, and that champion's test metrics here."""
    tracker = mlflow.tracker()
    value = measure_drift(tracker, splits, final_model, model_promotion, data.path(), config.psi_threshold)
    pngs = log_drift(tracker, value)
    context.log.info(f"data_drift: {value.status}: {value.reason}")
    return dg.Output(value, metadata=drift_metadata(value, pngs))


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are "preview" in 1.13

    @dg.asset_check(
        asset=data_drift,
        blocking=False,
        partitions_def=dataset_versions,
        description="Warns when any feature's PSI against the champion's training data passes "
        "`psi_threshold` (config of data_drift, default 0.2).",
    )
    def data_drift_below_threshold(data_drift: DataDrift) -> dg.AssetCheckResult:
        """Passes when no feature drifted past the threshold (or there was nothing to compare)."""
        above = data_drift.above_threshold
        psi = dict(zip(data_drift.table["feature"], data_drift.table["psi"], strict=True))
        return dg.AssetCheckResult(
            passed=not above,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "status": data_drift.status,
                "psi_threshold": data_drift.threshold,
                "features_above_threshold": dg.MetadataValue.json(
                    {f: round(float(psi[f]), 6) for f in above}
                ),
                "removed_columns": dg.MetadataValue.json(data_drift.schema.get("removed", [])),
            },
        )
