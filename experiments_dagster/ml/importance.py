"""Feature importance with real feature names after preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.preprocess import bounded_feature_name
from experiments_dagster.ml.training import estimator_of


def feature_importance(
    pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, seed: int, n_repeats: int = 5
) -> tuple[pd.Series, str]:
    """(importance per transformed feature, sorted descending; method used).

    Native ``feature_importances_`` or ``|coef_|`` where the estimator has them, otherwise
    permutation importance of the estimator on the transformed features.
    """
    preprocess = pipeline.named_steps["preprocess"]
    names = [bounded_feature_name(str(n)) for n in preprocess.get_feature_names_out()]
    estimator = estimator_of(pipeline)
    if hasattr(estimator, "feature_importances_"):
        values, method = np.asarray(estimator.feature_importances_, dtype=float), "native"
    elif hasattr(estimator, "coef_"):
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=float))
        values, method = np.abs(coef).mean(axis=0), "coefficients"
    else:
        Xt = preprocess.transform(X)
        model_step = pipeline.named_steps["model"]
        result = permutation_importance(model_step, Xt, y, n_repeats=n_repeats, random_state=seed)
        values, method = result.importances_mean, "permutation"
    series = pd.Series(values, index=names, name="importance")
    return series.sort_values(ascending=False), method
