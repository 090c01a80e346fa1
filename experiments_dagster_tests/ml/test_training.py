"""Preprocessing, splitting, the final fit and feature importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from experiments_dagster.core.dataset import load_table
from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.ml.estimators import EncodedTargetClassifier
from experiments_dagster.ml.importance import feature_importance
from experiments_dagster.ml.metrics import predict, task_metrics
from experiments_dagster.ml.preprocess import column_kinds
from experiments_dagster.ml.training import (
    estimator_of,
    final_metrics,
    fit_final_model,
    make_pipeline,
    split_dataset,
)

FAST_XGB = {"n_estimators": 5, "max_depth": 2, "n_jobs": 1}


def _mixed_frame(n: int = 40) -> tuple[pd.DataFrame, pd.Series]:
    """Numeric with NaN, categorical strings with NaN, a string target tied to the number."""
    num = np.arange(n, dtype=float)
    num[[3, 17]] = np.nan
    cat = np.array(["red", "green", "blue", np.nan] * (n // 4), dtype=object)
    X = pd.DataFrame({"num": num, "colour": cat})
    y = pd.Series(np.where(np.arange(n) < n / 2, "low", "high"), name="target")
    return X, y


def test_column_kinds_separates_numeric_categorical_and_boolean() -> None:
    X = pd.DataFrame({"i": [1, 2], "f": [0.5, np.nan], "s": ["a", "b"], "b": [True, False]})
    assert column_kinds(X) == (["i", "f"], ["s"], ["b"])


def test_make_pipeline_handles_nan_in_numeric_and_categorical() -> None:
    X, y = _mixed_frame()
    pipe = make_pipeline(X, "binary", "xgboost", FAST_XGB, seed=3).fit(X, y)

    pre = pipe.named_steps["preprocess"]
    names = pre.get_feature_names_out().tolist()
    assert names == [
        "num__num",
        "cat__colour_blue",
        "cat__colour_green",
        "cat__colour_missing",
        "cat__colour_red",
    ]
    Xt = pre.transform(X)
    assert Xt.shape == (40, 5)
    assert not np.isnan(Xt).any()
    # Missing numbers take the median of the seen values, then are scaled like the rest.
    imputer = pre.named_transformers_["num"].named_steps["impute"]
    assert imputer.statistics_[0] == np.nanmedian(X["num"])
    scaled = pre.named_transformers_["num"].named_steps["scale"]
    filled = X["num"].fillna(np.nanmedian(X["num"]))
    np.testing.assert_allclose(Xt[:, 0], (filled - filled.mean()) / filled.std(ddof=0))
    # Each missing category lands in the "missing" column.
    missing_rows = X["colour"].isna().to_numpy()
    np.testing.assert_array_equal(Xt[:, 3], missing_rows.astype(float))
    assert scaled.n_features_in_ == 1
    # The classifier answers in the original labels, with unseen categories ignored.
    new = pd.DataFrame({"num": [1.0, np.nan], "colour": ["purple", np.nan]})
    assert set(pipe.predict(new)) <= {"low", "high"}
    assert isinstance(pipe.named_steps["model"], EncodedTargetClassifier)
    assert pipe.named_steps["model"].classes_.tolist() == ["high", "low"]


def test_missing_categories_read_from_parquet_are_imputed_like_csv(tmp_path: Path) -> None:
    """pandas reads a missing string as NaN from csv but None from parquet: both are missing."""
    frame = pd.DataFrame(
        {"num": [1.0, 2.0, 3.0, 4.0], "colour": ["red", np.nan, "blue", "red"], "y": list("abab")}
    )
    frame.to_csv(tmp_path / "v1.csv", index=False)
    frame.to_parquet(tmp_path / "v2.parquet")
    names = {}
    for file in ("v1.csv", "v2.parquet"):
        loaded = load_table(tmp_path / file)
        X, y = loaded.drop(columns=["y"]), loaded["y"]
        pipe = make_pipeline(X, "binary", "sklearn.linear_model.LogisticRegression", {}, seed=0).fit(X, y)
        pre = pipe.named_steps["preprocess"]
        names[file] = pre.get_feature_names_out().tolist()
        assert "cat__colour_missing" in names[file], f"{file}: {names[file]}"
        missing_col = names[file].index("cat__colour_missing")
        np.testing.assert_array_equal(pre.transform(X)[:, missing_col], [0.0, 1.0, 0.0, 0.0])
    assert (
        names["v1.csv"]
        == names["v2.parquet"]
        == [
            "num__num",
            "cat__colour_blue",
            "cat__colour_missing",
            "cat__colour_red",
        ]
    )


def test_make_pipeline_with_boolean_feature_column(tmp_path: Path) -> None:
    """A True/False csv column is read as bool and encoded as one 0/1 column."""
    path = tmp_path / "v1.csv"
    path.write_text("num,flag,y\n" + "".join(f"{i},{i % 3 == 0},{'ab'[i % 2]}\n" for i in range(12)))
    frame = load_table(path)
    assert frame["flag"].dtype == bool
    X, y = frame.drop(columns=["y"]), frame["y"]
    pipe = make_pipeline(X, "binary", "sklearn.linear_model.LogisticRegression", {}, seed=0).fit(X, y)
    names = pipe.named_steps["preprocess"].get_feature_names_out().tolist()
    assert names[0] == "num__num"
    assert [n for n in names if "flag" in n] == ["bool__flag_True"]
    flag_col = pipe.named_steps["preprocess"].transform(X)[:, names.index("bool__flag_True")]
    assert flag_col.tolist() == [float(v) for v in X["flag"]]
    assert set(pipe.predict(X)) <= {"a", "b"}


def test_make_pipeline_regression_is_not_wrapped() -> None:
    X, _ = _mixed_frame()
    pipe = make_pipeline(X, "regression", "xgboost", FAST_XGB, seed=9)
    model = pipe.named_steps["model"]
    assert isinstance(model, xgboost.XGBRegressor)
    assert model.get_params()["random_state"] == 9
    assert estimator_of(pipe) is model


def test_estimator_of_unwraps_classifier_before_and_after_fit() -> None:
    X, y = _mixed_frame()
    pipe = make_pipeline(X, "binary", "sklearn.linear_model.LogisticRegression", {}, seed=0)
    wrapper = pipe.named_steps["model"]
    assert estimator_of(pipe) is wrapper.estimator
    pipe.fit(X, y)
    assert estimator_of(pipe) is wrapper.estimator_
    assert isinstance(estimator_of(pipe), LogisticRegression)


# --- split_dataset -----------------------------------------------------------------------


def _imbalanced(n_a: int = 32, n_b: int = 8) -> pd.DataFrame:
    ids = np.arange(n_a + n_b)
    return pd.DataFrame({"id": ids, "y": np.where(ids < n_a, "a", "b")})


def test_split_dataset_is_stratified_and_sized() -> None:
    frame = _imbalanced()
    split = split_dataset(frame, "y", "binary", test_size=0.25, seed=1)

    assert (len(split.X_train), len(split.X_test)) == (30, 10)
    assert split.y_test.value_counts().to_dict() == {"a": 8, "b": 2}
    assert split.y_train.value_counts().to_dict() == {"a": 24, "b": 6}
    assert list(split.X_train.columns) == ["id"]
    # Rows stay aligned with their target and the indexes are reset.
    for X, y in ((split.X_train, split.y_train), (split.X_test, split.y_test)):
        assert X.index.tolist() == list(range(len(X)))
        assert y.tolist() == np.where(X["id"] < 32, "a", "b").tolist()
    assert sorted(split.X_train["id"].tolist() + split.X_test["id"].tolist()) == list(range(40))


def test_split_dataset_is_reproducible_per_seed() -> None:
    frame = _imbalanced()
    first = split_dataset(frame, "y", "binary", 0.25, seed=5)
    again = split_dataset(frame, "y", "binary", 0.25, seed=5)
    other = split_dataset(frame, "y", "binary", 0.25, seed=6)
    assert first.X_test["id"].tolist() == again.X_test["id"].tolist()
    assert first.X_test["id"].tolist() != other.X_test["id"].tolist()


def test_split_dataset_regression_sizes() -> None:
    frame = pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50.0) * 1.5})
    split = split_dataset(frame, "y", "regression", test_size=0.3, seed=0)
    assert (len(split.y_train), len(split.y_test)) == (35, 15)
    np.testing.assert_allclose(split.y_test, split.X_test["x"] * 1.5)


# --- feature importance ------------------------------------------------------------------


def test_feature_importance_native_for_xgboost() -> None:
    X, y = _mixed_frame(40)
    pipe = make_pipeline(X, "binary", "xgboost", {"n_estimators": 10, "max_depth": 2, "n_jobs": 1}, 0).fit(
        X, y
    )

    importance, method = feature_importance(pipe, X, y, seed=0)

    assert method == "native"
    names = pipe.named_steps["preprocess"].get_feature_names_out().tolist()
    assert sorted(importance.index) == sorted(names)
    assert any(n.startswith("num__") for n in importance.index)
    assert any(n.startswith("cat__") for n in importance.index)
    raw = estimator_of(pipe).feature_importances_
    for i, name in enumerate(names):
        assert importance[name] == pytest.approx(float(raw[i]))
    assert importance.is_monotonic_decreasing
    assert importance.index[0] == "num__num"  # the target is a threshold on num
    assert importance.name == "importance"


def test_feature_importance_coefficients_for_linear_model() -> None:
    X, y = _mixed_frame(40)
    pipe = make_pipeline(X, "binary", "sklearn.linear_model.LogisticRegression", {}, 0).fit(X, y)
    importance, method = feature_importance(pipe, X, y, seed=0)
    assert method == "coefficients"
    names = pipe.named_steps["preprocess"].get_feature_names_out()
    coef = estimator_of(pipe).coef_[0]
    assert importance.to_dict() == pytest.approx({n: abs(c) for n, c in zip(names, coef, strict=True)})


def test_feature_importance_permutation_for_knn() -> None:
    n = 30
    X = pd.DataFrame({"signal": np.arange(n, dtype=float), "constant": np.ones(n), "kind": ["k"] * n})
    y = pd.Series(np.where(np.arange(n) < 15, "no", "yes"))
    pipe = make_pipeline(X, "binary", "sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 3}, 0).fit(
        X, y
    )
    assert isinstance(estimator_of(pipe), KNeighborsClassifier)

    importance, method = feature_importance(pipe, X, y, seed=4, n_repeats=3)

    assert method == "permutation"
    assert list(importance.index) == ["num__signal", "num__constant", "cat__kind_k"]
    # Shuffling a constant column changes nothing.
    assert importance["num__constant"] == 0.0
    assert importance["cat__kind_k"] == 0.0
    Xt = pipe.named_steps["preprocess"].transform(X)
    direct = permutation_importance(pipe.named_steps["model"], Xt, y, n_repeats=3, random_state=4)
    assert importance["num__signal"] == pytest.approx(direct.importances_mean[0])
    assert importance["num__signal"] > 0.3


# --- the final model ----------------------------------------------------------------------


def test_fit_final_model_fits_the_train_split_and_scores_the_test_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EXPERIMENTS_CPUS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    X, y = _mixed_frame(40)
    split = split_dataset(pd.concat([X, y], axis=1), "target", "binary", 0.25, seed=1)
    spec = ExperimentSpec(dataset="d", target="target", seed=7, positive_class="high", thresholds=(0.4, 0.6))

    fit = fit_final_model(split, "binary", spec, {"n_estimators": 5, "max_depth": 2}, ("accuracy", "roc_auc"))

    assert estimator_of(fit.pipeline).get_params()["n_jobs"] == 3  # alone: every usable CPU
    assert estimator_of(fit.pipeline).get_params()["random_state"] == 7
    direct = make_pipeline(
        split.X_train, "binary", "xgboost", {"n_estimators": 5, "max_depth": 2, "n_jobs": 3}, 7
    )
    direct.fit(split.X_train, split.y_train)
    preds = predict(direct, split.X_test, "binary")
    expected = final_metrics(spec, "binary", split.y_test.to_numpy(), preds, ("accuracy", "roc_auc"))
    assert fit.metrics == expected
    assert {"accuracy", "roc_auc", "precision_threshold_0.4", "test_tp", "revenue_impact_usd"} <= set(
        fit.metrics
    )
    assert not {"f1", "log_loss"} & set(fit.metrics)  # only the metrics asked for, plus the binary extras
    assert fit.fit_seconds > 0
    tp = int(((preds.y_pred == "high") & (split.y_test.to_numpy() == "high")).sum())
    assert fit.metrics["test_tp"] == tp


def test_final_metrics_for_regression_are_the_task_metrics_only() -> None:
    X = pd.DataFrame({"x": np.arange(30.0)})
    y = pd.Series(np.arange(30.0) * 3.0, name="y")
    split = split_dataset(pd.concat([X, y], axis=1), "y", "regression", 0.3, seed=0)
    spec = ExperimentSpec(dataset="d", target="y", task="regression")
    fit = fit_final_model(split, "regression", spec, {"n_estimators": 5, "n_jobs": 1})
    assert set(fit.metrics) == {"rmse", "mae", "r2", "mape"}
    assert fit.metrics["r2"] == pytest.approx(
        task_metrics(
            "regression", split.y_test.to_numpy(), predict(fit.pipeline, split.X_test, "regression")
        )["r2"]
    )
