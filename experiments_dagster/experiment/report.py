"""What the report assets record in MLflow: the evaluation plots and the reproducibility manifest."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from experiments_dagster.experiment.training import PICKLE_ARTIFACT
from experiments_dagster.experiment.values import (
    CvMetrics,
    DataFingerprint,
    EvaluationPlots,
    FinalModel,
    Splits,
)
from experiments_dagster.ml import plots
from experiments_dagster.ml.importance import feature_importance
from experiments_dagster.tracking.environment import installed_requirements
from experiments_dagster.tracking.store import Tracker

IDENTITY_TAG_PREFIXES = ("git.", "python.", "os.", "code.", "config.", "experiment.key")


def plot_set(splits: Splits, final: FinalModel, seed: int) -> tuple[dict[str, Any], pd.Series, str]:
    """Figures by artifact name for the task, and the feature importance behind one of them."""
    s, task = splits.split, splits.task
    preds = final.test_predictions(s.X_test, task)
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
