"""Assets that split, cross-validate and fit, logging into the experiment's parent run."""

from pathlib import Path

import dagster as dg
import pandas as pd

from experiments_dagster.core.catalog import dataset_dir
from experiments_dagster.core.spec import resolve_spec
from experiments_dagster.core.versioning import config_hash, experiment_key
from experiments_dagster.defs import search_ops
from experiments_dagster.defs.config import ExperimentConfig
from experiments_dagster.defs.failure_hook import mlflow_runs_failed
from experiments_dagster.defs.failures import input_errors_as_failures
from experiments_dagster.defs.metadata import (
    frame_markdown,
    metrics_metadata,
    run_end,
    run_metadata,
    tags_for,
)
from experiments_dagster.defs.partitions import CODE_VERSION, GROUP, dataset_versions
from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.experiment import training as asset_logging
from experiments_dagster.experiment.values import (
    CvMetrics,
    DataFingerprint,
    FinalModel,
    FoldModels,
    SearchResult,
    Splits,
)
from experiments_dagster.ml.prepare import prepare_experiment
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.reproduce import logged_spec


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"sklearn", "mlflow"},
)
def splits(
    context: dg.AssetExecutionContext,
    config: ExperimentConfig,
    data: ExperimentData,
    mlflow: MlflowTracking,
    raw_data: pd.DataFrame,
    data_hash: DataFingerprint,
) -> dg.Output[Splits]:
    """Train/test split of the version; validates the experiment, then opens its MLflow parent run."""
    tracker = mlflow.tracker()
    # A reproduction (`experiments-dagster reproduce`) trains the original run's logged config.
    original = context.run.tags.get(tags.REPRODUCTION_OF)
    with input_errors_as_failures():
        spec = (
            logged_spec(tracker.client, original)
            if original
            else resolve_spec(
                data_hash.dataset, dataset_dir(data.path(), data_hash.dataset), config.overrides()
            )
        )
        prepared = prepare_experiment(raw_data, spec, Path(data_hash.path))
    for warning in prepared.warnings:  # free-text or identifier-like columns: trained, but said
        context.log.warning(warning)
    run_tags = tags_for(context, "splits") | ({tags.REPRODUCTION_OF: original} if original else {})
    ref = asset_logging.open_parent_run(tracker, spec, prepared, data_hash, run_tags)
    with tracker.activity(ref.run_id, "splits", **run_end(context, "splits")):
        value = asset_logging.log_splits(tracker, ref, spec, prepared, data_hash)
    context.log.info(f"MLflow parent run {ref.run_id}: {ref.url}")
    key = experiment_key(data_hash.sha256, config_hash(spec.model_dump(mode="json")), CODE_VERSION)
    return dg.Output(
        value,
        # The experiment key (data hash, config, code version) is this asset's data version.
        data_version=dg.DataVersion(key),
        metadata={
            **run_metadata(ref),
            "task": prepared.task,
            "train_rows": len(prepared.split.y_train),
            "test_rows": len(prepared.split.y_test),
            "rows_dropped_missing_target": prepared.rows_dropped,
            "data_hash": data_hash.sha256,
        },
    )


@dg.graph_asset(
    code_version=CODE_VERSION, partitions_def=dataset_versions, group_name=GROUP, kinds={"optuna", "mlflow"}
)
def search_trials(splits: Splits) -> SearchResult:
    """Optional hyperparameter search (config `search`): `search.workers` parallel steps share one
    Optuna study; one nested MLflow run per trial, the best params on the parent run."""
    failed = {mlflow_runs_failed}
    slots = search_ops.plan_search.with_hooks(failed)(splits)
    trials = slots.map(lambda slot: search_ops.search_worker.with_hooks(failed)(splits, slot))
    return search_ops.collect_search.with_hooks(failed)(splits, trials.collect())


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"xgboost", "mlflow"},
)
def fold_models(
    context: dg.AssetExecutionContext, mlflow: MlflowTracking, splits: Splits, search_trials: SearchResult
) -> dg.Output[FoldModels]:
    """One pipeline per CV fold (search's best params if a search ran), each a nested MLflow run."""
    tracker = mlflow.tracker()
    with tracker.activity(splits.run.run_id, "fold_models", **run_end(context, "fold_models")):
        value = asset_logging.log_fold_models(
            tracker, splits, search_trials, tags_for(context, "fold_models")
        )
    return dg.Output(
        value,
        metadata={
            **run_metadata(splits.run),
            "folds": len(value.folds),
            "fold_run_ids": dg.MetadataValue.json(value.fold_run_ids),
            asset_logging.TRAINING_WALL_METRIC: round(value.training_seconds, 3),
        },
    )


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"mlflow"},
)
def cv_metrics(
    context: dg.AssetExecutionContext, mlflow: MlflowTracking, fold_models: FoldModels
) -> dg.Output[CvMetrics]:
    """Per-fold metric table with mean and std, logged on the parent run."""
    tracker = mlflow.tracker()
    with tracker.activity(fold_models.run.run_id, "cv_metrics", **run_end(context, "cv_metrics")):
        value = asset_logging.log_cv_metrics(tracker, fold_models)
    return dg.Output(
        value,
        metadata={
            **run_metadata(value.run),
            **metrics_metadata(value.summary),
            "folds": frame_markdown(value.table),
        },
    )


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    hooks={mlflow_runs_failed},
    kinds={"xgboost", "mlflow"},
)
def final_model(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    splits: Splits,
    search_trials: SearchResult,
    fold_models: FoldModels,
    cv_metrics: CvMetrics,
) -> dg.Output[FinalModel]:
    """The pipeline fitted on the train split (trained in `fold_models`' pool beside the last folds):
    hyperparameters, test metrics, MLflow model, pickle; registered as the `challenger` version."""
    tracker = mlflow.tracker()
    with tracker.activity(splits.run.run_id, "final_model", **run_end(context, "final_model")):
        value = asset_logging.log_final_model(tracker, splits, search_trials, cv_metrics, fold_models)
    return dg.Output(
        value,
        metadata={
            **run_metadata(value.run),
            **metrics_metadata(value.metrics),
            "model_uri": value.model_uri,
            "pickle_sha256": value.pickle_sha256,
            "registered_model": f"{value.registered_name} v{value.registered_version}",
        },
    )
