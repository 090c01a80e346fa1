"""A fixed table of estimator classes the audit knows, keyed by the ``model_type`` a run logs.

A run's ``model_type`` param is text anyone who can write to the experiment chose: it is looked
up here and never imported. The table is built from the installed scikit-learn's own list of
estimators (``sklearn.utils.all_estimators``) and XGBoost's scikit-learn classes, each under its
defining path (``sklearn.linear_model._logistic.LogisticRegression``, what this project logs) and
its public path (``sklearn.linear_model.LogisticRegression``).
"""

from __future__ import annotations

import sys
from functools import cache


def _keys(cls: type) -> set[str]:
    name = cls.__qualname__
    keys = {f"{cls.__module__}.{name}"}
    parts = cls.__module__.split(".")
    for depth in range(1, len(parts)):
        public = ".".join(parts[:depth])
        # The class itself (not the run) says which module it came from; only an attribute of a
        # module that is already imported and holds this very class is another key for it.
        module = sys.modules.get(public)
        if module is not None and module.__dict__.get(name) is cls:
            keys.add(f"{public}.{name}")
    return keys


@cache
def known_estimators() -> dict[str, type]:
    """Every ``model_type`` the audit can verify, mapped to its class."""
    from sklearn.utils import all_estimators

    classes: list[type] = [cls for _, cls in all_estimators()]
    try:
        import xgboost
    except ImportError:  # an audit-only install without XGBoost knows scikit-learn's classes
        pass
    else:
        classes += [
            xgboost.XGBClassifier,
            xgboost.XGBRegressor,
            xgboost.XGBRFClassifier,
            xgboost.XGBRFRegressor,
            xgboost.XGBRanker,
        ]
    return {key: cls for cls in classes for key in _keys(cls)}


def hyperparameter_names(model_type: str) -> frozenset[str] | None:
    """The constructor parameters of the known estimator ``model_type`` (None if unknown)."""
    cls = known_estimators().get(model_type)
    if cls is None:
        return None
    try:
        return frozenset(cls().get_params())
    except TypeError:  # a known class with a required argument (meta-estimators)
        return None
