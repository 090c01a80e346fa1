"""The tracker: batching within MLflow's limits, immutable params, truthful status."""

from __future__ import annotations

import pytest

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import artifact_root_for
from experiments_dagster.tracking.store import Tracker


def _run(tracker: Tracker, name: str = "r") -> str:
    return tracker.start_run(tracker.experiment_id("exp"), name, {"dagster.run_id": "d1"})


def test_experiment_is_created_once_with_artifacts_beside_the_sqlite_store(
    tracker: Tracker, tracking_uri: str
):
    first = tracker.experiment_id("exp")
    assert tracker.experiment_id("exp") == first
    location = tracker.client.get_experiment(first).artifact_location
    assert location == f"{artifact_root_for(tracking_uri)}/exp"
    assert location.startswith("file:///") and "/mlflow/artifacts/" in location


def test_params_beyond_one_batch_are_all_logged(tracker: Tracker):
    run_id = _run(tracker)
    tracker.log_params(run_id, {f"p{i}": i for i in range(250)})
    params = tracker.client.get_run(run_id).data.params
    assert len(params) == 250 and params["p249"] == "249"


def test_identical_params_are_skipped_and_conflicts_refused_with_the_fix(tracker: Tracker):
    run_id = _run(tracker)
    tracker.log_params(run_id, {"a": 1, "b": "x"})
    tracker.log_params(run_id, {"a": 1, "c": 2})
    assert tracker.client.get_run(run_id).data.params == {"a": "1", "b": "x", "c": "2"}
    with pytest.raises(ExperimentInputError, match=r"a: logged '1', now '5'.*Re-materialize from `splits`"):
        tracker.log_params(run_id, {"a": 5})


def test_long_param_values_are_truncated_not_rejected(tracker: Tracker):
    run_id = _run(tracker)
    tracker.log_params(run_id, {"long": "x" * 7000})
    value = tracker.client.get_run(run_id).data.params["long"]
    assert len(value) == 6000 and value.endswith("...[truncated]")


def test_metrics_beyond_one_batch_are_all_logged(tracker: Tracker):
    run_id = _run(tracker)
    tracker.log_metrics(run_id, {f"m{i}": i / 2 for i in range(1500)})
    metrics = tracker.client.get_run(run_id).data.metrics
    assert len(metrics) == 1500 and metrics["m1499"] == 749.5


def test_activity_marks_failed_with_asset_type_and_message(tracker: Tracker):
    run_id = _run(tracker)
    with pytest.raises(KeyError), tracker.activity(run_id, "final_model", finish=False):
        raise KeyError("missing column")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.asset"] == "final_model"
    assert run.data.tags["error.type"] == "KeyError"
    assert "missing column" in run.data.tags["error.message"]


def test_activity_keeps_an_open_run_running_and_restores_a_finished_one(tracker: Tracker):
    run_id = _run(tracker)
    with tracker.activity(run_id, "splits", finish=False):
        pass
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
    with tracker.activity(run_id, "repro_manifest", finish=True):
        pass
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    with tracker.activity(run_id, "evaluation_plots", finish=False):
        assert tracker.client.get_run(run_id).info.status == "RUNNING"
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


def test_deleted_run_is_refused_with_the_fix(tracker: Tracker):
    run_id = _run(tracker)
    tracker.client.delete_run(run_id)
    with pytest.raises(ExperimentInputError, match="re-materialize from `splits`"):
        tracker.reopen(run_id)


def test_nested_run_points_at_its_parent(tracker: Tracker):
    parent = _run(tracker, "parent")
    child = tracker.start_run(tracker.experiment_id("exp"), "fold-0", {}, parent_run_id=parent)
    tags = tracker.client.get_run(child).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["mlflow.runName"] == "fold-0"


def test_registration_uses_the_trackers_store_not_mlflows_global(tracker: Tracker, monkeypatch, tmp_path):
    """MLflow's registry resolves ``models:/<id>`` through the process-global URI; we never rely on
    it nor change it: with the global pointing elsewhere, registration lands in the tracker's store."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from experiments_dagster.experiment.registry import CHALLENGER, register_challenger

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    run_id = _run(tracker, "parent")
    model = tracker.client.create_logged_model(
        tracker.client.get_run(run_id).info.experiment_id, name="m", source_run_id=run_id
    )
    tracker.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)

    version = register_challenger(tracker, "reg_model", model.model_id, run_id, {"k": "v"})

    mv = tracker.client.get_model_version_by_alias("reg_model", CHALLENGER)
    assert (version, mv.run_id, mv.tags["k"]) == ("1", run_id, "v")
    assert mv.source == model.artifact_location
    assert mlflow.get_tracking_uri() == elsewhere  # untouched
    assert not (tmp_path / "elsewhere").exists()  # nothing was created in the global store


def test_dataset_input_schema_types_from_a_sample_and_gaps_from_every_row(tracker: Tracker):
    import json

    import numpy as np
    import pandas as pd

    n = 3000
    frame = pd.DataFrame(
        {
            "x": np.arange(n, dtype=float),
            "c": ["a", "b", "c"] * (n // 3),
            "full": np.ones(n),
            "target": [0, 1] * (n // 2),
        }
    )
    frame.loc[2500, "x"] = np.nan  # beyond the schema sample: only a whole-frame check sees it
    frame.loc[10, "c"] = None
    experiment_id = tracker.experiment_id("schema")
    run_id = tracker.start_run(experiment_id, "r", {})
    tracker.log_dataset(run_id, frame, name="d@v1", digest="f" * 64, source="/tmp/d.csv", target="target")

    (inp,) = tracker.client.get_run(run_id).inputs.dataset_inputs
    cols = {c["name"]: c for c in json.loads(inp.dataset.schema)["mlflow_colspec"]}
    assert set(cols) == {"x", "c", "full"}  # the target is not a feature
    assert cols["x"]["type"] == "double" and cols["x"]["required"] is False
    assert cols["c"]["type"] == "string" and cols["c"]["required"] is False
    assert cols["full"]["required"] is True
    assert json.loads(inp.dataset.profile)["num_rows"] == n
