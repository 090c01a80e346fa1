"""Finding the MLflow run of a Dagster run by dagster-mlflow's tag or ours."""

from __future__ import annotations

from mlflow import MlflowClient

from experiments_dagster.tracking.run_lookup import pick_run, runs_of_dagster_run


def test_runs_found_by_either_tag_and_the_assets_own_run_picked(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    exp_a, exp_b = client.create_experiment("a"), client.create_experiment("b")
    theirs = client.create_run(exp_a, tags={"dagster_run_id": "r1"}).info.run_id
    ours = client.create_run(exp_b, tags={"dagster.run_id": "r2", "dagster.asset_key": "splits"}).info.run_id
    fold = client.create_run(
        exp_b, tags={"dagster.run_id": "r2", "dagster.asset_key": "fold_models", "mlflow.parentRunId": ours}
    ).info.run_id
    client.create_run(exp_a, tags={"dagster_run_id": "other"})

    found = runs_of_dagster_run(client, "r1")
    assert [r.info.run_id for r in found] == [theirs]
    assert pick_run(found, "user_model").info.run_id == theirs
    r2 = runs_of_dagster_run(client, "r2")
    assert {r.info.run_id for r in r2} == {ours, fold}
    assert pick_run(r2, "fold_models").info.run_id == fold  # named by its asset
    assert pick_run(r2, "cv_metrics").info.run_id == ours  # else the top-level run
    assert pick_run(runs_of_dagster_run(client, "nope"), "x") is None
