"""Assets that evaluate the final model and close the experiment with its manifest."""

from dataclasses import replace
from typing import Any

import dagster as dg

from experiments_dagster.defs.failure_hook import mlflow_runs_failed
from experiments_dagster.defs.metadata import (
    metrics_metadata,
    plots_markdown,
    run_end,
    table_metadata,
    tags_for,
)
from experiments_dagster.defs.partitions import CODE_VERSION, GROUP, dataset_versions
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.experiment import report as report_log
from experiments_dagster.experiment.evaluation import log_evaluation
from experiments_dagster.experiment.values import (
    CvMetrics,
    DataFingerprint,
    EvaluationPlots,
    FinalModel,
    Splits,
)
from experiments_dagster.tracking.liveness import worker_id


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"matplotlib", "mlflow"},
)
def evaluation_plots(
    context: dg.AssetExecutionContext, mlflow: MlflowTracking, final_model: FinalModel, splits: Splits
) -> dg.Output[EvaluationPlots]:
    """Feature importance, confusion matrix and ROC/PR curves (classification) or residual plots;
    lift and calibration curves with the Brier score (binary), per-class metrics (multiclass),
    example counts, and a SHAP summary when config `shap` asks."""
    tracker = mlflow.tracker()
    with tracker.activity(final_model.run.run_id, "evaluation_plots", **run_end(context, "evaluation_plots")):
        value, pngs = report_log.log_evaluation_plots(tracker, splits, final_model)
        extra = log_evaluation(tracker, splits, final_model)
    value = replace(value, artifacts=sorted({*value.artifacts, *extra.artifacts}))
    metadata: dict[str, Any] = {
        "plots": plots_markdown({**pngs, **extra.pngs}),
        "mlflow_run_url": dg.MetadataValue.url(value.run.url),
        "mlflow_run_id": value.run.run_id,
        "worker": worker_id(),
        "importance_method": value.importance_method,
        "artifacts": dg.MetadataValue.json(value.artifacts),
        **metrics_metadata(extra.metrics),
    }
    if extra.per_class is not None:
        metadata["per_class_metrics"] = table_metadata(extra.per_class)
    return dg.Output(value, metadata=metadata)


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"mlflow"},
)
def repro_manifest(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    data_hash: DataFingerprint,
    splits: Splits,
    cv_metrics: CvMetrics,
    final_model: FinalModel,
    evaluation_plots: EvaluationPlots,
) -> dg.Output[dict[str, Any]]:
    """manifest.json and requirements.txt on the parent run, which it then ends FINISHED."""
    tracker = mlflow.tracker()
    run_id = final_model.run.run_id
    with tracker.activity(run_id, "repro_manifest", **run_end(context, "repro_manifest")):
        manifest = report_log.build_manifest(
            data_hash,
            splits,
            cv_metrics,
            final_model,
            evaluation_plots,
            tags_for(context, "repro_manifest"),
            tracker,
        )
        report_log.log_manifest(tracker, run_id, manifest)
    context.log.info(f"Experiment complete: {final_model.run.url}")
    return dg.Output(
        manifest,
        metadata={
            "mlflow_run_url": dg.MetadataValue.url(final_model.run.url),
            "mlflow_run_id": run_id,
            "worker": worker_id(),
            "git_commit": manifest["code"].get("git.commit", "unknown"),
            "manifest": dg.MetadataValue.json(manifest),
        },
    )
