"""prepare_experiment: clean, infer, check and split before anything is trained or logged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import ExperimentSpec, Seeds
from experiments_dagster.ml import prepare
from experiments_dagster.ml.cv import cross_validate
from experiments_dagster.ml.prepare import prepare_experiment
from experiments_dagster.ml.training import split_dataset

PATH = Path("data/churn/v7.csv")


def _frame() -> pd.DataFrame:
    n = 22
    target = np.array(["stay", "leave"] * (n // 2), dtype=object)
    target[[4, 9]] = np.nan
    return pd.DataFrame({"x": np.arange(n, dtype=float), "plan": ["a", "b"] * (n // 2), "churn": target})


def test_prepare_drops_missing_targets_infers_task_and_splits() -> None:
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, test_size=0.25, seed=8)

    prepared = prepare_experiment(_frame(), spec, PATH)

    assert prepared.rows_dropped == 2
    assert len(prepared.frame) == 20
    assert prepared.frame["churn"].notna().all()
    assert 4.0 not in prepared.frame["x"].tolist() and 9.0 not in prepared.frame["x"].tolist()
    assert prepared.task == "binary"
    assert (len(prepared.split.X_train), len(prepared.split.X_test)) == (15, 5)
    expected = split_dataset(prepared.frame, "churn", "binary", 0.25, seed=8)
    assert prepared.split.X_test["x"].tolist() == expected.X_test["x"].tolist()


def test_prepare_uses_the_split_seed() -> None:
    seeds = Seeds(split=1, cv=2, model=3, numpy=4)
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, seed=99, seeds=seeds)
    prepared = prepare_experiment(_frame(), spec, PATH)
    expected = split_dataset(prepared.frame, "churn", "binary", 0.2, seed=1)
    assert prepared.split.X_test["x"].tolist() == expected.X_test["x"].tolist()


def test_prepare_task_from_spec_beats_inference() -> None:
    frame = pd.DataFrame({"x": np.arange(30.0), "y": [1.0, 2.0, 3.0] * 10})
    inferred = prepare_experiment(frame, ExperimentSpec(dataset="d", target="y"), PATH)
    assert inferred.task == "multiclass"
    forced = prepare_experiment(frame, ExperimentSpec(dataset="d", target="y", task="regression"), PATH)
    assert forced.task == "regression"
    assert len(forced.split.y_test) == 6


def test_prepare_rejects_bad_hyperparameters_before_splitting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_split(*args, **kwargs):
        raise AssertionError("split_dataset must not run when the spec is invalid")

    monkeypatch.setattr(prepare, "split_dataset", no_split)
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=3, hyperparameters={"max_deep": 3})
    with pytest.raises(ExperimentInputError, match=r"\['max_deep'\] are not accepted by XGBClassifier"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_unknown_model() -> None:
    spec = ExperimentSpec(
        dataset="churn", target="churn", cv_folds=3, model="sklearn.tree.DecisionTreeClassifer"
    )
    with pytest.raises(ExperimentInputError, match="cannot be imported"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_missing_target_column() -> None:
    spec = ExperimentSpec(dataset="churn", target="churned", cv_folds=3)
    with pytest.raises(ExperimentInputError, match=re.escape(f"'churned' is not in {PATH}")):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_too_small_class_with_path() -> None:
    spec = ExperimentSpec(dataset="churn", target="churn", cv_folds=10)
    with pytest.raises(ExperimentInputError, match=re.escape(str(PATH)) + ".*lower `cv_folds`"):
        prepare_experiment(_frame(), spec, PATH)


def test_prepare_rejects_test_split_smaller_than_class_count() -> None:
    """Ten classes of three rows pass check_target (cv_folds=2), but a 20% test split has 6 rows.

    prepare_experiment promises every user-fixable problem as an ExperimentInputError.
    """
    frame = pd.DataFrame({"x": np.arange(30.0), "y": [f"c{i}" for i in range(10)] * 3})
    spec = ExperimentSpec(dataset="d", target="y", cv_folds=2)
    with pytest.raises(ExperimentInputError, match=re.escape(str(PATH))):
        prepare_experiment(frame, spec, PATH)


def test_prepare_rejects_train_split_smaller_than_cv_folds() -> None:
    """10 regression rows pass the `2 * cv_folds` check, but test_size=0.6 leaves 4 training rows
    for 5 folds: cross-validation then fails after prepare_experiment said the data was fine."""
    frame = pd.DataFrame({"x": np.arange(10.0), "y": np.linspace(0.0, 1.0, 10)})
    spec = ExperimentSpec(dataset="d", target="y", task="regression", cv_folds=5, test_size=0.6)
    try:
        prepared = prepare_experiment(frame, spec, PATH)
    except ExperimentInputError as exc:
        assert str(PATH) in str(exc)
        return
    split = prepared.split
    folds = cross_validate(
        split.X_train, split.y_train, "regression", "xgboost", {"n_estimators": 2}, spec.cv_folds, 0, 0
    )
    assert len(folds) == spec.cv_folds


def _wide_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "plan": rng.choice(["a", "b"], n), "churn": rng.choice(["p", "q"], n)}
    )


@pytest.mark.parametrize("n_estimators", [-1, 0])
def test_prepare_refuses_xgboost_that_trains_no_trees(
    monkeypatch: pytest.MonkeyPatch, n_estimators: int
) -> None:
    monkeypatch.setattr(prepare, "split_dataset", lambda *a, **k: pytest.fail("split after a refused model"))
    spec = ExperimentSpec(dataset="churn", target="churn", hyperparameters={"n_estimators": n_estimators})
    with pytest.raises(ExperimentInputError) as info:
        prepare_experiment(_wide_frame(), spec, PATH)
    assert str(info.value) == (
        f"Model 'xgboost' with hyperparameters {{'n_estimators': {n_estimators}}} trained no trees on a sample "
        f"of {PATH} (n_estimators={n_estimators}); set `n_estimators` to at least 1."
    )


@pytest.mark.parametrize(
    ("model", "hyperparameters", "named"),
    [
        (
            "xgboost",
            {"max_depth": "deep"},
            "Invalid Parameter format for max_depth expect int but value='deep'",
        ),
        (
            "xgboost",
            {"learning_rate": -1},
            "value -1 for Parameter learning_rate should be greater equal to 0",
        ),
        ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": -1}, "The 'n_estimators' parameter"),
    ],
)
def test_prepare_refuses_invalid_hyperparameter_values(model: str, hyperparameters: dict, named: str) -> None:
    spec = ExperimentSpec(dataset="churn", target="churn", model=model, hyperparameters=hyperparameters)
    with pytest.raises(ExperimentInputError) as info:
        prepare_experiment(_wide_frame(), spec, PATH)
    message = str(info.value)
    assert message.startswith(
        f"Model {model!r} with hyperparameters {hyperparameters} cannot be trained on a 200-row sample of {PATH}: "
    )
    assert named in message


def test_prepare_sample_fit_sees_every_class() -> None:
    """A 6-row class among 2000 rows is still in the validation sample (XGBoost needs every label)."""
    y = pd.Series(["common"] * 1994 + ["rare"] * 6).sample(frac=1, random_state=1).reset_index(drop=True)
    rows = prepare.sample_rows(y, "multiclass", seed=3)
    assert len(rows) <= prepare.SAMPLE_ROWS + 2
    assert set(y.iloc[rows]) == {"common", "rare"}
    assert (y.iloc[rows] == "rare").sum() == 6
    assert len(prepare.sample_rows(pd.Series(np.arange(2000.0)), "regression", seed=3)) == prepare.SAMPLE_ROWS


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (
            "when",
            pd.date_range("2024-01-01", periods=300),
            "Column 'when' of data/churn/v7.csv holds dates or times (datetime64[ns])",
        ),
        ("tags", [[1, 2]] * 300, "Column 'tags' of data/churn/v7.csv holds list values (e.g. row 0)"),
        ("info", [{"a": 1}] * 300, "Column 'info' of data/churn/v7.csv holds dict values (e.g. row 0)"),
        (
            "code",
            [1 if i % 2 else "A1" for i in range(300)],
            "Column 'code' of data/churn/v7.csv mixes number and text values (number at row 1, text at row 0)",
        ),
    ],
)
def test_prepare_refuses_columns_it_cannot_encode(column: str, values, message: str) -> None:
    frame = _wide_frame().assign(**{column: values})
    with pytest.raises(ExperimentInputError) as info:
        prepare_experiment(frame, ExperimentSpec(dataset="churn", target="churn"), PATH)
    assert str(info.value).startswith(message)


def test_a_csv_date_column_is_refused_as_dates(tmp_path) -> None:
    """Arrow's CSV reader gives ISO dates as ``datetime.date`` objects in an object column: the
    refusal talks about dates, not about lists, structs or binary."""
    from experiments_dagster.core.dataset import load_table

    path = tmp_path / "v7.csv"
    frame = _wide_frame().assign(when=[f"2024-01-{1 + i % 28:02d}" for i in range(300)])
    frame.to_csv(path, index=False)
    with pytest.raises(ExperimentInputError) as info:
        prepare_experiment(load_table(path), ExperimentSpec(dataset="churn", target="churn"), path)
    message = str(info.value)
    assert message.startswith(f"Column 'when' of {path} holds dates or times (e.g. 2024-01-01 at row 0)")
    assert "year, month, day of week" in message and "lists, structs" not in message


def test_prepare_refuses_repeated_column_names() -> None:
    frame = pd.concat([_wide_frame(), _wide_frame()[["x"]]], axis=1)
    with pytest.raises(ExperimentInputError, match=re.escape(f"{PATH} has repeated column names ['x']")):
        prepare_experiment(frame, ExperimentSpec(dataset="churn", target="churn"), PATH)


def test_prepare_warns_about_free_text_and_identifier_columns() -> None:
    frame = _wide_frame().assign(note=[f"customer {i} wrote something" for i in range(300)])
    frame["long"] = ["x" * 80 if i % 2 else "y" * 80 for i in range(300)]
    prepared = prepare_experiment(frame, ExperimentSpec(dataset="churn", target="churn"), PATH)
    assert prepared.warnings == (
        f"Column 'note' of {PATH} looks like free text or an identifier (300 distinct values in 300 non-missing "
        "rows): it is one-hot encoded into at most 30 columns, the rarer values grouped as one. Drop it from the "
        "file if it carries no signal.",
        f"Column 'long' of {PATH} looks like free text or an identifier (values 80 characters long on average): "
        "it is one-hot encoded into at most 30 columns, the rarer values grouped as one. Drop it from the file if "
        "it carries no signal.",
    )
    assert (
        prepare_experiment(_wide_frame(), ExperimentSpec(dataset="churn", target="churn"), PATH).warnings
        == ()
    )


def test_prepare_validates_a_big_ensemble_on_a_few_members() -> None:
    """20,000 trees would make the sample fit as slow as the real one (40 s on breast_cancer)."""
    import time

    spec = ExperimentSpec(
        dataset="churn", target="churn", hyperparameters={"n_estimators": 20000, "max_depth": 8}
    )
    start = time.perf_counter()
    prepared = prepare_experiment(_wide_frame(), spec, PATH)
    assert time.perf_counter() - start < 5
    assert prepared.task == "binary" and len(prepared.split.y_train) == 240
