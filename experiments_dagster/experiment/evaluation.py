"""Log the evaluation that ``mlflow.models.evaluate`` would (lift, calibration, per-class table,
example counts, optional SHAP) into the experiment's parent run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments_dagster.experiment.values import FinalModel, Splits
from experiments_dagster.ml import evaluation
from experiments_dagster.tracking.standard import SHAP_PARAM
from experiments_dagster.tracking.store import Tracker

PER_CLASS_ARTIFACT = "per_class_metrics.csv"
SHAP_ARTIFACT = "shap_summary.png"
SHAP_TABLE_ARTIFACT = "shap_importance.csv"


@dataclass(frozen=True)
class Evaluation:
    """What was logged: metrics, PNGs by artifact name, the per-class table (multiclass)."""

    metrics: dict[str, float]
    pngs: dict[str, bytes] = field(default_factory=dict)
    per_class: pd.DataFrame | None = None
    artifacts: list[str] = field(default_factory=list)


def log_evaluation(tracker: Tracker, splits: Splits, final: FinalModel) -> Evaluation:
    """Evaluate the final model on the test split per task and log it on the parent run."""
    s, task, spec, run_id = splits.split, splits.task, splits.spec, final.run.run_id
    preds = final.test_predictions(s.X_test, task)
    y_true = np.asarray(s.y_test)
    metrics = evaluation.example_counts(len(s.y_train), len(s.y_test))
    figures = {}
    per_class = None
    artifacts: list[str] = []
    if task == "binary":
        metrics["brier_score"] = evaluation.brier_score(y_true, preds, spec.positive_class)
        figures["lift_curve.png"] = evaluation.plot_lift_curve(y_true, preds, spec.positive_class)
        figures["calibration_curve.png"] = evaluation.plot_calibration_curve(
            y_true, preds, spec.positive_class
        )
    elif task == "multiclass":
        per_class = evaluation.per_class_metrics(y_true, preds)
        tracker.log_bytes(run_id, PER_CLASS_ARTIFACT, per_class.to_csv().encode())
        artifacts.append(PER_CLASS_ARTIFACT)
    # Splits stored before `shap` existed unpickle without it: such a spec never asked for SHAP.
    asked = bool(getattr(spec, "shap", False))
    tracker.log_params(run_id, {SHAP_PARAM: str(asked).lower()})
    if asked:
        seed = spec.resolved_seeds.numpy
        sample = evaluation.shap_sample(s.X_test, spec.shap_sample_size, seed)
        importance = evaluation.shap_importance(final.pipeline, sample, task, seed)
        figures[SHAP_ARTIFACT] = evaluation.plot_shap_summary(importance)
        tracker.log_bytes(run_id, SHAP_TABLE_ARTIFACT, importance.rename_axis("column").to_csv().encode())
        tracker.log_params(run_id, {"shap.sample_rows": len(sample)})
        artifacts.append(SHAP_TABLE_ARTIFACT)
    tracker.log_metrics(run_id, metrics)
    pngs = {name: tracker.log_figure(run_id, fig, name) for name, fig in figures.items()}
    return Evaluation(metrics, pngs, per_class, sorted([*artifacts, *pngs]))
