"""Lift, calibration, per-class metrics, example counts, SHAP's optional-package error, and the
cross-check of our test metrics with ``mlflow.models.evaluate`` on the same model and test split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import brier_score_loss

from experiments_dagster.core.dataset import load_table
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.core.spec import resolve_spec
from experiments_dagster.ml import evaluation
from experiments_dagster.ml.metrics import Predictions, positive_label, predict, task_metrics
from experiments_dagster.ml.prepare import prepare_experiment
from experiments_dagster.ml.training import fit_final_model, make_pipeline

DATA = PROJECT_ROOT / "data"


def _binary_preds() -> tuple[np.ndarray, Predictions]:
    y = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
    p_yes = np.array([0.1, 0.9, 0.8, 0.3, 0.4, 0.2, 0.6, 0.7])
    proba = np.column_stack([1 - p_yes, p_yes])
    return y, Predictions(np.where(p_yes >= 0.5, "yes", "no"), proba, np.array(["no", "yes"]))


def test_lift_table_values() -> None:
    truth = np.array([1, 0, 1, 0])
    table = evaluation.lift_table(truth, np.array([0.9, 0.8, 0.7, 0.1]))
    # Top row is a hit: precision 1 over base rate 0.5 = lift 2; all rows: lift 1.
    assert table["lift"].tolist() == pytest.approx([2.0, 1.0, 4 / 3, 1.0])
    assert table["gain"].tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_brier_and_binary_figures() -> None:
    y, preds = _binary_preds()
    expected = brier_score_loss((y == "yes").astype(int), preds.proba[:, 1])
    assert evaluation.brier_score(y, preds, None) == pytest.approx(expected)
    # positive_class "no": the probability of "no" against "no" is the same squared error.
    assert evaluation.brier_score(y, preds, "no") == pytest.approx(expected)
    lift = evaluation.plot_lift_curve(y, preds, "yes")
    calib = evaluation.plot_calibration_curve(y, preds, "yes")
    assert lift.axes[0].get_title() == "Lift curve (test)"
    assert calib.axes[0].get_title() == "Calibration curve (test)"
    assert f"Brier {expected:.4f}" in calib.axes[0].get_legend().get_texts()[0].get_text()


def test_per_class_metrics_table() -> None:
    y = np.array(["a", "a", "b", "b", "c", "c"])
    preds = Predictions(np.array(["a", "b", "b", "b", "c", "a"]), None, np.array(["a", "b", "c"]))
    table = evaluation.per_class_metrics(y, preds)
    assert list(table.index) == ["a", "b", "c"]
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    assert table.loc["b", "precision"] == pytest.approx(2 / 3) and table.loc["b", "recall"] == 1.0
    assert table.loc["a", "recall"] == 0.5 and table["support"].tolist() == [2, 2, 2]


def test_example_counts() -> None:
    assert evaluation.example_counts(80, 20) == {"train_example_count": 80.0, "test_example_count": 20.0}


def test_shap_sample_is_bounded_and_seeded() -> None:
    X = pd.DataFrame({"a": range(500)})
    first, again = evaluation.shap_sample(X, 50, 7), evaluation.shap_sample(X, 50, 7)
    assert len(first) == 50 and first.index.tolist() == again.index.tolist()
    assert evaluation.shap_sample(X, 50, 8).index.tolist() != first.index.tolist()
    assert len(evaluation.shap_sample(X.head(10), 50, 7)) == 10


def test_shap_without_the_package_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lock installs shap (for the tests of its path); a None entry in sys.modules is Python's
    # own way to make a package unimportable (find_spec returns None, import raises ImportError).
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ExperimentInputError, match=r"`shap: true` needs the optional package `shap`"):
        evaluation.require_shap()
    with pytest.raises(ExperimentInputError, match=r"shap: .*optional package `shap` is not installed"):
        resolve_spec("iris", DATA / "iris", {"shap": True})
    assert resolve_spec("iris", DATA / "iris", {"shap": False}).shap is False


# Our metric name -> the name mlflow.models.evaluate's default evaluator logs it under.
MLFLOW_NAMES = {
    "binary": {
        "accuracy": "accuracy_score",
        "precision": "precision_score",
        "recall": "recall_score",
        "f1": "f1_score",
        "roc_auc": "roc_auc",
        "log_loss": "log_loss",
    },
    # MLflow averages multiclass precision/recall/f1 by support ("weighted").
    "multiclass": {
        "accuracy": "accuracy_score",
        "precision_weighted": "precision_score",
        "recall_weighted": "recall_score",
        "f1_weighted": "f1_score",
        "log_loss": "log_loss",
    },
    "regression": {"rmse": "root_mean_squared_error", "mae": "mean_absolute_error", "r2": "r2_score"},
}


@pytest.mark.slow  # three fits, three MLflow models logged and evaluated: ~10 s each
@pytest.mark.parametrize(
    ("dataset", "version"), [("breast_cancer", "v1"), ("iris", "v1"), ("diabetes", "v1")]
)
def test_metrics_agree_with_mlflow_evaluate(tmp_path: Path, dataset: str, version: str) -> None:
    path = next((DATA / dataset).glob(f"{version}.*"))
    # A scikit-learn model, so MLflow's evaluator can reach predict_proba through the sklearn flavor.
    spec = resolve_spec(dataset, DATA / dataset, {"model": "sklearn.ensemble.RandomForestClassifier"})
    if dataset == "diabetes":
        spec = resolve_spec(dataset, DATA / dataset, {"model": "sklearn.ensemble.RandomForestRegressor"})
    spec = spec.model_copy(update={"hyperparameters": {"n_estimators": 20, "max_depth": 4}})
    prepared = prepare_experiment(load_table(path), spec, path)
    task, s = prepared.task, prepared.split
    fit = fit_final_model(s, task, spec, spec.hyperparameters)
    ours = task_metrics(
        task, np.asarray(s.y_test), predict(fit.pipeline, s.X_test, task), spec.positive_class
    )
    ours |= evaluation.example_counts(len(s.y_train), len(s.y_test))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # An experiment of its own: the default one keeps artifacts in ./mlruns of the working directory.
    experiment = MlflowClient(uri).create_experiment("cross_check", (tmp_path / "artifacts").as_uri())
    data = s.X_test.assign(**{spec.target: s.y_test.to_numpy()})
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(
            fit.pipeline,
            name="model",
            serialization_format="cloudpickle",
            input_example=s.X_test.head(3),
            pip_requirements=["scikit-learn"],  # no inference: it re-imports the model in a subprocess
        )
        config = {"log_model_explainability": False}
        if task == "binary":
            config["pos_label"] = positive_label(fit.pipeline.classes_, spec.positive_class)
        result = mlflow.models.evaluate(
            info.model_uri,
            data,
            targets=spec.target,
            model_type="regressor" if task == "regression" else "classifier",
            evaluator_config=config,
        )
    theirs = result.metrics
    for name, their_name in MLFLOW_NAMES[task].items():
        assert ours[name] == pytest.approx(theirs[their_name], abs=1e-9, rel=0), name
    assert ours["test_example_count"] == theirs["example_count"]
    logged = MlflowClient(uri).get_run(run.info.run_id).data.metrics
    assert logged["example_count"] == len(s.y_test)


@pytest.mark.skipif(
    importlib.util.find_spec("shap") is None, reason="the optional package shap is not installed"
)
def test_shap_importance_ranks_the_informative_column_first() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.normal(size=200), "noise": rng.normal(size=200)})
    y = pd.Series(np.where(X["signal"] > 0, "yes", "no"))
    spec = resolve_spec("iris", DATA / "iris", {"model": "sklearn.linear_model.LogisticRegression"})
    pipeline = make_pipeline(X, "binary", spec.model, {}, 0).fit(X, y)
    sample = evaluation.shap_sample(X, 50, 3)
    importance = evaluation.shap_importance(pipeline, sample, "binary", 3)
    assert importance.index.tolist() == ["signal", "noise"] and importance["signal"] > 5 * importance["noise"]
    again = evaluation.shap_importance(pipeline, sample, "binary", 3)
    assert again.tolist() == pytest.approx(importance.tolist())  # seeded
    assert evaluation.plot_shap_summary(importance).axes[0].get_title().startswith("SHAP summary")
