"""``search_trials`` as a graph: plan, one mapped worker step per slot, collect; the same search as
before with one worker; a clear refusal of several workers without a shared study storage; and two
worker steps sharing one study in a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import optuna
import pytest
import yaml
from mlflow import MlflowClient

from experiments_dagster.defs import defs
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.definitions import ASSETS
from experiments_dagster.defs.partitions import DATASET_VERSIONS, GROUP, dataset_versions
from experiments_dagster.defs.resources import Coordination
from experiments_dagster_tests.pgserver import throwaway_postgres

pytestmark = pytest.mark.slow
KEY = "iris/v1"
SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 5},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
}
SEARCH = {"enabled": True, "n_trials": 4, "seed": 3, "cv_folds": 3, "space": SPACE}
# What the one-step search_trials asset found on iris/v1 with SEARCH, before the graph.
PREVIOUS_TRIALS = [
    ({"learning_rate": 0.0888829774460008, "max_depth": 4}, "COMPLETE"),
    ({"learning_rate": 0.0439704101134468, "max_depth": 4}, "COMPLETE"),
    ({"learning_rate": 0.224500391902461, "max_depth": 5}, "COMPLETE"),
    ({"learning_rate": 0.028101518072450034, "max_depth": 2}, "PRUNED"),
]
PREVIOUS_BEST = {"learning_rate": 0.0888829774460008, "max_depth": 4}
PREVIOUS_BEST_SCORE = 0.9313714625525386
STEPS = ("search_trials.plan_search", "search_trials.search_worker[0]", "search_trials.collect_search")


class SharedStudyCoordination(Coordination):
    """Coordination whose study storage is a given URL (a test's own PostgreSQL), not the profile's."""

    optuna_storage: str

    def study_storage(self) -> str | None:
        return self.optuna_storage


def with_search(data_dir, **search) -> None:
    path = data_dir / "iris" / "experiment.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["search"] = {**SEARCH, **search}
    path.write_text(yaml.safe_dump(spec))


def materialize(instance, resources, selection=None) -> dg.ExecuteInProcessResult:
    if KEY not in instance.get_dynamic_partitions(DATASET_VERSIONS):
        instance.add_dynamic_partitions(DATASET_VERSIONS, [KEY])
    return dg.materialize(
        [*ASSETS, *LOGGING_CHECKS],
        instance=instance,
        resources=resources,
        partition_key=KEY,
        selection=selection,
        raise_on_error=False,
    )


def all_runs(client: MlflowClient) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def parent_of(client: MlflowClient):
    (parent,) = [r for r in all_runs(client) if "mlflow.parentRunId" not in r.data.tags]
    return parent


def trial_runs(client: MlflowClient, parent) -> list:
    runs = [
        r
        for r in all_runs(client)
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and "trial.number" in r.data.tags
    ]
    return sorted(runs, key=lambda r: int(r.data.tags["trial.number"]))


def test_search_trials_is_a_graph_of_plan_worker_and_collect_ops():
    asset = defs.resolve_assets_def("search_trials")
    graph = asset.node_def
    assert isinstance(graph, dg.GraphDefinition)
    nodes = {n.name: n for n in graph.nodes}
    assert set(nodes) == {"plan_search", "search_worker", "collect_search"}
    assert nodes["plan_search"].definition.output_defs[0].is_dynamic  # one output per worker slot
    assert [i.name for i in nodes["search_worker"].definition.input_defs] == ["splits", "slot"]
    assert [i.name for i in nodes["collect_search"].definition.input_defs] == ["splits", "results"]
    for node in nodes.values():  # each logs: the failure hook closes what a failed step left RUNNING
        assert [h.name for h in node.hook_defs] == ["mlflow_runs_failed"]
        assert node.definition.required_resource_keys == {"mlflow", "coordination"}
    assert asset.keys == {dg.AssetKey("search_trials")}
    assert asset.partitions_def == dataset_versions
    assert asset.group_names_by_key[dg.AssetKey("search_trials")] == GROUP
    assert dg.AssetKey("search_trials") in defs.resolve_assets_def("fold_models").dependency_keys
    assert dg.AssetKey("search_trials") in defs.resolve_assets_def("final_model").dependency_keys


def test_one_worker_runs_the_whole_graph_and_finds_the_previous_best(
    instance, resources, data_dir, tracking_uri
):
    with_search(data_dir, workers=1)
    result = materialize(instance, resources)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert set(STEPS) <= {e.step_key for e in result.get_step_success_events()}
    value = result.output_for_node("search_trials")
    assert [(t.params, t.state) for t in value.trials] == PREVIOUS_TRIALS
    assert value.best_params == PREVIOUS_BEST
    assert value.best_score == pytest.approx(PREVIOUS_BEST_SCORE)

    client = MlflowClient(tracking_uri)
    parent = parent_of(client)
    assert parent.info.status == "FINISHED"
    params = parent.data.params
    assert params["search.workers"] == "1" and params["search.storage"] == "in-memory"
    assert params["search.study"] == f"iris-{parent.info.run_id}"
    assert params["best.max_depth"] == "4" and params["max_depth"] == "4"  # the models use the best
    trials = trial_runs(client, parent)
    assert [r.info.run_name for r in trials] == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert {r.data.tags["trial.slot"] for r in trials} == {"0"}
    assert all(r.data.tags["worker"] == parent.data.tags["worker"] for r in trials)  # one process here
    assert not [r for r in all_runs(client) if r.info.status == "RUNNING"]
    (materialized,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("search_trials")
    ]
    assert materialized.metadata["workers"].value == 1
    assert materialized.metadata["best_params"].value == PREVIOUS_BEST


def test_several_workers_without_a_shared_storage_fail_naming_the_setting(
    instance, resources, data_dir, tracking_uri
):
    with_search(data_dir, workers=2)
    result = materialize(instance, resources)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "search_trials.plan_search"
    message = failure.step_failure_data.error.cause.message
    assert "ExperimentInputError" in failure.step_failure_data.error.cause.cls_name
    assert "search.workers=2" in message and "EXPERIMENTS_OPTUNA_STORAGE is not set" in message
    assert "EXPERIMENTS_PROFILE=production" in message and "make stack-up" in message
    parent = parent_of(MlflowClient(tracking_uri))
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error.asset"] == "search_trials"
    assert "EXPERIMENTS_OPTUNA_STORAGE" in parent.data.tags["error.message"]
    assert not [r for r in all_runs(MlflowClient(tracking_uri)) if r.info.status == "RUNNING"]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "splits" in materialized and not materialized & {"search_trials", "fold_models"}


def test_a_run_that_ends_with_the_search_leaves_the_parent_failed_incomplete(
    instance, resources, data_dir, tracking_uri
):
    """``splits`` sees the graph's ``search_trials.*`` steps as search_trials planned; the collect
    step, the search's last, then ends the parent: never RUNNING, never FINISHED."""
    with_search(data_dir, n_trials=2)
    result = materialize(instance, resources, selection=["raw_data", "data_hash", "splits", "search_trials"])
    assert result.success
    parent = parent_of(MlflowClient(tracking_uri))
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error.type"] == "IncompleteAttempt"
    assert parent.data.tags["error.asset"] == "search_trials"
    assert parent.data.tags["error.message"].startswith(
        "this Dagster run ended after search_trials; not materialized: fold_models, cv_metrics, "
        "final_model, evaluation_plots, repro_manifest."
    )


def test_a_search_whose_trials_keep_failing_fails_its_run_clearly(
    instance, resources, data_dir, tracking_uri
):
    """An impossible space with `n_trials: 1000`: the search stops after 10 failed trials in a row,
    its step fails saying so, and no MLflow run is left RUNNING."""
    with_search(data_dir, n_trials=1000, space={"max_depth": {"type": "choice", "choices": ["deep"]}})
    result = materialize(instance, resources)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "search_trials.collect_search"
    message = str(failure.step_failure_data.error.cause or failure.step_failure_data.error)
    assert (
        "The search stopped: its last 10 trials failed in a row (at most 10 may), 10 trials ran." in message
    )
    client = MlflowClient(tracking_uri)
    parent = parent_of(client)
    assert parent.info.status == "FAILED" and len(trial_runs(client, parent)) == 10
    assert "RUNNING" not in {r.info.status for r in all_runs(client)}


@pytest.fixture(scope="module")
def optuna_url() -> Iterator[str]:
    with throwaway_postgres() as pg:
        yield pg.pg_url("optuna")


def test_two_worker_steps_share_one_postgresql_study(instance, resources, data_dir, tracking_uri, optuna_url):
    """In process the worker steps run one after another: the first runs every trial, the second
    finds the count reached. The study, the trial runs and the checks agree."""
    with_search(data_dir, workers=2, n_trials=5)
    result = materialize(
        instance, {**resources, "coordination": SharedStudyCoordination(optuna_storage=optuna_url)}
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    workers = [
        e for e in result.get_step_success_events() if e.step_key.startswith("search_trials.search_worker[")
    ]
    assert sorted(e.step_key for e in workers) == [
        "search_trials.search_worker[0]",
        "search_trials.search_worker[1]",
    ]
    client = MlflowClient(tracking_uri)
    parent = parent_of(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.storage"] == "postgresql"
    assert parent.data.params["search.workers"] == "2"
    study = optuna.load_study(study_name=parent.data.params["search.study"], storage=optuna_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == len(study.trials) == 5
    trials = trial_runs(client, parent)
    assert [int(r.data.tags["trial.number"]) for r in trials] == [t.number for t in study.trials]
    value = result.output_for_node("search_trials")
    assert value.best_score == study.best_value
    best = study.trials[int(parent.data.params["search.best_trial"])]
    assert best.value == study.best_value and best.params == value.best_params
    assert parent.data.params["search.trials_run"] == "5"
