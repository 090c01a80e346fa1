"""The experiment specification: ``experiment.yaml`` merged with run-config overrides."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.ml.dataset import Task

SPEC_FILE = "experiment.yaml"
DEFAULT_MODEL = "xgboost"


class BusinessValues(BaseModel):
    """Value in USD of each outcome of a binary decision; summed as ``revenue_impact_usd``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tp: float = 0.0
    fp: float = 0.0
    tn: float = 0.0
    fn: float = 0.0


class Seeds(BaseModel):
    """Every random seed of an experiment; each one left unset defaults to the spec's ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    split: int | None = None
    cv: int | None = None
    model: int | None = None
    numpy: int | None = None


class ParamSpace(BaseModel):
    """Search space of one hyperparameter: ``int``/``float`` range (optionally log) or ``choice``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "choice" and not self.choices:
            raise ValueError("a 'choice' space needs a non-empty `choices` list")
        if self.type != "choice" and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"an '{self.type}' space needs `low` < `high`")
        return self


# The metric a search optimizes by default, and the metrics that are better when lower.
DEFAULT_SEARCH_METRIC = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mape", "log_loss", "brier_score", "median_ae"})


class SearchSpec(BaseModel):
    """Optional hyperparameter search (Optuna TPE, seeded, median pruning over CV folds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    n_trials: int = Field(default=20, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    seed: int | None = None
    metric: str | None = None
    cv_folds: int | None = Field(default=None, ge=2)
    pruning: bool = True
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    workers: int = Field(default=1, ge=1, le=64, description="parallel search steps sharing one Optuna study")

    @model_validator(mode="after")
    def _space_when_enabled(self) -> SearchSpec:
        if self.enabled and not self.space:
            raise ValueError("search.enabled needs a `space` with at least one hyperparameter")
        return self


def search_metric(search: SearchSpec, task: str) -> tuple[str, str]:
    """(metric, direction) the search optimizes for a task."""
    metric = search.metric or DEFAULT_SEARCH_METRIC[task]
    return metric, "minimize" if metric in LOWER_IS_BETTER else "maximize"


class ExperimentSpec(BaseModel):
    """Everything that defines one experiment on one dataset version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dataset: str
    target: str
    task: Task | None = None
    model: str = DEFAULT_MODEL
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    cv_folds: int = Field(default=5, ge=2)
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 42
    seeds: Seeds | None = None
    thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    positive_class: str | None = None
    business_values: BusinessValues = Field(default_factory=BusinessValues)
    version: str = "v0"
    stage: str = "development"
    tags: dict[str, str] = Field(default_factory=dict)
    experiment_name: str | None = None
    search: SearchSpec = Field(default_factory=SearchSpec)
    registered_model_name: str | None = None
    promotion_metric: str | None = None
    shap: bool = False
    shap_sample_size: int = Field(default=200, ge=10, le=5000)

    @field_validator("shap")
    @classmethod
    def _shap_installed(cls, value: bool) -> bool:
        # Said when the experiment is set up, not after training: the option needs the package.
        if value and importlib.util.find_spec("shap") is None:
            raise ValueError(
                "the optional package `shap` is not installed: `pip install shap` in this "
                "environment, or set `shap: false`"
            )
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_unit_interval(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 < t < 1.0 for t in value):
            raise ValueError("thresholds must be a non-empty list of numbers in (0, 1)")
        return tuple(sorted(set(value)))

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive_class_as_text(cls, value: Any) -> Any:
        # Classes are matched as text, so `positive_class: 1` in YAML means "1".
        return None if value is None else str(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_values_as_text(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @property
    def resolved_seeds(self) -> Seeds:
        """Seeds with any unset one taken from ``seed``."""
        given = self.seeds.model_dump() if self.seeds else {}
        return Seeds(
            **{k: self.seed if given.get(k) is None else given[k] for k in ("split", "cv", "model", "numpy")}
        )

    @property
    def model_name(self) -> str:
        """Registered model name: ``registered_model_name`` or ``<dataset>_model``."""
        return self.registered_model_name or f"{self.dataset}_model"

    @property
    def experiment(self) -> str:
        """MLflow experiment name: ``experiment_name`` or the dataset name."""
        return self.experiment_name or self.dataset


def read_spec_file(dataset_dir: Path) -> dict[str, Any]:
    """The raw mapping in ``<dataset_dir>/experiment.yaml``."""
    path = dataset_dir / SPEC_FILE
    if not path.is_file():
        raise ExperimentInputError(
            f"{path} is missing. Each dataset folder needs an experiment.yaml with at least "
            "`target: <column>`."
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ExperimentInputError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExperimentInputError(f"{path} must be a mapping of settings, got {type(raw).__name__}.")
    return raw


def resolve_spec(dataset: str, dataset_dir: Path, overrides: dict[str, Any]) -> ExperimentSpec:
    """experiment.yaml, then every override that is not None, validated as one spec."""
    merged = {**read_spec_file(dataset_dir), "dataset": dataset}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ExperimentSpec.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ExperimentInputError(
            f"Experiment settings for {dataset!r} ({dataset_dir / SPEC_FILE} plus run config) "
            f"are invalid: {problems}."
        ) from exc
