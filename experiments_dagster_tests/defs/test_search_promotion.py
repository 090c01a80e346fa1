"""Hyperparameter search as nested runs, and champion/challenger promotion in the registry."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from experiments_dagster.core.spec import ParamSpace
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.defs.registry_assets import champion_alias_matches_decision
from experiments_dagster.experiment.registry import decide_promotion
from experiments_dagster.ml.search import run_search
from experiments_dagster.tracking import standard
from experiments_dagster.tracking.standard import Requirement
from experiments_dagster.tracking.store import Tracker

pytestmark = pytest.mark.slow
KEY = "iris/v1"
SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 5},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
}


def materialize(instance, resources, run_config=None):
    if KEY not in instance.get_dynamic_partitions(DATASET_VERSIONS):
        instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    return dg.materialize(
        [*ASSETS, *LOGGING_CHECKS, champion_alias_matches_decision],
        instance=instance,
        resources=resources,
        partition_key=KEY,
        run_config=run_config,
        raise_on_error=False,
    )


def splits_config(**overrides) -> dict:
    return {"ops": {"splits": {"config": overrides}}}


def test_search_logs_every_trial_and_the_final_model_uses_the_best(
    instance, resources, data_dir, tracking_uri
):
    spec_path = data_dir / "iris" / "experiment.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["search"] = {"enabled": True, "n_trials": 4, "seed": 3, "cv_folds": 3, "space": SPACE}
    spec_path.write_text(yaml.safe_dump(spec))
    result = materialize(instance, resources)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("iris").experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = sorted(
        (r for r in runs if "trial.number" in r.data.tags), key=lambda r: int(r.data.tags["trial.number"])
    )
    assert [r.info.run_name for r in trials] == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    assert all(r.info.status == status[r.data.tags["trial.state"]] for r in trials)
    for r in trials:  # per-fold scores as a metric history, and the mean
        history = client.get_metric_history(r.info.run_id, "f1_macro")
        assert [m.step for m in history] == list(range(len(history))) and len(history) >= 1
    complete = [r for r in trials if r.data.tags["trial.state"] == "COMPLETE"]
    best = max(complete, key=lambda r: r.data.metrics["cv_f1_macro_mean"])
    params = parent.data.params
    assert params["best.max_depth"] == best.data.params["max_depth"]
    assert params["best.learning_rate"] == best.data.params["learning_rate"]
    assert parent.data.metrics["best_score"] == pytest.approx(best.data.metrics["cv_f1_macro_mean"])
    # The final model (and the folds) trained with the best params: its logged hyperparameters.
    assert params["max_depth"] == best.data.params["max_depth"]
    assert params["learning_rate"] == best.data.params["learning_rate"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"search_trials.csv", "optimization_history.png"} <= artifacts
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search_trials.csv", str(data_dir)))
    assert table["trial"].tolist() == [0, 1, 2, 3]
    assert set(table["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}


def _search(seed: int):
    data = load_iris(as_frame=True)
    X, y = data.data, pd.Series(np.asarray(data.target_names)[data.target])
    space = {k: ParamSpace(**v) for k, v in SPACE.items()}
    return run_search(
        X,
        y,
        task="multiclass",
        model="xgboost",
        base_hyperparameters={"n_estimators": 20},
        space=space,
        metric="f1_macro",
        direction="maximize",
        n_trials=5,
        timeout_seconds=None,
        seed=seed,
        folds=3,
        cv_seed=1,
        model_seed=1,
    )


def test_same_seed_reproduces_the_trial_sequence():
    first, again, other = _search(7), _search(7), _search(8)
    assert [(t.params, t.state, t.score) for t in first.trials] == [
        (t.params, t.state, t.score) for t in again.trials
    ]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]
    assert first.best_params == again.best_params


def _decision(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "model_promotion"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


# Weak but better than the trivial baseline a challenger must beat (a dummy model is never promoted).
WEAK = {"model": "sklearn.tree.DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}}


def test_promotion_needs_completeness_and_a_better_score(instance, resources, tracking_uri, monkeypatch):
    client = MlflowClient(tracking_uri)
    name = "iris_model"

    first = _decision(materialize(instance, resources, splits_config(**WEAK)))  # v1: a weak model
    assert first["decision"] == "promoted" and first["reason"] == "first complete model of iris_model"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    # v2: a strong model whose log is incomplete is never promoted, whatever its score.
    with monkeypatch.context() as m:
        m.setattr(
            standard,
            "STANDARD",
            (*standard.STANDARD, Requirement("png", "calibration.png", "evaluation_plots")),
        )
        incomplete = materialize(instance, resources)
    assert "model_promotion" not in {
        e.asset_key.to_user_string() for e in incomplete.get_asset_materialization_events()
    }
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    v2_run = client.get_model_version(name, "2").run_id
    assert client.get_run(v2_run).info.status == "FAILED"

    better = _decision(materialize(instance, resources))  # v3: strong and complete
    assert better["decision"] == "promoted" and "beats champion v1" in better["reason"]
    assert better["challenger_score"] > better["champion_score"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert client.get_model_version(name, "3").tags["stage"] == "production"
    assert client.get_model_version(name, "1").tags["stage"] == "archived"
    assert client.get_run(client.get_model_version(name, "3").run_id).data.tags["stage"] == "production"

    worse = _decision(materialize(instance, resources, splits_config(**WEAK)))  # v4: weak again
    assert worse["decision"] == "not promoted" and "does not beat champion v3" in worse["reason"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    v4 = client.get_model_version(name, "4")
    assert v4.tags["promotion.decision"] == "not promoted" and v4.tags["stage"] == "candidate"

    # Asked directly, the decision for the incomplete v2 says why it is not promoted.
    decision = decide_promotion(
        Tracker(tracking_uri), name, "2", v2_run, incomplete.output_for_node("splits")
    )
    assert not decision.promoted
    assert decision.reason.startswith("challenger run is incomplete (status FINISHED")
    assert "artifact manifest.json" in decision.reason
