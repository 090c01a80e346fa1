"""What each logging asset records in MLflow, given plain values and a tracker."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments_dagster.core import cpus
from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.experiment.registry import CHALLENGER, register_challenger
from experiments_dagster.experiment.run_facts import hyperparameters, parent_run_tags, split_params
from experiments_dagster.experiment.up_to_date import next_attempt
from experiments_dagster.experiment.values import (
    CvMetrics,
    DataFingerprint,
    FinalModel,
    FoldModels,
    RunRef,
    SearchResult,
    Splits,
)
from experiments_dagster.ml.cv import cross_validate_and_refit
from experiments_dagster.ml.estimators import model_type
from experiments_dagster.ml.metrics import summarize_folds
from experiments_dagster.ml.parallel import fold_memory_bytes, fold_workers
from experiments_dagster.ml.prepare import Prepared
from experiments_dagster.ml.training import (
    FinalFit,
    FoldResult,
    estimator_of,
    fit_final_model,
    score_final_model,
)
from experiments_dagster.tracking import standard
from experiments_dagster.tracking import tags as run_tags
from experiments_dagster.tracking.model_io import dump_pickle
from experiments_dagster.tracking.store import Tracker

PICKLE_ARTIFACT = "pickle/pipeline.joblib"
# Wall time of the pool that trained the CV folds and the final refit (parent run, seconds).
TRAINING_WALL_METRIC = "training_wall_seconds"


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
    """Train the CV folds, each in its own nested run, and the refit on the whole train split that
    ``final_model`` scores and logs, several at once (see ``ml.cv.cross_validate_and_refit``).

    The pool's wall time goes on the parent run as ``training_wall_seconds``. A fold's run opens
    when its training starts and closes when it is logged. If a fold fails, its run is FAILED
    with the error; folds training beside it are KILLED (their results are not waited for),
    nothing new starts, and the error propagates. A failing refit KILLs the folds in flight the
    same way, and so does an interrupt.
    """
    spec, s = splits.spec, splits.split
    seeds = spec.resolved_seeds
    # The refit is one more job of the pool; it holds a little more than a fold does.
    workers = fold_workers(
        spec.cv_folds + 1, fold_memory_bytes(s.X_train, spec.cv_folds), **cpus.fold_budget()
    )
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

    cv = cross_validate_and_refit(
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
    tracker.log_metrics(splits.run.run_id, {TRAINING_WALL_METRIC: cv.wall_seconds})
    return FoldModels(splits.run, cv.folds, run_ids, cv.refit, cv.wall_seconds)


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


def log_test_split(tracker: Tracker, splits: Splits) -> tuple[str, str]:
    """The test split as an MLflow input (context ``test``); returns its (name, digest), the
    evaluation dataset of the test metrics. The digest is a sha256 of the split's rows."""
    s, fp, target = splits.split, splits.fingerprint, splits.spec.target
    frame = s.X_test.assign(**{target: np.asarray(s.y_test)})
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()).hexdigest()
    name = f"{fp.dataset}@{fp.version}/test"
    tracker.log_dataset(
        splits.run.run_id, frame, name=name, digest=digest, source=fp.path, target=target, context="test"
    )
    return name, digest[:36]


def log_pickle(tracker: Tracker, run_id: str, pipeline: Any) -> str:
    """The joblib copy of the fitted pipeline at ``PICKLE_ARTIFACT``; returns its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PICKLE_ARTIFACT).name
        sha = dump_pickle(pipeline, path)
        tracker.log_file(run_id, path, str(Path(PICKLE_ARTIFACT).parent))
    return sha


def log_final_model(
    tracker: Tracker, splits: Splits, search: SearchResult, cv: CvMetrics, fold_models: FoldModels
) -> FinalModel:
    """Score the refit on the test split (fit it here if ``fold_models`` has none); log
    hyperparameters, test metrics, the pyfunc model and a pickle; register the model as the
    `challenger` version of the dataset's registered model."""
    spec, ref = splits.spec, splits.run
    fit = final_fit(splits, search, fold_models)
    pipeline, metrics = fit.pipeline, fit.metrics | {"fit_time_seconds": fit.fit_seconds}
    hp = hyperparameters(estimator_of(pipeline))
    model_id = log_pyfunc(tracker, splits, pipeline, hp)
    # Test metrics and the CV summary belong to the model too (MLflow 3's Models view).
    test_set = log_test_split(tracker, splits)
    tracker.link_metrics_to_model(ref.run_id, model_id, metrics | cv.summary, test_set)
    sha = log_pickle(tracker, ref.run_id, pipeline)
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
    version = register_final_model(tracker, splits, model_id)
    return FinalModel(
        ref, pipeline, model_id, uri, sha, metrics, hp, spec.model_name, version, fit.predictions
    )


def final_fit(splits: Splits, search: SearchResult, fold_models: FoldModels) -> FinalFit:
    """The refit of the CV's pool scored on the test split, or, when ``fold_models`` has none,
    the final model fitted here with the searched hyperparameters and scored."""
    s, spec, names = splits.split, splits.spec, standard.metric_names(splits.task)
    refit = fold_models.refit
    if refit is not None:
        return score_final_model(refit.pipeline, refit.fit_seconds, s, splits.task, spec, names)
    return fit_final_model(s, splits.task, spec, model_hyperparameters(splits, search), names)


def log_pyfunc(tracker: Tracker, splits: Splits, pipeline: Any, hp: dict[str, Any]) -> str:
    """The model's type and hyperparameters as the run's params, the pipeline as its pyfunc model;
    returns the logged model's id."""
    s, run_id = splits.split, splits.run.run_id
    estimator = estimator_of(pipeline)
    tracker.log_params(run_id, {"model_type": model_type(estimator), **hp})
    return tracker.log_pyfunc_model(
        run_id,
        pipeline,
        s.X_test,
        params={k: str(v) for k, v in hp.items()},
        tags={"dataset": splits.fingerprint.dataset, "data.hash": splits.fingerprint.sha256},
        model_type=model_type(estimator),
        schema_frames=(s.X_train, s.X_test),
    )


def register_final_model(tracker: Tracker, splits: Splits, model_id: str) -> str:
    """Register the logged model as the `challenger` version of the dataset's registered model,
    tagged with its provenance, and name the version on the run; returns the version."""
    spec, ref, fp = splits.spec, splits.run, splits.fingerprint
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
    return version
