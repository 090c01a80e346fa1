"""A challenger must beat a trivial baseline on the same split to be promoted."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.defs.registry_assets import champion_alias_matches_decision
from experiments_dagster.experiment.promotion import beats
from experiments_dagster.experiment.registry import baseline_score
from experiments_dagster.experiment.values import DataFingerprint, RunRef, Splits
from experiments_dagster.ml.training import TrainTestSplit


def _splits(task: str, y_train: list, y_test: list, **spec) -> Splits:
    X_train, X_test = (
        pd.DataFrame({"x": np.arange(len(y_train))}),
        pd.DataFrame({"x": np.arange(len(y_test))}),
    )
    split = TrainTestSplit(X_train, X_test, pd.Series(y_train), pd.Series(y_test))
    fp = DataFingerprint("d", "v1", "d/v1.csv", "0" * 64, 1, len(y_train) + len(y_test), 2, {})
    return Splits(RunRef("r", "0", "u"), ExperimentSpec(dataset="d", target="y", **spec), task, split, 0, fp)


def test_baseline_scores_of_the_dummy_models() -> None:
    binary = _splits("binary", ["a", "a", "a", "b"], ["a", "b", "a", "b"])
    assert baseline_score(binary, "roc_auc") == (0.5, "DummyClassifier(strategy='prior')")
    assert baseline_score(binary, "accuracy")[0] == 0.5  # always "a"
    multi = _splits("multiclass", ["a", "a", "b", "c"], ["a", "b", "c", "a"])
    assert baseline_score(multi, "f1_macro")[0] == pytest.approx((2 * 0.5 * 1.0 / 1.5) / 3)
    regression = _splits("regression", [1.0, 2.0, 3.0], [2.0, 4.0])
    assert baseline_score(regression, "rmse") == (
        pytest.approx(np.sqrt((0 + 4) / 2)),
        "DummyRegressor(strategy='mean')",
    )


def test_beats_is_strict_and_knows_lower_is_better() -> None:
    assert beats(0.6, 0.5, "roc_auc") and not beats(0.5, 0.5, "roc_auc") and not beats(0.4, 0.5, "roc_auc")
    assert beats(1.0, 2.0, "rmse") and not beats(2.0, 2.0, "rmse") and not beats(3.0, 2.0, "rmse")


def _promotion(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "model_promotion"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.slow
def test_a_model_no_better_than_the_baseline_is_not_promoted(instance, resources, tracking_uri):
    key = "iris/v1"
    instance.add_dynamic_partitions(DATASET_VERSIONS, [key])

    def materialize(**config):
        return dg.materialize(
            [*ASSETS, *LOGGING_CHECKS, champion_alias_matches_decision],
            instance=instance,
            resources=resources,
            partition_key=key,
            raise_on_error=False,
            run_config={"ops": {"splits": {"config": config}}},
        )

    client = MlflowClient(tracking_uri)
    trivial = materialize(
        model="sklearn.dummy.DummyClassifier", hyperparameters={"strategy": "most_frequent"}
    )
    assert trivial.success
    decision = trivial.output_for_node("model_promotion")
    run = client.get_run(client.get_model_version("iris_model", "1").run_id)
    baseline = run.data.metrics["baseline_f1_macro"]
    assert decision.baseline_score == baseline
    assert baseline == pytest.approx(decision.challenger_score)  # both always answer the majority class
    assert not decision.promoted and decision.champion_version is None
    assert decision.reason == (
        f"challenger f1_macro={decision.challenger_score:.6g} does not beat the baseline "
        f"DummyClassifier(strategy='prior') f1_macro={baseline:.6g} on iris@v1 test split"
    )
    assert _promotion(trivial)["decision"] == "not promoted"
    assert client.get_model_version("iris_model", "1").tags["promotion.baseline_score"] == f"{baseline:.6g}"
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("iris_model", "champion")

    real = materialize()  # experiment.yaml's XGBoost
    assert real.success
    decision = real.output_for_node("model_promotion")
    assert decision.promoted and decision.reason == "first complete model of iris_model"
    assert decision.challenger_score > decision.baseline_score == pytest.approx(baseline)
    assert str(client.get_model_version_by_alias("iris_model", "champion").version) == "2"
