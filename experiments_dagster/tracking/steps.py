"""What each logging asset records in MLflow, given plain values and a tracker."""

from __future__ import annotations

import io
import json
import queue
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments_dagster.ml import plots
from experiments_dagster.ml.estimators import build_estimator, model_type
from experiments_dagster.ml.importance import feature_importance
from experiments_dagster.ml.metrics import (
    business_value,
    confusion_counts,
    positive_label,
    predict,
    summarize_folds,
    task_metrics,
    threshold_metrics,
)
from experiments_dagster.ml.prepare import Prepared
from experiments_dagster.ml.training import (
    FoldResult,
    cv_fold_indices,
    estimator_of,
    fit_fold,
    fit_timed,
    fold_memory_bytes,
    fold_threads,
    fold_workers,
    make_pipeline,
)
from experiments_dagster.spec import ExperimentSpec
from experiments_dagster.tracking import standard
from experiments_dagster.tracking.environment import installed_requirements
from experiments_dagster.tracking.model_io import dump_pickle
from experiments_dagster.tracking.registry import CHALLENGER, register_challenger
from experiments_dagster.tracking.run_facts import hyperparameters, parent_run_tags, split_params
from experiments_dagster.tracking.store import Tracker
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


def open_parent_run(
    tracker: Tracker, spec: ExperimentSpec, prepared: Prepared, fp: DataFingerprint, tags: Mapping[str, str]
) -> RunRef:
    """Create the experiment's parent run ``<dataset>@<version>`` with its identity tags."""
    experiment_id = tracker.experiment_id(spec.experiment)
    run_id = tracker.start_run(
        experiment_id, f"{fp.dataset}@{fp.version}", {**parent_run_tags(spec, prepared.task, fp), **tags}
    )
    return RunRef(run_id, experiment_id, tracker.run_url(run_id, experiment_id))


def log_splits(tracker: Tracker, ref: RunRef, spec: ExperimentSpec, prepared: Prepared, fp: DataFingerprint) -> Splits:
    """Dataset facts, split sizes and seeds as params; the dataset as an MLflow input."""
    tracker.log_params(ref.run_id, split_params(spec, prepared.task, fp, prepared.split, prepared.rows_dropped))
    tracker.log_dataset(
        ref.run_id, prepared.frame, name=f"{fp.dataset}@{fp.version}", digest=fp.sha256,
        source=fp.path, target=spec.target,
    )
    return Splits(ref, spec, prepared.task, prepared.split, prepared.rows_dropped, fp)


def model_hyperparameters(splits: Splits, search: SearchResult) -> dict[str, Any]:
    """The spec's hyperparameters, overridden by the search's best ones when a search ran."""
    return {**splits.spec.hyperparameters, **search.best_params}


def log_fold_models(tracker: Tracker, splits: Splits, search: SearchResult, tags: Mapping[str, str]) -> FoldModels:
    """Train the CV folds, several at once, each inside its own nested run.

    A fold's run opens when its training starts and closes when it is logged. If a fold fails,
    its run is FAILED with the error; folds training beside it are KILLED (their results are
    not waited for), nothing new starts, and the error propagates.
    """
    spec, s = splits.spec, splits.split
    seeds = spec.resolved_seeds
    indices = cv_fold_indices(s.X_train, s.y_train, splits.task, spec.cv_folds, seeds.cv)
    workers = fold_workers(len(indices), fold_memory_bytes(s.X_train, len(indices)))
    params = model_hyperparameters(splits, search)
    n_jobs = build_estimator(spec.model, splits.task, params, seeds.model).get_params().get("n_jobs")
    supersede_fold_runs(tracker, splits.run, tags["dagster.run_id"])
    finished: queue.Queue[tuple[int, FoldResult | None, BaseException | None]] = queue.Queue()

    def train(i: int, threads: Any) -> None:
        fold_params = params if threads is None else {**params, "n_jobs": threads}
        try:
            fold = fit_fold(i, s.X_train, s.y_train, indices[i], splits.task, spec.model, fold_params,
                            seeds.model, spec.positive_class, standard.metric_names(splits.task))
        except BaseException as exc:  # handed to the logging thread, which marks the run and raises
            finished.put((i, None, exc))
        else:
            finished.put((i, fold, None))

    n = len(indices)
    run_ids: list[str] = []
    results: dict[int, FoldResult] = {}
    training: set[int] = set()
    try:
        while len(results) < n:
            while len(run_ids) < n and len(training) < workers:
                left = n - len(run_ids)
                if training and left < workers and n_jobs is not None:
                    break  # the last, partial round starts once the CPUs are free, with all of them
                i = len(run_ids)
                run_ids.append(tracker.start_run(
                    splits.run.experiment_id, f"fold-{i}", {**tags, "cv.fold": str(i)},
                    parent_run_id=splits.run.run_id,
                ))
                training.add(i)
                threads = fold_threads(n_jobs, workers if training - {i} else min(workers, left))
                # Daemon threads: an interrupted run must not wait for a fit it will never log.
                threading.Thread(target=train, args=(i, threads), name=f"cv-fold-{i}", daemon=True).start()
            i, fold, error = finished.get()
            training.discard(i)
            if error is not None:
                tracker.mark_failed(run_ids[i], "fold_models", error, "FAILED")
                raise error
            log_fold(tracker, run_ids[i], fold, seeds, workers)
            results[i] = fold
    except BaseException as exc:
        _close_unlogged_folds(tracker, exc, run_ids, training, finished, seeds, workers)
        raise
    return FoldModels(splits.run, [results[i] for i in range(len(indices))], run_ids)


def _close_unlogged_folds(
    tracker: Tracker, exc: BaseException, run_ids: list[str], training: set[int], finished: queue.Queue,
    seeds: Any, workers: int,
) -> None:
    """After a failure or an interrupt: folds that already raised are FAILED with their own error,
    folds that already finished are logged, folds still training are KILLED."""
    while True:
        try:
            i, fold, error = finished.get_nowait()
        except queue.Empty:
            break
        training.discard(i)
        if error is not None:
            tracker.mark_failed(run_ids[i], "fold_models", error, "FAILED")
        else:
            log_fold(tracker, run_ids[i], fold, seeds, workers)
    for i in sorted(training):
        tracker.mark_failed(run_ids[i], "fold_models", exc, "KILLED")


def log_fold(tracker: Tracker, run_id: str, fold: FoldResult, seeds: Any, workers: int) -> None:
    """A fold's params (incl. every estimator hyperparameter) and metrics; then its run is FINISHED."""
    with tracker.activity(run_id, "fold_models", finish=True):
        tracker.log_params(
            run_id,
            {"fold": fold.fold, "fold.train_rows": fold.n_train, "fold.validation_rows": fold.n_validation,
             "model_type": model_type(estimator_of(fold.pipeline)), "seed.cv": seeds.cv,
             "seed.model": seeds.model, "cv.workers": workers, **hyperparameters(estimator_of(fold.pipeline))},
        )
        tracker.log_metrics(
            run_id, {**fold.metrics, "fit_time_seconds": fold.timing.fit_seconds,
                     "predict_time_seconds": fold.timing.predict_seconds},
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


def final_metrics(spec: ExperimentSpec, task: str, y_true: np.ndarray, preds: Any) -> dict[str, float]:
    """Test metrics, plus threshold sweep and business value for binary tasks."""
    out = task_metrics(task, y_true, preds, spec.positive_class, standard.metric_names(task))
    if task == "binary":
        out |= threshold_metrics(y_true, preds, spec.thresholds, spec.positive_class)
        pos = positive_label(preds.classes, spec.positive_class)
        counts = confusion_counts(y_true, preds.y_pred, pos)
        out |= {f"test_{k}": float(v) for k, v in counts.items()}
        out["revenue_impact_usd"] = business_value(counts, spec.business_values.model_dump())
    return out


def log_final_model(tracker: Tracker, splits: Splits, search: SearchResult, cv: CvMetrics) -> FinalModel:
    """Fit on the train split; log hyperparameters, test metrics, the pyfunc model and a pickle;
    register the model as the `challenger` version of the dataset's registered model."""
    spec, s, ref = splits.spec, splits.split, splits.run
    pipeline = make_pipeline(
        s.X_train, splits.task, spec.model, model_hyperparameters(splits, search), spec.resolved_seeds.model
    )
    pipeline, fit_s = fit_timed(pipeline, s.X_train, s.y_train)
    preds = predict(pipeline, s.X_test, splits.task)
    metrics = final_metrics(spec, splits.task, np.asarray(s.y_test), preds) | {"fit_time_seconds": fit_s}
    estimator = estimator_of(pipeline)
    hp = hyperparameters(estimator)
    tracker.log_params(ref.run_id, {"model_type": model_type(estimator), **hp})
    tracker.log_metrics(ref.run_id, metrics)
    model_id = tracker.log_pyfunc_model(
        ref.run_id, pipeline, s.X_test, params={k: str(v) for k, v in hp.items()},
        tags={"dataset": splits.fingerprint.dataset, "data.hash": splits.fingerprint.sha256},
        model_type=model_type(estimator),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PICKLE_ARTIFACT).name
        sha = dump_pickle(pipeline, path)
        tracker.log_file(ref.run_id, path, str(Path(PICKLE_ARTIFACT).parent))
    uri = f"models:/{model_id}"
    tracker.set_tags(ref.run_id, {"model.id": model_id, "model.uri": uri, "model.pickle_sha256": sha,
                                  "model.pickle_path": PICKLE_ARTIFACT})
    fp = splits.fingerprint
    version = register_challenger(tracker, spec.model_name, model_id, ref.run_id, {
        "version": spec.version, "stage": spec.stage, "data.hash": fp.sha256, "dataset.version": fp.version,
        "git.commit": tracker.client.get_run(ref.run_id).data.tags.get("git.commit", "unknown"),
        "mlflow.run_url": ref.url, "mlflow.run_id": ref.run_id,
    })
    tracker.set_tags(ref.run_id, {"registry.model_name": spec.model_name, "registry.version": version,
                                  "registry.alias": CHALLENGER})
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


def log_evaluation_plots(tracker: Tracker, splits: Splits, final: FinalModel) -> tuple[EvaluationPlots, dict[str, bytes]]:
    """Log every figure as a PNG (and the importance table); return the PNG bytes too."""
    figures, importance, method = plot_set(splits, final, splits.spec.resolved_seeds.numpy)
    pngs = {name: tracker.log_figure(final.run.run_id, fig, name) for name, fig in figures.items()}
    buf = io.StringIO()
    importance.rename_axis("feature").to_csv(buf)
    tracker.log_bytes(final.run.run_id, "feature_importance.csv", buf.getvalue().encode())
    tracker.set_tags(final.run.run_id, {"feature_importance.method": method})
    return EvaluationPlots(final.run, sorted(pngs), importance, method), pngs


def build_manifest(
    fp: DataFingerprint, splits: Splits, cv: CvMetrics, final: FinalModel, plots_: EvaluationPlots,
    tags: Mapping[str, str], tracker: Tracker,
) -> dict[str, Any]:
    """Everything needed to reproduce the experiment, as one JSON-able document."""
    run = tracker.client.get_run(final.run.run_id)
    return {
        "mlflow": {"run_id": final.run.run_id, "experiment_id": final.run.experiment_id,
                   "run_url": final.run.url, "tracking_uri": tracker.tracking_uri},
        "dagster": dict(tags),
        "dataset": fp.__dict__,
        "spec": json.loads(splits.spec.model_dump_json()),
        "task": splits.task,
        "seeds": splits.spec.resolved_seeds.model_dump(),
        "split": {"train_rows": len(splits.split.y_train), "test_rows": len(splits.split.y_test),
                  "rows_dropped_missing_target": splits.rows_dropped},
        "model": {"model_id": final.model_id, "uri": final.model_uri, "pickle_sha256": final.pickle_sha256,
                  "pickle_artifact": PICKLE_ARTIFACT, "hyperparameters": {k: str(v) for k, v in final.hyperparameters.items()}},
        "metrics": {"test": final.metrics, "cv": cv.summary},
        "artifacts": plots_.artifacts,
        "code": {k: v for k, v in run.data.tags.items() if k.startswith(("git.", "python.", "os."))},
    }


def log_manifest(tracker: Tracker, run_id: str, manifest: dict[str, Any]) -> None:
    """``manifest.json`` and the exact installed set as ``requirements.txt``."""
    tracker.log_json(run_id, "manifest.json", manifest)
    tracker.log_bytes(run_id, "requirements.txt", installed_requirements().encode())
