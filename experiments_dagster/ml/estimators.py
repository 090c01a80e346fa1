"""Building the estimator named by a spec, and a classifier wrapper that encodes labels."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.preprocessing import LabelEncoder

from experiments_dagster.core.cpus import usable_cpus
from experiments_dagster.core.errors import ExperimentInputError

# Defaults for the XGBoost estimator; any of them can be overridden by the spec. Its ``n_jobs``
# is not one of them: it comes from the CPUs this process may use (``threads_per_fit``).
XGBOOST_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 5,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "tree_method": "hist",
}


def threads_per_fit(requested: Any, fits_at_once: int = 1, cpus: int | None = None) -> Any:
    """Threads for one fit while ``fits_at_once`` fits share ``cpus`` (the caller's count of
    usable CPUs; None: ``core.cpus.usable_cpus()``, for callers that pass none yet).

    ``requested`` is the spec's ``n_jobs``: ``None`` (unset) or ``-1``-style "all" get the
    fit's share; a positive count is a cap. One fit per core beats several multi-threaded fits
    fighting for the same cores: XGBoost's threads wait for each other at every tree level.
    Anything else (not an int) is left for the estimator to judge.
    """
    share = max(1, (usable_cpus() if cpus is None else cpus) // max(1, fits_at_once))
    if requested is None:
        return share
    if not isinstance(requested, int) or isinstance(requested, bool):
        return requested
    return share if requested <= 0 else min(requested, share)


def estimator_class(model: str, task: str) -> type:
    """``xgboost`` picks XGBClassifier/XGBRegressor; anything else is an import path."""
    if model == "xgboost":
        import xgboost

        return xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier
    module_name, _, class_name = model.rpartition(".")
    if not module_name:
        raise ExperimentInputError(
            f"Model {model!r} is neither 'xgboost' nor an import path such as "
            "'sklearn.ensemble.RandomForestClassifier'."
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ExperimentInputError(
            f"Model {model!r} cannot be imported ({exc}); check the spelling of the import path."
        ) from exc
    if not (inspect.isclass(cls) and issubclass(cls, BaseEstimator)):
        raise ExperimentInputError(f"Model {model!r} is not a scikit-learn estimator class.")
    return cls


def build_estimator(
    model: str,
    task: str,
    hyperparameters: dict[str, Any],
    random_state: int,
    fits_at_once: int = 1,
    cpus: int | None = None,
) -> BaseEstimator:
    """An unfitted estimator with the spec's hyperparameters and the model seed.

    Its ``n_jobs`` (XGBoost's, or any estimator's the spec sets) is the fit's share of the usable
    CPUs (``cpus``, see ``threads_per_fit``) while ``fits_at_once`` fits run beside each other,
    never more than the spec asks.
    """
    cls = estimator_class(model, task)
    params = {**(XGBOOST_DEFAULTS if model == "xgboost" else {}), **hyperparameters}
    if task != "regression" and model == "xgboost":
        params.setdefault("eval_metric", "logloss" if task == "binary" else "mlogloss")
    try:
        accepted = cls().get_params()
    except TypeError as exc:
        raise ExperimentInputError(
            f"Model {model!r} cannot be built without arguments ({exc}); choose an estimator whose "
            "constructor has defaults for every argument."
        ) from exc
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ExperimentInputError(
            f"Hyperparameters {unknown} are not accepted by {cls.__name__}; it accepts {sorted(accepted)}."
        )
    if "random_state" in accepted and "random_state" not in hyperparameters:
        params["random_state"] = random_state
    if "n_jobs" in accepted and (model == "xgboost" or "n_jobs" in hyperparameters):
        params["n_jobs"] = threads_per_fit(hyperparameters.get("n_jobs"), fits_at_once, cpus)
    return cls(**params)


def model_type(estimator: BaseEstimator) -> str:
    """Import path of the estimator's class, e.g. ``xgboost.sklearn.XGBClassifier``."""
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


class EncodedTargetClassifier(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` on integer-encoded labels and answers in the original labels.

    XGBoost needs classes 0..K-1; users' targets are often strings.
    """

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> EncodedTargetClassifier:
        """Encode ``y``, fit a clone of ``estimator``; returns self."""
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        self.estimator_ = clone(self.estimator).fit(X, self.label_encoder_.transform(y))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, in the original label space."""
        return self.label_encoder_.inverse_transform(np.asarray(self.estimator_.predict(X)).astype(int))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns ordered as ``classes_``."""
        return self.estimator_.predict_proba(X)
