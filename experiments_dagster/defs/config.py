"""Launchpad config for an experiment. Every field left unset comes from experiment.yaml."""

from typing import Any

import dagster as dg
from pydantic import Field


class BusinessValuesConfig(dg.Config):
    """Value in USD of each binary outcome."""

    tp: float = Field(default=0.0, description="Value of a true positive.")
    fp: float = Field(default=0.0, description="Value of a false positive.")
    tn: float = Field(default=0.0, description="Value of a true negative.")
    fn: float = Field(default=0.0, description="Value of a false negative.")


class ExperimentConfig(dg.Config):
    """Overrides of the dataset's experiment.yaml for this run (set on `splits`, travels downstream)."""

    target: str | None = Field(default=None, description="Target column.")
    task: str | None = Field(default=None, description="binary, multiclass or regression; inferred if unset.")
    model: str | None = Field(
        default=None,
        description="'xgboost' or an estimator import path, e.g. sklearn.ensemble.RandomForestClassifier.",
    )
    hyperparameters: dict[str, Any] | None = Field(default=None, description="Estimator keyword arguments.")
    cv_folds: int | None = Field(default=None, description="Number of CV folds (default 5).")
    test_size: float | None = Field(default=None, description="Held-out test share (default 0.2).")
    seed: int | None = Field(default=None, description="Seed for split, CV, model and numpy (default 42).")
    thresholds: list[float] | None = Field(
        default=None, description="Decision thresholds swept for binary tasks."
    )
    positive_class: str | None = Field(default=None, description="Positive class of a binary task.")
    business_values: BusinessValuesConfig | None = Field(
        default=None, description="USD per TP/FP/TN/FN, logged as revenue_impact_usd."
    )
    version: str | None = Field(default=None, description="`version` tag of the MLflow run.")
    stage: str | None = Field(default=None, description="`stage` tag of the MLflow run.")
    tags: dict[str, str] | None = Field(default=None, description="Extra MLflow tags.")
    experiment_name: str | None = Field(
        default=None, description="MLflow experiment (default: dataset name)."
    )
    shap: bool | None = Field(
        default=None, description="Log a SHAP summary of the test split (needs the optional `shap` package)."
    )
    shap_sample_size: int | None = Field(
        default=None, description="Rows of the test split SHAP explains (seeded sample; default 200)."
    )

    def overrides(self) -> dict[str, Any]:
        """The fields the user set, as spec overrides."""
        data = self.model_dump()
        if self.business_values is not None:
            data["business_values"] = self.business_values.model_dump()
        return {k: v for k, v in data.items() if v is not None}
