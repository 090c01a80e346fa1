"""The experiment specification: ``experiment.yaml`` merged with run-config overrides."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments_dagster.core.bounded_yaml import load_bounded
from experiments_dagster.core.dataset import Task
from experiments_dagster.core.errors import ExperimentInputError

SPEC_FILE = "experiment.yaml"
DEFAULT_MODEL = "xgboost"
# Upper bounds of a search: trials, hyperparameters searched, values of one `choice` space.
MAX_TRIALS = 1000
MAX_SPACE_PARAMS = 32
MAX_CHOICES = 100


class BusinessValues(BaseModel):
    """Value in USD of each outcome of a binary decision; summed as ``revenue_impact_usd``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tp: float = Field(default=0.0, description="USD per true positive.")
    fp: float = Field(default=0.0, description="USD per false positive.")
    tn: float = Field(default=0.0, description="USD per true negative.")
    fn: float = Field(default=0.0, description="USD per false negative.")


class Seeds(BaseModel):
    """Every random seed of an experiment; each one left unset defaults to the spec's ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    split: int | None = Field(default=None, description="Seed of the train/test split (default: seed).")
    cv: int | None = Field(default=None, description="Seed of the CV folds (default: seed).")
    model: int | None = Field(default=None, description="The estimator's random_state (default: seed).")
    numpy: int | None = Field(default=None, description="numpy's global seed (default: seed).")


class ParamSpace(BaseModel):
    """Search space of one hyperparameter: ``int``/``float`` range (optionally log) or ``choice``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["int", "float", "choice"] = Field(description="int, float or choice.")
    low: float | None = Field(default=None, description="Lower bound of an int/float range.")
    high: float | None = Field(default=None, description="Upper bound of an int/float range.")
    step: float | None = Field(default=None, description="Step of an int/float range (optional).")
    log: bool = Field(default=False, description="Sample an int/float range on a log scale.")
    choices: tuple[Any, ...] | None = Field(
        default=None, max_length=MAX_CHOICES, description=f"Values of a choice space (at most {MAX_CHOICES})."
    )

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
    enabled: bool = Field(default=False, description="Run the search (needs a `space`).")
    n_trials: int = Field(
        default=20,
        ge=1,
        le=MAX_TRIALS,
        description=f"Finished trials (COMPLETE or PRUNED) to run (1-{MAX_TRIALS}).",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Time budget of each worker step, from its start (optional)."
    )
    seed: int | None = Field(default=None, description="Sampler seed (default: the experiment's seed).")
    metric: str | None = Field(
        default=None, description="Metric optimized (default roc_auc / f1_macro / rmse by task)."
    )
    cv_folds: int | None = Field(default=None, ge=2, description="CV folds per trial (default: cv_folds).")
    pruning: bool = Field(default=True, description="Median pruning after each fold.")
    space: dict[str, ParamSpace] = Field(
        default_factory=dict,
        max_length=MAX_SPACE_PARAMS,
        description=f"Search space: hyperparameter name to its range or choices (at most {MAX_SPACE_PARAMS}).",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Parallel search steps sharing one Optuna study (1-64)."
    )

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
    dataset: str = Field(description="Dataset folder name (set from the folder, not from the file).")
    target: str = Field(description="Target column.")
    task: Task | None = Field(
        default=None, description="binary, multiclass or regression (default: inferred from the target)."
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        description="'xgboost' or an estimator import path, e.g. sklearn.ensemble.RandomForestClassifier.",
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Estimator keyword arguments.")
    cv_folds: int = Field(default=5, ge=2, description="CV folds, stratified for classification (default 5).")
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="Held-out test share (default 0.2).")
    seed: int = Field(default=42, description="Seed of split, CV, model and numpy (default 42).")
    seeds: Seeds | None = Field(default=None, description="Seeds set one by one; each unset one is `seed`.")
    thresholds: tuple[float, ...] = Field(
        default=(0.3, 0.5, 0.7), description="Decision thresholds swept for binary tasks, in (0, 1)."
    )
    positive_class: str | None = Field(
        default=None, description="Positive class of a binary task (default: last sorted class)."
    )
    business_values: BusinessValues = Field(
        default_factory=BusinessValues, description="USD per TP/FP/TN/FN, summed into revenue_impact_usd."
    )
    version: str = Field(default="v0", description="`version` tag of the MLflow run.")
    stage: str = Field(default="development", description="`stage` tag of the MLflow run.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags.")
    experiment_name: str | None = Field(
        default=None, description="MLflow experiment (default: dataset name)."
    )
    search: SearchSpec = Field(
        default_factory=SearchSpec, description="Hyperparameter search (Optuna); off by default."
    )
    registered_model_name: str | None = Field(
        default=None, description="Model Registry name (default: <dataset>_model)."
    )
    promotion_metric: str | None = Field(
        default=None, description="Metric a challenger must beat the champion on (default by task)."
    )
    retrain_on_change: bool = Field(
        default=False,
        description="The sensor retrains this dataset's versions when experiment.yaml changes (else it only reports them).",
    )
    shap: bool = Field(
        default=False,
        description="Log a SHAP summary of the test split (needs the optional `shap` package).",
    )
    shap_sample_size: int = Field(
        default=200, ge=10, le=5000, description="Rows of the test split SHAP explains (seeded sample)."
    )

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


# Keys whose settings are merged one by one with experiment.yaml's (other values replace it).
SECTIONS = frozenset({"seeds", "search", "business_values"})


def read_spec_file(dataset_dir: Path) -> dict[str, Any]:
    """The raw mapping in ``<dataset_dir>/experiment.yaml``."""
    path = dataset_dir / SPEC_FILE
    if not path.is_file():
        raise ExperimentInputError(
            f"{path} is missing. Each dataset folder needs an experiment.yaml with at least "
            "`target: <column>`."
        )
    # At most MAX_BYTES, no anchors or aliases, at most MAX_DEPTH levels: refused before it is built.
    raw = load_bounded(path) or {}
    if not isinstance(raw, dict):
        raise ExperimentInputError(f"{path} must be a mapping of settings, got {type(raw).__name__}.")
    return raw


def resolve_spec(dataset: str, dataset_dir: Path, overrides: dict[str, Any]) -> ExperimentSpec:
    """experiment.yaml, then every override that is not None, validated as one spec."""
    merged = {**read_spec_file(dataset_dir), "dataset": dataset}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            # A launchpad that sets `search.enabled` keeps the file's `search.space`.
            value = {**merged[key], **{k: v for k, v in value.items() if v is not None}}
        merged[key] = value
    try:
        return ExperimentSpec.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ExperimentInputError(
            f"Experiment settings for {dataset!r} ({dataset_dir / SPEC_FILE} plus run config) "
            f"are invalid: {problems}."
        ) from exc
