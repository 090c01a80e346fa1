"""The logging standard as data: what a complete experiment contains, per task.

Assets log from it (metric names are computed from here), asset checks check each asset's
share of it, and ``experiments-dagster audit`` checks whole runs against it. Adding a
requirement is one line in ``STANDARD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from experiments_dagster.core.dataset import TASKS
from experiments_dagster.ml.metrics import DEFAULT_METRICS
from experiments_dagster.tracking import tags

ALL = frozenset(TASKS)
# The run param that says SHAP was asked for (config `shap`); its items apply only then.
SHAP_PARAM = "shap.enabled"
CLASSIFICATION = frozenset({"binary", "multiclass"})
BINARY = frozenset({"binary"})
MULTICLASS = frozenset({"multiclass"})
REGRESSION = frozenset({"regression"})

Kind = Literal[
    "status",
    "param",
    "metric",
    "cv_metric",
    "threshold_metrics",
    "artifact",
    "png",
    "tag",
    "hyperparameters",
    "model",
    "pickle",
    "dataset_input",
    "nested_runs",
    "search",
]


@dataclass(frozen=True)
class Requirement:
    """One item of a complete experiment, the asset that logs it and the tasks it applies to.

    ``dagster_only`` items (Dagster tags) are not applicable to runs logged outside Dagster.
    ``when``: a run param; the item applies only to runs where it is ``true`` (an option asked for).
    """

    kind: Kind
    name: str
    asset: str
    tasks: frozenset[str] = ALL
    dagster_only: bool = False
    when: str | None = None


def _params(asset: str, *names: str, tasks: frozenset[str] = ALL) -> tuple[Requirement, ...]:
    return tuple(Requirement("param", n, asset, tasks) for n in names)


def _tags(asset: str, *names: str, dagster_only: bool = False) -> tuple[Requirement, ...]:
    return tuple(Requirement("tag", n, asset, dagster_only=dagster_only) for n in names)


def _metrics(task: str, *names: str) -> tuple[Requirement, ...]:
    return tuple(Requirement("metric", n, "final_model", frozenset({task})) for n in names)


STANDARD: tuple[Requirement, ...] = (
    Requirement("status", "FINISHED", "repro_manifest"),
    # splits: dataset identity, split, seeds, evaluation settings; the dataset input.
    *_params(
        "splits",
        "dataset.name",
        "dataset.version",
        "data.hash",
        "dataset.rows",
        "dataset.columns",
        "dataset.size_bytes",
        "dataset.rows_dropped_missing_target",
        "target",
        "task",
        "split.test_size",
        "split.train_rows",
        "split.test_rows",
        "cv.folds",
        "seed.split",
        "seed.cv",
        "seed.model",
        "seed.numpy",
    ),
    *_params(
        "splits",
        "thresholds",
        "positive_class",
        "business.tp_value_usd",
        "business.fp_value_usd",
        "business.tn_value_usd",
        "business.fn_value_usd",
        tasks=BINARY,
    ),
    *_tags(
        "splits",
        "version",
        "stage",
        "dataset.name",
        "dataset.version",
        "data.hash",
        "git.commit",
        "mlflow.source.git.commit",
        "git.dirty",
        "python.version",
        "os.platform",
    ),
    *_tags(
        "splits", tags.DAGSTER_RUN_ID, tags.DAGSTER_PARTITION_KEY, tags.DAGSTER_ASSET_KEY, dagster_only=True
    ),
    Requirement("dataset_input", "training", "splits"),
    # search_trials: whether a search ran; if so, every trial as a nested run and the best on the parent.
    Requirement("param", "search.enabled", "search_trials"),
    Requirement("search", "trials", "search_trials"),
    # fold_models: one finished nested run per CV fold, each with the task's metrics.
    Requirement("nested_runs", "cv.folds", "fold_models"),
    # final_model: hyperparameters, test metrics, threshold sweep, business value, model, pickle.
    Requirement("param", "model_type", "final_model"),
    Requirement("hyperparameters", "model_type", "final_model"),
    # The test metrics of each task: the names ml.metrics computes (one list, defined there).
    *(req for task, names in DEFAULT_METRICS.items() for req in _metrics(task, *names)),
    Requirement("threshold_metrics", "thresholds", "final_model", BINARY),
    Requirement("metric", "revenue_impact_usd", "final_model", BINARY),
    Requirement("model", "model", "final_model"),
    Requirement("pickle", "pickle/pipeline.joblib", "final_model"),
    Requirement("tag", "model.pickle_sha256", "final_model"),
    Requirement("tag", "registry.model_name", "final_model"),
    Requirement("tag", "registry.version", "final_model"),
    # cv_metrics: cv_<metric>_mean/_std of every task metric above.
    Requirement("cv_metric", "mean_std", "cv_metrics"),
    # evaluation_plots: readable PNGs.
    Requirement("png", "feature_importance.png", "evaluation_plots"),
    Requirement("png", "confusion_matrix.png", "evaluation_plots", CLASSIFICATION),
    Requirement("png", "roc_curve.png", "evaluation_plots", CLASSIFICATION),
    Requirement("png", "pr_curve.png", "evaluation_plots", CLASSIFICATION),
    Requirement("png", "residuals.png", "evaluation_plots", REGRESSION),
    Requirement("png", "residual_distribution.png", "evaluation_plots", REGRESSION),
    # evaluation_plots: what mlflow.models.evaluate's default evaluator logs, on the test split.
    Requirement("png", "lift_curve.png", "evaluation_plots", BINARY),
    Requirement("png", "calibration_curve.png", "evaluation_plots", BINARY),
    Requirement("metric", "brier_score", "evaluation_plots", BINARY),
    Requirement("artifact", "per_class_metrics.csv", "evaluation_plots", MULTICLASS),
    Requirement("metric", "train_example_count", "evaluation_plots"),
    Requirement("metric", "test_example_count", "evaluation_plots"),
    Requirement("png", "shap_summary.png", "evaluation_plots", when=SHAP_PARAM),
    # repro_manifest: the reproducibility files.
    Requirement("artifact", "requirements.txt", "repro_manifest"),
    Requirement("artifact", "manifest.json", "repro_manifest"),
)


def requirements(task: str | None = None, assets: set[str] | None = None) -> list[Requirement]:
    """The standard's items for a task (all tasks if None), optionally of some assets only."""
    return [
        r for r in STANDARD if (task is None or task in r.tasks) and (assets is None or r.asset in assets)
    ]


def metric_names(task: str) -> tuple[str, ...]:
    """The test metrics a task must log; CV logs the same names per fold."""
    return tuple(
        r.name
        for r in STANDARD
        if r.kind == "metric"
        and r.asset == "final_model"
        and task in r.tasks
        and r.name != "revenue_impact_usd"
    )
