"""The preprocessor's JSON state: bit-for-bit scikit-learn, the skops fallback, the pyfunc model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.utils import environment as mlflow_environment
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer

from experiments_dagster.ml.preprocess import MAX_CATEGORIES, build_preprocessor
from experiments_dagster.ml.training import make_pipeline
from experiments_dagster.tracking import model_io
from experiments_dagster.tracking.model_io import save_pyfunc_model, write_model_artifacts
from experiments_dagster.tracking.preprocessor_state import StatePreprocessor, export_state

CITIES = [f"city{i:02d}" for i in range(45)]  # more than MAX_CATEGORIES: an infrequent group


def mixed_frame(n: int, seed: int) -> pd.DataFrame:
    """Every kind build_preprocessor handles, with NaN and None in the gaps."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(3, 1, len(CITIES))
    return pd.DataFrame(
        {
            "x": np.where(rng.random(n) < 0.2, np.nan, rng.normal(3, 2, n)),
            "count": rng.integers(0, 50, n),
            "constant": np.full(n, 7.0),  # zero variance: scikit-learn scales by 1
            "city": rng.choice(CITIES, n, p=weights / weights.sum()).astype(object),
            "color": rng.choice(np.array(["red", "green", "blue", None, np.nan], dtype=object), n),
            "flag": rng.random(n) < 0.4,
            "always": np.ones(n, dtype=bool),  # single-valued boolean: not dropped, one column
        }
    )


def state_preprocessor(ct: ColumnTransformer) -> StatePreprocessor:
    """Through JSON, as the model stores it."""
    state = export_state(ct)
    assert state is not None
    return StatePreprocessor(json.loads(json.dumps(state, allow_nan=False)))


def assert_exact(ct: ColumnTransformer, X: pd.DataFrame) -> np.ndarray:
    expected = ct.transform(X)
    got = state_preprocessor(ct).transform(X)
    assert got.dtype == expected.dtype == np.float64
    assert np.array_equal(got, expected, equal_nan=True)
    return got


def test_state_reproduces_sklearn_on_training_rows_bit_for_bit():
    X = mixed_frame(600, 0)
    ct = build_preprocessor(X).fit(X)
    encoder = ct.named_transformers_["cat"].named_steps["onehot"]
    assert encoder.infrequent_categories_[0] is not None  # city: grouped
    assert encoder.infrequent_categories_[1] is None  # color: red/green/blue/missing
    out = assert_exact(ct, X)
    # num (3) + city (MAX_CATEGORIES, the last one infrequent) + color (4) + flag (1) + always (1)
    assert out.shape == (600, 3 + MAX_CATEGORIES + 4 + 1 + 1)
    assert np.all(out[:, 2] == 0.0)  # constant column: (7 - 7) / 1


def test_missing_numbers_take_the_median_and_nan_and_none_become_missing():
    X = mixed_frame(300, 1)
    ct = build_preprocessor(X).fit(X)
    rows = pd.concat([X.head(1)] * 2, ignore_index=True)
    rows.loc[0, "x"], rows.loc[1, "x"] = np.nan, np.nanmedian(X["x"])
    rows["color"] = pd.Series([None, np.nan], dtype=object)
    out = assert_exact(ct, rows)
    assert out[0, 0] == out[1, 0]
    missing = 3 + MAX_CATEGORIES + ["blue", "green", "missing", "red"].index("missing")
    assert out[0, missing] == out[1, missing] == 1.0


@pytest.mark.filterwarnings("ignore:Found unknown categories:UserWarning")
def test_unseen_categories_go_to_the_infrequent_column_or_to_all_zeros():
    X = mixed_frame(600, 2)
    ct = build_preprocessor(X).fit(X)
    new = mixed_frame(50, 3)
    new["city"] = ["atlantis"] * 25 + list(new["city"][25:])
    new["color"] = ["purple"] * 10 + list(new["color"][10:])
    new["always"] = np.arange(50) % 2 == 0  # False never seen at fit: ignored
    out = assert_exact(ct, new)
    city = out[:, 3 : 3 + MAX_CATEGORIES]
    assert np.all(city[:25, -1] == 1.0) and np.all(city[:25].sum(axis=1) == 1.0)
    color = out[:, 3 + MAX_CATEGORIES : 3 + MAX_CATEGORIES + 4]
    assert np.all(color[:10] == 0.0) and np.all(color[10:].sum(axis=1) == 1.0)
    assert np.array_equal(out[:, -1], new["always"].to_numpy(dtype=float))


@pytest.mark.filterwarnings("ignore:Found unknown categories:UserWarning")
def test_boolean_columns_binary_and_single_valued():
    X = pd.DataFrame({"flag": [True, False, True, True], "always": [False] * 4, "x": [1.0, 2.0, 3.0, 4.0]})
    ct = build_preprocessor(X).fit(X)
    new = pd.DataFrame({"flag": [False, True], "always": [False, True], "x": [0.0, 5.0]})
    out = assert_exact(ct, new)
    assert out[:, 1:].tolist() == [[0.0, 1.0], [1.0, 0.0]]  # flag keeps True; always keeps False


@pytest.mark.parametrize(
    "columns",
    [["x", "count", "constant"], ["city", "color"], ["flag", "always"]],
    ids=["numeric", "categorical", "boolean"],
)
def test_one_kind_of_column_only(columns: list[str]):
    X = mixed_frame(400, 4)[columns]
    ct = build_preprocessor(X).fit(X)
    assert_exact(ct, X)
    assert_exact(ct, mixed_frame(40, 5)[columns])


def test_column_missing_everywhere_at_fit_is_dropped_as_sklearn_does():
    X = mixed_frame(100, 6).assign(empty=np.nan)
    ct = build_preprocessor(X).fit(X)
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        out = assert_exact(ct, X)
    assert out.shape[1] == ct.transform(X).shape[1]
    assert "empty" not in export_state(ct)["numeric"]["columns"]


def test_infinity_is_refused_like_sklearn():
    X = mixed_frame(50, 7)
    ct = build_preprocessor(X).fit(X)
    bad = X.assign(x=np.inf)
    with pytest.raises(ValueError, match="infinity"):
        ct.transform(bad)
    with pytest.raises(ValueError, match="infinity"):
        state_preprocessor(ct).transform(bad)


@pytest.mark.parametrize(
    "make_preprocessor",
    [
        lambda X: ColumnTransformer([("num", SimpleImputer(), ["x", "count"])], remainder="passthrough"),
        lambda X: build_preprocessor(X).set_params(num__impute__strategy="mean"),
        lambda X: build_preprocessor(X).set_params(cat__onehot__handle_unknown="error"),
        lambda X: build_preprocessor(X).set_params(remainder="passthrough"),
    ],
    ids=["other-structure", "mean-imputation", "unknown-error", "passthrough"],
)
def test_unsupported_structures_export_none(make_preprocessor):
    X = mixed_frame(200, 8)
    assert export_state(make_preprocessor(X).fit(X)) is None


def test_float32_numbers_export_none():
    X = mixed_frame(200, 8)[["x", "constant"]].astype(np.float32)
    ct = build_preprocessor(X).fit(X)
    assert ct.transform(X).dtype == np.float32  # scikit-learn computes in float32 here
    assert export_state(ct) is None


# --- the pyfunc model -------------------------------------------------------------------------


def _frames(task: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    X = mixed_frame(400, 10)
    signal = X["x"].fillna(3) + (X["city"] < "city10") * 2 + X["flag"]
    labels = {
        "regression": signal,
        "binary": pd.Series(np.where(signal > 4.5, "yes", "no")),
        "multiclass": pd.Series(np.select([signal < 3, signal < 6], ["lo", "mid"], "hi")),
    }
    test = mixed_frame(60, 11)
    test.loc[:4, "city"] = "atlantis"  # unseen at fit
    return X, labels[task], test


def _saved_model(tmp_path: Path, task: str, model: str = "xgboost") -> tuple[object, Path, pd.DataFrame]:
    X, y, test = _frames(task)
    params = {"n_estimators": 15} if model == "xgboost" else {}
    pipeline = make_pipeline(X, task, model, params, 0).fit(X, y)
    path = tmp_path / "model"
    save_pyfunc_model(pipeline, test, path, X_train=X)
    return pipeline, path, test


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("binary", "xgboost"),
        ("regression", "xgboost"),
        ("multiclass", "sklearn.linear_model.LogisticRegression"),
    ],
)
def test_pyfunc_model_with_state_predicts_exactly_like_the_pipeline(tmp_path: Path, task: str, model: str):
    pipeline, path, test = _saved_model(tmp_path, task, model)

    meta = json.loads((path / "artifacts" / "meta.json").read_text())
    assert meta["preprocessor_format"] == "state-json"
    assert {"preprocessor.json", "preprocessor_state.py"} <= {p.name for p in (path / "artifacts").iterdir()}
    # skops is required only where a skops file is written: the scikit-learn estimator here
    assert ("skops==" in (path / "requirements.txt").read_text()) == (model != "xgboost")

    loaded = mlflow.pyfunc.load_model(str(path))
    np.testing.assert_array_equal(np.asarray(loaded.predict(test)), pipeline.predict(test))
    if task != "regression":
        proba = loaded.predict(test, params={"predict_method": "predict_proba"})
        assert list(proba.columns) == [str(c) for c in pipeline.classes_]
        np.testing.assert_array_equal(proba.to_numpy(), pipeline.predict_proba(test))


def test_unsupported_preprocessor_falls_back_to_skops_and_loads(tmp_path: Path):
    X, y, test = _frames("binary")
    pipeline = make_pipeline(X, "binary", "xgboost", {"n_estimators": 15}, 0)
    pipeline.set_params(preprocess__num__impute__strategy="mean").fit(X, y)
    path = tmp_path / "model"
    save_pyfunc_model(pipeline, test, path, X_train=X)

    meta = json.loads((path / "artifacts" / "meta.json").read_text())
    assert meta["preprocessor_format"] == "skops" and meta["preprocessor_trusted_types"] is not None
    assert (path / "artifacts" / "preprocessor.skops").exists()
    assert not (path / "artifacts" / "preprocessor_state.py").exists()
    assert "skops==" in (path / "requirements.txt").read_text()
    loaded = mlflow.pyfunc.load_model(str(path))
    np.testing.assert_array_equal(np.asarray(loaded.predict(test)), pipeline.predict(test))
    proba = loaded.predict(test, params={"predict_method": "predict_proba"})
    np.testing.assert_array_equal(proba.to_numpy(), pipeline.predict_proba(test))


def test_a_state_that_differs_from_sklearn_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    X, y, test = _frames("regression")
    pipeline = make_pipeline(X, "regression", "xgboost", {"n_estimators": 5}, 0).fit(X, y)
    exact = StatePreprocessor.transform
    monkeypatch.setattr(
        StatePreprocessor, "transform", lambda self, frame: np.nextafter(exact(self, frame), 1)
    )
    write_model_artifacts(pipeline, tmp_path, [test, X])
    assert json.loads((tmp_path / "meta.json").read_text())["preprocessor_format"] == "skops"
    assert (tmp_path / "preprocessor.skops").exists()


def test_without_samples_nothing_is_verified_so_skops_is_used(tmp_path: Path):
    X, y, _ = _frames("regression")
    pipeline = make_pipeline(X, "regression", "xgboost", {"n_estimators": 5}, 0).fit(X, y)
    artifacts = write_model_artifacts(pipeline, tmp_path, [])
    assert Path(artifacts["preprocessor"]).name == "preprocessor.skops"


def test_requirement_mismatch_check_is_skipped_during_our_save_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[list[str]] = []

    def recorder(requirements: list[str]) -> None:
        calls.append(requirements)

    monkeypatch.setattr(mlflow_environment, "warn_dependency_requirement_mismatches", recorder)
    _saved_model(tmp_path, "regression")
    assert calls == []
    assert mlflow_environment.warn_dependency_requirement_mismatches is recorder  # restored
    with pytest.raises(RuntimeError), model_io._requirement_mismatch_check_skipped():
        raise RuntimeError("restored on errors too")
    assert mlflow_environment.warn_dependency_requirement_mismatches is recorder
    mlflow_environment._process_pip_requirements([], pip_requirements=["numpy"])
    assert calls and "numpy" in calls[0]  # outside our save, MLflow's check runs as before


def test_an_mlflow_without_the_check_is_left_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(mlflow_environment, "warn_dependency_requirement_mismatches")
    with model_io._requirement_mismatch_check_skipped():
        entered = True
    assert entered and not hasattr(mlflow_environment, "warn_dependency_requirement_mismatches")


@pytest.mark.slow
def test_loading_a_state_model_does_not_import_skops(tmp_path: Path):
    _, path, _ = _saved_model(tmp_path, "binary")
    code = (
        "import sys, mlflow.pyfunc, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({str(path)!r})\n"
        "print('skops.io' in sys.modules, 'sklearn.utils._testing' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False"]
