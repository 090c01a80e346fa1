"""Asset values: what flows between assets (through the IO manager), run ids included."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.ml.cv import Refit
from experiments_dagster.ml.metrics import Predictions, predict
from experiments_dagster.ml.search_study import SearchSettings, TrialResult
from experiments_dagster.ml.training import FoldResult, TrainTestSplit


@dataclass(frozen=True)
class DataFingerprint:
    """Identity of one dataset version: the file's sha256, size, shape and schema."""

    dataset: str
    version: str
    path: str
    sha256: str
    size_bytes: int
    rows: int
    columns: int
    schema: dict[str, str]


@dataclass(frozen=True)
class RunRef:
    """The MLflow parent run that an experiment attempt logs into."""

    run_id: str
    experiment_id: str
    url: str


@dataclass(frozen=True)
class Splits:
    """Train/test split with the resolved spec; opens the experiment's parent run."""

    run: RunRef
    spec: ExperimentSpec
    task: str
    split: TrainTestSplit
    rows_dropped: int
    fingerprint: DataFingerprint


@dataclass(frozen=True)
class SearchResult:
    """Outcome of the optional hyperparameter search; ``best_params`` feed the models."""

    run: RunRef
    enabled: bool
    best_params: dict[str, Any] = field(default_factory=dict)
    best_score: float | None = None
    metric: str | None = None
    trials: list[Any] = field(default_factory=list)
    trial_run_ids: list[str] = field(default_factory=list)
    history_png: bytes = b""


@dataclass(frozen=True)
class SearchPlan:
    """One search of an experiment attempt: its study and how many worker steps share it.

    ``shared``: the study lives in the shared Optuna storage ($EXPERIMENTS_OPTUNA_STORAGE, whose
    URL, a secret, is never part of this value); otherwise each worker step keeps it in memory.
    """

    run: RunRef
    enabled: bool
    study_name: str = ""
    settings: SearchSettings | None = None
    workers: int = 1
    shared: bool = False


@dataclass(frozen=True)
class SearchSlot:
    """The work of one ``search_worker`` step: slot ``slot`` of ``plan.workers``."""

    plan: SearchPlan
    slot: int


@dataclass(frozen=True)
class WorkerTrials:
    """What one worker step ran: its trials and the nested MLflow run of each (by trial number)."""

    slot: SearchSlot
    trials: list[TrialResult] = field(default_factory=list)
    trial_run_ids: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldModels:
    """One fitted pipeline per CV fold, with the nested MLflow run each was logged to; and the
    refit on the whole train split that ``final_model`` scores and logs (``None`` in values stored
    before the refit moved into the CV's pool: ``final_model`` then fits it itself)."""

    run: RunRef
    folds: list[FoldResult]
    fold_run_ids: list[str]
    refit: Refit | None = None
    training_seconds: float = 0.0  # wall time of the pool that trained the folds and the refit


@dataclass(frozen=True)
class CvMetrics:
    """Per-fold metric table and its mean/std summary."""

    run: RunRef
    table: pd.DataFrame
    summary: dict[str, float]


@dataclass(frozen=True)
class FinalModel:
    """The pipeline fitted on the whole train split, and where it was logged."""

    run: RunRef
    pipeline: Pipeline
    model_id: str
    model_uri: str
    pickle_sha256: str
    metrics: dict[str, float]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    registered_name: str = ""
    registered_version: str = ""
    predictions: Predictions | None = None  # on the test split, as scored by `final_model`

    def test_predictions(self, X_test: pd.DataFrame, task: str) -> Predictions:
        """The predictions on the test split that `final_model` scored; values stored before they
        were kept predict again."""
        return self.predictions if self.predictions is not None else predict(self.pipeline, X_test, task)


@dataclass(frozen=True)
class EvaluationPlots:
    """Names of the logged figures and the feature importance behind one of them."""

    run: RunRef
    artifacts: list[str]
    importance: pd.Series
    importance_method: str
