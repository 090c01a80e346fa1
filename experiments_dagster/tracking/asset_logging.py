"""What each logging asset records in MLflow, given plain values and a tracker."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments_dagster.ml import plots
from experiments_dagster.ml.cv import cross_validate, fold_memory_bytes, fold_workers
from experiments_dagster.ml.estimators import model_type
from experiments_dagster.ml.importance import feature_importance
from experiments_dagster.ml.metrics import predict, summarize_folds
from experiments_dagster.ml.prepare import Prepared
from experiments_dagster.ml.training import FoldResult, estimator_of, fit_final_model
from experiments_dagster.spec import ExperimentSpec
from experiments_dagster.tracking import standard
from experiments_dagster.tracking import tags as run_tags
from experiments_dagster.tracking.environment import installed_requirements
from experiments_dagster.tracking.model_io import dump_pickle
from experiments_dagster.tracking.registry import CHALLENGER, register_challenger
from experiments_dagster.tracking.run_facts import hyperparameters, parent_run_tags, split_params
from experiments_dagster.tracking.store import Tracker
from experiments_dagster.tracking.up_to_date import next_attempt
from experiments_dagster.values import (
    CvMetrics,
    DataFingerprint,
    EvaluationPlots,
    FinalModel,
    FoldModels,
    RunRef,
    SearchResult,
    Splits,
)

PICKLE_ARTIFACT = "pickle/pipeline.joblib"
IDENTITY_TAG_PREFIXES = ("git.", "python.", "os.", "code.", "config.", "experiment.key")


def open_parent_run(
    tracker: Tracker, spec: ExperimentSpec, prepared: Prepared, fp: DataFingerprint, tags: Mapping[str, str]
) -> RunRef:
    """Create the experiment's parent run ``<dataset>@<version> #<attempt>`` with its identity tags."""
    experiment_id = tracker.experiment_id(spec.experiment)
    attempt = next_attempt(tracker, experiment_id, fp)
    run_id = tracker.start_run(
        experiment_id,
        f"{fp.dataset}@{fp.version} #{attempt}",
        {**parent_run_tags(spec, prepared.task, fp), **tags, run_tags.ATTEMPT: str(attempt)},
    )
    return RunRef(run_id, experiment_id, tracker.run_url(run_id, experiment_id))


def log_splits(
    tracker: Tracker, ref: RunRef, spec: ExperimentSpec, prepared: Prepared, fp: DataFingerprint
) -> Splits:
    """Dataset facts, split sizes and seeds as params; the dataset as an MLflow input."""
    tracker.log_params(
        ref.run_id, split_params(spec, prepared.task, fp, prepared.split, prepared.rows_dropped)
    )
    tracker.log_dataset(
        ref.run_id,
        prepared.frame,
        name=f"{fp.dataset}@{fp.version}",
        digest=fp.sha256,
        source=fp.path,
        target=spec.target,
    )
    return Splits(ref, spec, prepared.task, prepared.split, prepared.rows_dropped, fp)


def model_hyperparameters(splits: Splits, search: SearchResult) -> dict[str, Any]:
    """The spec's hyperparameters, overridden by the search's best ones when a search ran."""
    return {**splits.spec.hyperparameters, **search.best_params}


def log_fold_models(
    tracker: Tracker, splits: Splits, search: SearchResult, tags: Mapping[str, str]
) -> FoldModels:
    """Train the CV folds (several at once, see ``ml.cv.cross_validate``), each in its own nested run.

    A fold's run opens when its training starts and closes when it is logged. If a fold fails,
    its run is FAILED with the error; folds training beside it are KILLED (their results are
    not waited for), nothing new starts, and the error propagates. An interrupt KILLs the folds
    in flight the same way.
    """
    spec, s = splits.spec, splits.split
    seeds = spec.resolved_seeds
    workers = fold_workers(spec.cv_folds, fold_memory_bytes(s.X_train, spec.cv_folds))
    supersede_fold_runs(tracker, splits.run, tags[run_tags.DAGSTER_RUN_ID])
    run_ids: list[str] = []

    def start(i: int) -> None:
        run_ids.append(
            tracker.start_run(
                splits.run.experiment_id,
                f"fold-{i}",
                {**tags, "cv.fold": str(i)},
                parent_run_id=splits.run.run_id,
            )
        )

    folds = cross_validate(
        s.X_train,
        s.y_train,
        splits.task,
        spec.model,
        model_hyperparameters(splits, search),
        spec.cv_folds,
        seeds.cv,
        seeds.model,
        positive_class=spec.positive_class,
        metric_names=standard.metric_names(splits.task),
        workers=workers,
        on_start=start,
        on_done=lambda fold: log_fold(tracker, run_ids[fold.fold], fold, seeds, workers),
        on_error=lambda i, exc: tracker.mark_failed(run_ids[i], "fold_models", exc, "FAILED"),
        on_abandon=lambda i, exc: tracker.mark_failed(run_ids[i], "fold_models", exc, "KILLED"),
    )
    return FoldModels(splits.run, folds, run_ids)


def log_fold(tracker: Tracker, run_id: str, fold: FoldResult, seeds: Any, workers: int) -> None:
    """A fold's params (incl. every estimator hyperparameter) and metrics; then its run is FINISHED."""
    with tracker.activity(run_id, "fold_models", finish=True):
        tracker.log_params(
            run_id,
            {
                "fold": fold.fold,
                "fold.train_rows": fold.n_train,
                "fold.validation_rows": fold.n_validation,
                "model_type": model_type(estimator_of(fold.pipeline)),
                "seed.cv": seeds.cv,
                "seed.model": seeds.model,
                "cv.workers": workers,
                **hyperparameters(estimator_of(fold.pipeline)),
            },
        )
        tracker.log_metrics(
            run_id,
            {
                **fold.metrics,
                "fit_time_seconds": fold.timing.fit_seconds,
                "predict_time_seconds": fold.timing.predict_seconds,
            },
        )


def supersede_fold_runs(tracker: Tracker, ref: RunRef, dagster_run_id: str) -> None:
    """A re-execution retrains the folds: earlier fold runs of this parent are tagged and deleted."""
    earlier = tracker.client.search_runs(
        [ref.experiment_id], f"tags.mlflow.parentRunId = '{ref.run_id}' and tags.`cv.fold` != ''"
    )
    for run in earlier:
        tracker.set_tags(run.info.run_id, {"superseded_by.dagster_run_id": dagster_run_id})
        if run.info.status == "RUNNING":
            tracker.end_run(run.info.run_id, "KILLED")
        tracker.client.delete_run(run.info.run_id)


def log_cv_metrics(tracker: Tracker, fold_models: FoldModels) -> CvMetrics:
    """``cv_<metric>_mean``/``_std`` on the parent, and the per-fold table as a CSV artifact."""
    table = pd.DataFrame([{"fold": f.fold, **f.metrics} for f in fold_models.folds]).set_index("fold")
    summary = summarize_folds([f.metrics for f in fold_models.folds])
    tracker.log_metrics(fold_models.run.run_id, summary)
    tracker.log_bytes(fold_models.run.run_id, "cv_fold_metrics.csv", table.to_csv().encode())
    return CvMetrics(fold_models.run, table, summary)


def log_final_model(tracker: Tracker, splits: Splits, search: SearchResult, cv: CvMetrics) -> FinalModel:
    """Fit on the train split; log hyperparameters, test metrics, the pyfunc model and a pickle;
    register the model as the `challenger` version of the dataset's registered model."""
    spec, s, ref = splits.spec, splits.split, splits.run
    fit = fit_final_model(
        s, splits.task, spec, model_hyperparameters(splits, search), standard.metric_names(splits.task)
    )
    pipeline, metrics = fit.pipeline, fit.metrics | {"fit_time_seconds": fit.fit_seconds}
    estimator = estimator_of(pipeline)
    hp = hyperparameters(estimator)
    tracker.log_params(ref.run_id, {"model_type": model_type(estimator), **hp})
    tracker.log_metrics(ref.run_id, metrics)
    model_id = tracker.log_pyfunc_model(
        ref.run_id,
        pipeline,
        s.X_test,
        params={k: str(v) for k, v in hp.items()},
        tags={"dataset": splits.fingerprint.dataset, "data.hash": splits.fingerprint.sha256},
        model_type=model_type(estimator),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PICKLE_ARTIFACT).name
        sha = dump_pickle(pipeline, path)
        tracker.log_file(ref.run_id, path, str(Path(PICKLE_ARTIFACT).parent))
    uri = f"models:/{model_id}"
    tracker.set_tags(
        ref.run_id,
        {
            run_tags.MODEL_ID: model_id,
            "model.uri": uri,
            "model.pickle_sha256": sha,
            "model.pickle_path": PICKLE_ARTIFACT,
        },
    )
    fp = splits.fingerprint
    version = register_challenger(
        tracker,
        spec.model_name,
        model_id,
        ref.run_id,
        {
            "version": spec.version,
            "stage": spec.stage,
            "data.hash": fp.sha256,
            "dataset.version": fp.version,
            "git.commit": tracker.client.get_run(ref.run_id).data.tags.get("git.commit", "unknown"),
            "mlflow.run_url": ref.url,
            "mlflow.run_id": ref.run_id,
        },
    )
    tracker.set_tags(
        ref.run_id,
        {"registry.model_name": spec.model_name, "registry.version": version, "registry.alias": CHALLENGER},
    )
    return FinalModel(ref, pipeline, model_id, uri, sha, metrics, hp, spec.model_name, version)


def plot_set(splits: Splits, final: FinalModel, seed: int) -> tuple[dict[str, Any], pd.Series, str]:
    """Figures by artifact name for the task, and the feature importance behind one of them."""
    s, task = splits.split, splits.task
    preds = predict(final.pipeline, s.X_test, task)
    y_true = np.asarray(s.y_test)
    importance, method = feature_importance(final.pipeline, s.X_test, s.y_test, seed)
    figures: dict[str, Any] = {"feature_importance.png": plots.plot_feature_importance(importance, method)}
    if task == "regression":
        figures["residuals.png"] = plots.plot_residuals(y_true, preds)
        figures["residual_distribution.png"] = plots.plot_residual_distribution(y_true, preds)
    else:
        pos = splits.spec.positive_class
        figures["confusion_matrix.png"] = plots.plot_confusion_matrix(y_true, preds)
        figures["roc_curve.png"] = plots.plot_roc_curve(y_true, preds, pos)
        figures["pr_curve.png"] = plots.plot_pr_curve(y_true, preds, pos)
    return figures, importance, method


def log_evaluation_plots(
    tracker: Tracker, splits: Splits, final: FinalModel
) -> tuple[EvaluationPlots, dict[str, bytes]]:
    """Log every figure as a PNG (and the importance table); return the PNG bytes too."""
    figures, importance, method = plot_set(splits, final, splits.spec.resolved_seeds.numpy)
    pngs = {name: tracker.log_figure(final.run.run_id, fig, name) for name, fig in figures.items()}
    buf = io.StringIO()
    importance.rename_axis("feature").to_csv(buf)
    tracker.log_bytes(final.run.run_id, "feature_importance.csv", buf.getvalue().encode())
    tracker.set_tags(final.run.run_id, {"feature_importance.method": method})
    return EvaluationPlots(final.run, sorted(pngs), importance, method), pngs


def build_manifest(
    fp: DataFingerprint,
    splits: Splits,
    cv: CvMetrics,
    final: FinalModel,
    plots_: EvaluationPlots,
    tags: Mapping[str, str],
    tracker: Tracker,
) -> dict[str, Any]:
    """Everything needed to reproduce the experiment, as one JSON-able document."""
    run = tracker.client.get_run(final.run.run_id)
    return {
        "mlflow": {
            "run_id": final.run.run_id,
            "experiment_id": final.run.experiment_id,
            "run_url": final.run.url,
            "tracking_uri": tracker.tracking_uri,
        },
        "dagster": dict(tags),
        "dataset": fp.__dict__,
        "spec": json.loads(splits.spec.model_dump_json()),
        "task": splits.task,
        "seeds": splits.spec.resolved_seeds.model_dump(),
        "split": {
            "train_rows": len(splits.split.y_train),
            "test_rows": len(splits.split.y_test),
            "rows_dropped_missing_target": splits.rows_dropped,
        },
        "model": {
            "model_id": final.model_id,
            "uri": final.model_uri,
            "pickle_sha256": final.pickle_sha256,
            "pickle_artifact": PICKLE_ARTIFACT,
            "hyperparameters": {k: str(v) for k, v in final.hyperparameters.items()},
        },
        "metrics": {"test": final.metrics, "cv": cv.summary},
        "artifacts": plots_.artifacts,
        # git commit and dirty flag, Python, OS, and code.version/config.hash/experiment.key.
        "code": {k: v for k, v in run.data.tags.items() if k.startswith(IDENTITY_TAG_PREFIXES)},
        "packages": installed_requirements().splitlines(),
    }


def log_manifest(tracker: Tracker, run_id: str, manifest: dict[str, Any]) -> None:
    """``manifest.json`` and the exact installed set as ``requirements.txt``."""
    tracker.log_json(run_id, "manifest.json", manifest)
    tracker.log_bytes(run_id, "requirements.txt", installed_requirements().encode())
