"""The retrain sensor, tick by tick, with build_sensor_context and a real instance."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.defs.resources import ExperimentData
from experiments_dagster.defs.sensors import dataset_version_sensor


@pytest.fixture
def data(tmp_path: Path, data_dir: Path) -> Path:
    root = tmp_path / "sensor-data"
    (root / "iris").mkdir(parents=True)
    shutil.copy(data_dir / "iris" / "experiment.yaml", root / "iris" / "experiment.yaml")
    return root


class Ticker:
    """Evaluates the sensor like the daemon does: cursor carried over, partitions applied."""

    def __init__(self, instance: dg.DagsterInstance, data: Path, **resource: bool) -> None:
        self.instance, self.data, self.cursor, self.resource = instance, data, None, resource

    def tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"data": ExperimentData(data_dir=str(self.data), **self.resource)},
        ) as context:
            result = dataset_version_sensor(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result


def keys(result: dg.SensorResult) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_new_file_is_added_and_requested_once(instance, data):
    write(data / "iris" / "v1.csv", "a,species\n1,x\n2,y\n")
    ticker = Ticker(instance, data)
    assert keys(ticker.tick()) == []  # first sight: wait for the file to be stable
    second = ticker.tick()
    assert keys(second) == ["iris/v1"] and [r.run_key for r in second.run_requests] == ["iris/v1"]
    assert list(second.dynamic_partitions_requests[0].partition_keys) == ["iris/v1"]
    assert instance.get_dynamic_partitions(DATASET_VERSIONS) == ["iris/v1"]
    for _ in range(3):
        assert keys(ticker.tick()) == []  # repeated ticks: no duplicate run


def test_half_written_file_waits_until_stable(instance, data):
    path = data / "iris" / "v2.csv"
    write(path, "a,species\n1,x\n")
    ticker = Ticker(instance, data)
    assert keys(ticker.tick()) == []
    with open(path, "a") as fh:
        fh.write("2,y\n")  # still being written
    assert keys(ticker.tick()) == []
    assert keys(ticker.tick()) == ["iris/v2"]


def test_empty_file_is_not_a_version_yet(instance, data):
    (data / "iris" / "v3.csv").touch()
    ticker = Ticker(instance, data)
    assert keys(ticker.tick()) == [] and keys(ticker.tick()) == []


def test_bad_names_and_escaping_paths_are_skipped_with_a_message(instance, data, tmp_path, capfd):
    write(data / "iris" / "v1.csv", "a,species\n1,x\n2,y\n")
    (data / "bad name").mkdir()
    (data / "bad name" / "experiment.yaml").write_text("target: y\n")
    write(data / "iris" / "v 2.csv", "a\n1\n")
    write(data / "iris" / ".v3.csv", "a\n1\n")
    outside = tmp_path / "outside.csv"
    write(outside, "a\n1\n")
    os.symlink(outside, data / "iris" / "v4.csv")
    ticker = Ticker(instance, data)
    ticker.tick()
    second = ticker.tick()
    assert keys(second) == ["iris/v1"]
    text = capfd.readouterr().err  # Dagster's sensor log writes to stderr
    assert "dataset folder 'bad name' skipped" in text and "rename it" in text
    assert "version file iris/'v 2.csv' skipped" in text
    assert "version file iris/'.v3.csv' skipped" in text
    assert "iris/v4.csv skipped: it resolves outside" in text
    assert text.count("'bad name' skipped") == 1  # reported once, not every tick


def test_changed_file_is_reported_not_retrained(instance, data):
    path = data / "iris" / "v1.csv"
    write(path, "a,species\n1,x\n2,y\n")
    ticker = Ticker(instance, data)
    ticker.tick()
    assert keys(ticker.tick()) == ["iris/v1"]
    write(path, "a,species\n1,x\n2,y\n3,z\n")
    changed = ticker.tick()
    assert keys(changed) == []
    (event,) = changed.asset_events
    assert event.asset_key == dg.AssetKey("raw_data") and event.partition == "iris/v1"
    assert "changed after version iris/v1 was trained" in event.metadata["changed_after_training"].value
    again = ticker.tick()
    assert keys(again) == [] and not again.asset_events  # reported once
    assert json.loads(ticker.cursor)["changed"].keys() == {"iris/v1"}


def test_versions_already_partitions_are_not_retrained(instance, data):
    write(data / "iris" / "v1.csv", "a,species\n1,x\n2,y\n")
    instance.add_dynamic_partitions(DATASET_VERSIONS, ["iris/v1"])  # e.g. trained by `make run`
    ticker = Ticker(instance, data)
    assert keys(ticker.tick()) == [] and keys(ticker.tick()) == []


def test_many_versions_tick_reads_no_file(instance, data, monkeypatch):
    for i in range(50):
        write(data / "iris" / f"v{i}.csv", "a,species\n1,x\n2,y\n")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"tick read {self}"))
    import builtins

    real_open = builtins.open
    monkeypatch.setattr(
        builtins,
        "open",
        lambda f, *a, **k: (
            pytest.fail(f"tick opened {f}") if str(f).endswith(".csv") else real_open(f, *a, **k)
        ),
    )
    ticker = Ticker(instance, data)
    ticker.tick()
    assert len(keys(ticker.tick())) == 50


def test_over_long_and_non_ascii_names_are_warned_once_never_requested(instance, data, capfd):
    write(data / "iris" / "v1.csv", "a,species\n1,x\n2,y\n")
    write(data / "iris" / f"{'v' * 250}.csv", "a,species\n1,x\n")
    write(data / "iris" / "données.csv", "a,species\n1,x\n")
    ticker = Ticker(instance, data)
    ticker.tick()
    assert keys(ticker.tick()) == ["iris/v1"]
    assert keys(ticker.tick()) == []
    text = capfd.readouterr().err
    assert text.count("it has 250 characters, more than 100") == 1
    assert text.count("version file iris/'données.csv' skipped") == 1
    assert instance.get_dynamic_partitions(DATASET_VERSIONS) == ["iris/v1"]


def trained_ticker(instance, data, **resource) -> Ticker:
    write(data / "iris" / "v1.csv", "a,species\n1,x\n2,y\n")
    write(data / "iris" / "v2.csv", "a,species\n1,x\n2,y\n3,x\n")
    ticker = Ticker(instance, data, **resource)
    ticker.tick()
    assert keys(ticker.tick()) == ["iris/v1", "iris/v2"]
    return ticker


def test_changed_experiment_yaml_is_reported_not_retrained(instance, data, capfd):
    ticker = trained_ticker(instance, data)
    spec = data / "iris" / "experiment.yaml"
    os.utime(spec, ns=(1, 1))  # touched, same content: nothing to report
    assert keys(ticker.tick()) == [] and not ticker.tick().asset_events
    write(spec, spec.read_text() + "cv_folds: 3\n")
    changed = ticker.tick()
    assert keys(changed) == []
    assert [(e.asset_key, e.partition) for e in changed.asset_events] == [
        (dg.AssetKey("splits"), "iris/v1"),
        (dg.AssetKey("splits"), "iris/v2"),
    ]
    message = changed.asset_events[0].metadata["out_of_date"].value
    assert "versions iris/v1, iris/v2 are out of date; not retraining them" in message
    assert "versions iris/v1, iris/v2 are out of date" in capfd.readouterr().err
    again = ticker.tick()
    assert keys(again) == [] and not again.asset_events  # reported once


def test_an_edit_that_changes_nothing_trained_is_not_reported(instance, data, capfd):
    ticker = trained_ticker(instance, data)
    spec = data / "iris" / "experiment.yaml"
    # A comment, and `retrain_on_change` alone: the resolved config (the experiment key) is the same.
    write(spec, "# tuned later\n" + spec.read_text() + "retrain_on_change: true\n")
    quiet = ticker.tick()
    assert keys(quiet) == [] and not quiet.asset_events
    assert "out of date" not in capfd.readouterr().err
    write(spec, spec.read_text() + "cv_folds: 3\n")  # this one changes what trains
    assert keys(ticker.tick()) == ["iris/v1", "iris/v2"]


def test_a_broken_experiment_yaml_is_reported_and_its_fix_compared_with_the_last_good_one(
    instance, data, capfd
):
    ticker = trained_ticker(instance, data)
    spec = data / "iris" / "experiment.yaml"
    good = spec.read_text()
    write(spec, good + "cv_folds: not-a-number\n")
    broken = ticker.tick()
    assert keys(broken) == [] and not broken.asset_events
    assert "changed but cannot be read" in capfd.readouterr().err
    write(spec, good + "\n")  # fixed back to the same config: nothing is out of date
    fixed = ticker.tick()
    assert keys(fixed) == [] and not fixed.asset_events


@pytest.mark.parametrize(
    ("hostile", "said"),
    [
        ("a: &a [x, x]\nb: [*a, *a]\n", "uses a YAML anchor or alias (line"),
        ("hyperparameters: " + "[" * 100_000 + "]" * 100_000 + "\n", "more than 20 levels deep"),
    ],
    ids=["aliases", "deep"],
)
def test_a_hostile_experiment_yaml_costs_the_sensor_one_quick_message(instance, data, capfd, hostile, said):
    import time

    ticker = trained_ticker(instance, data)
    spec = data / "iris" / "experiment.yaml"
    write(spec, spec.read_text() + hostile)
    started = time.perf_counter()
    result = ticker.tick()
    assert time.perf_counter() - started < 5
    assert keys(result) == [] and not result.asset_events
    err = capfd.readouterr().err
    assert f"{spec} changed but cannot be read: {spec}" in err and said in err


def test_retrain_on_change_in_experiment_yaml_retrains_each_content_once(instance, data):
    ticker = trained_ticker(instance, data)
    spec = data / "iris" / "experiment.yaml"
    write(spec, spec.read_text() + "retrain_on_change: true\ncv_folds: 3\n")
    changed = ticker.tick()
    assert keys(changed) == ["iris/v1", "iris/v2"]
    sha = hashlib.sha256(spec.read_text().encode()).hexdigest()[:12]
    assert [r.run_key for r in changed.run_requests] == [f"iris/v1@spec-{sha}", f"iris/v2@spec-{sha}"]
    assert keys(ticker.tick()) == []
    write(spec, spec.read_text() + "test_size: 0.25\n")
    again = ticker.tick()
    assert keys(again) == ["iris/v1", "iris/v2"]
    assert {r.run_key for r in again.run_requests}.isdisjoint({r.run_key for r in changed.run_requests})


def test_retrain_on_change_on_the_sensor_resource(instance, data):
    ticker = trained_ticker(instance, data, retrain_on_change=True)
    spec = data / "iris" / "experiment.yaml"
    write(spec, spec.read_text() + "cv_folds: 4\n")
    assert keys(ticker.tick()) == ["iris/v1", "iris/v2"]
