"""experiments_dagster.defs.completeness_checks on a user's asset that logs through dagster-mlflow (the example)."""

from __future__ import annotations

import importlib.util
import os

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs.completeness_checks import mlflow_completeness_checks, standard_items

EXAMPLE = PROJECT_ROOT / "examples" / "dagster_mlflow_user" / "definitions.py"


def _example():
    spec = importlib.util.spec_from_file_location("dagster_mlflow_user_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standard_subset_by_name_and_unknown_names() -> None:
    items = standard_items("binary", ["model_type", "confusion_matrix.png"])
    assert {(r.kind, r.name) for r in items} == {
        ("param", "model_type"),
        ("hyperparameters", "model_type"),
        ("png", "confusion_matrix.png"),
    }
    assert len(standard_items("regression")) > 20
    with pytest.raises(
        ExperimentInputError, match=r"\['roc_curve.jpg'\] name no item .* confusion_matrix.png"
    ):
        standard_items("binary", ["roc_curve.jpg"])
    with pytest.raises(ExperimentInputError, match="task 'ranking' is not one of"):
        mlflow_completeness_checks("x", task="ranking")


@pytest.mark.slow
def test_example_check_green_when_complete_and_red_naming_the_confusion_matrix(instance) -> None:
    example = _example()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])

    def run(log_confusion_matrix: bool) -> tuple[dg.ExecuteInProcessResult, dg.AssetCheckEvaluation]:
        result = dg.materialize(
            [example.user_model, *example.user_model_checks],
            instance=instance,
            resources=example.defs.resources,
            run_config={"ops": {"user_model": {"config": {"log_confusion_matrix": log_confusion_matrix}}}},
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return result, evaluation

    try:
        first, green = run(True)
        second, red = run(False)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    assert green.check_name == "user_model_mlflow_logged_completely"
    assert green.passed and green.metadata["problems"].value == 0
    assert green.metadata["items_checked"].value == 11  # model_type twice (param, hyperparameters)
    assert not red.passed and red.severity == dg.AssetCheckSeverity.ERROR
    assert red.metadata["missing_or_malformed"].value == ["png confusion_matrix.png: missing"]
    # Each check audited the MLflow run its own materialization logged to (found by the tag
    # dagster-mlflow writes), and those runs hold what the check says.
    for result, evaluation in ((first, green), (second, red)):
        logged = result.asset_materializations_for_node("user_model")[0].metadata["mlflow_run_id_logged"]
        assert evaluation.metadata["mlflow_run_id"].value == logged.value
        mlflow_run = client.get_run(logged.value)
        assert mlflow_run.data.tags["dagster_run_id"] == result.run_id
        names = {a.path for a in client.list_artifacts(logged.value)}
        assert ("confusion_matrix.png" in names) is (evaluation is green)
    assert green.metadata["mlflow_run_id"].value != red.metadata["mlflow_run_id"].value


LETTERS = dg.StaticPartitionsDefinition(["a", "b"])


def test_partitioned_asset_logged_with_our_tags_is_audited_per_partition(instance, tracking_uri) -> None:
    @dg.asset(partitions_def=LETTERS)
    def scored(context) -> None:  # unannotated: Dagster refuses string annotations (__future__)
        """Logs with MlflowClient and this project's tags; partition b forgets f1."""
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("scored") or client.create_experiment("scored")
        experiment_id = getattr(experiment, "experiment_id", experiment)
        run = client.create_run(
            experiment_id, tags={"dagster.run_id": context.run_id, "dagster.asset_key": "scored"}
        )
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        if context.partition_key == "a":
            client.log_metric(run.info.run_id, "f1", 0.8)
        client.set_terminated(run.info.run_id)

    checks = mlflow_completeness_checks(
        scored, task="binary", standard=["accuracy", "f1"], tracking_uri=tracking_uri
    )
    verdicts = {}
    for key in ("a", "b"):
        result = dg.materialize([scored, *checks], instance=instance, partition_key=key)
        (evaluation,) = result.get_asset_check_evaluations()
        verdicts[key] = evaluation
        run = MlflowClient(tracking_uri).get_run(evaluation.metadata["mlflow_run_id"].value)
        assert run.data.tags["dagster.run_id"] == result.run_id
    assert verdicts["a"].passed and verdicts["a"].metadata["items_checked"].value == 2
    assert not verdicts["b"].passed
    assert verdicts["b"].metadata["missing_or_malformed"].value == ["metric f1: missing"]
    a_run, b_run = (verdicts[k].metadata["mlflow_run_id"].value for k in ("a", "b"))
    assert a_run != b_run  # each partition's check audited its own materialization's run
