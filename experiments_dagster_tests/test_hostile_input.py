"""`experiments-dagster run` on a data folder with hostile entries: refused with a message, never read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")


def test_run_refuses_links_out_unsafe_names_and_bad_models(tmp_path: Path, data_dir: Path):
    data = tmp_path / "hostile-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    iris = data / "iris"
    elsewhere = tmp_path / "elsewhere.csv"
    shutil.copy(iris / "v1.csv", elsewhere)
    (iris / "v2.csv").symlink_to(elsewhere)  # a well-formed CSV, but outside the data directory
    (iris / "v3.csv").symlink_to("/etc/passwd")
    for name in (".v1.csv", "données.csv", f"{'v' * 250}.csv"):
        shutil.copy(iris / "v1.csv", iris / name)
    shutil.copytree(iris, data / "my data", symlinks=True)
    # Refused in `splits`, before any MLflow run: 0 trees, and a header repeating a column.
    shutil.copytree(data_dir / "iris", data / "no_trees")
    (data / "no_trees" / "experiment.yaml").write_text(
        "target: species\nhyperparameters: {n_estimators: -1}\n"
    )
    (data / "twice").mkdir()
    (data / "twice" / "experiment.yaml").write_text("target: species\n")
    lines = (iris / "v1.csv").read_text().splitlines()
    (data / "twice" / "v1.csv").write_text(
        "\n".join([lines[0].replace("petal_width_(cm)", "sepal_length_(cm)"), *lines[1:]]) + "\n"
    )
    store = tmp_path / "mlflow" / "mlflow.db"
    env = os.environ | {
        "EXPERIMENTS_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
    }
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [str(CLI), "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )

    assert done.returncode == 1, done.stderr[-3000:]
    root = data.resolve()
    refused = [
        line for line in done.stderr.splitlines() if line.startswith("experiments-dagster run: refused")
    ]
    assert len(refused) == 6, refused
    assert (
        f"experiments-dagster run: refused {root / 'iris' / 'v2.csv'}: version file iris/v2.csv skipped: it "
        f"resolves outside {root} (to {elsewhere.resolve()})"
    ) in done.stderr
    assert (
        "version file iris/v3.csv skipped: it resolves outside" in done.stderr
        and "(to /etc/passwd)" in done.stderr
    )
    assert "version file iris/'.v1.csv' skipped: it uses characters other than" in done.stderr
    assert "version file iris/'données.csv' skipped" in done.stderr
    assert "it has 250 characters, more than 100" in done.stderr
    assert "dataset folder 'my data' skipped" in done.stderr
    assert "root:x:0:0" not in done.stdout + done.stderr  # /etc/passwd is never read
    assert "6 entries of the data directory were refused" in done.stdout
    rows = dict(re.findall(r"^  (\S+)\s+(SUCCESS|FAILURE)", done.stdout, flags=re.M))
    assert rows == {"iris/v1": "SUCCESS", "no_trees/v1": "FAILURE", "twice/v1": "FAILURE"}
    assert "ExperimentInputError" in done.stderr
    assert "trained no trees on a sample" in done.stderr and "set `n_estimators` to at least 1" in done.stderr
    assert "repeats column names ['sepal_length_(cm)'] in its header" in done.stderr

    client = MlflowClient(f"sqlite:///{store}")
    assert client.get_experiment_by_name("iris") is not None
    for refused_before_logging in ("no_trees", "twice"):
        experiment = client.get_experiment_by_name(refused_before_logging)
        assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_hostile_experiment_yaml_fails_its_dataset_only_and_fast(tmp_path: Path, data_dir: Path):
    """An alias bomb, 100,000 levels of nesting and a 50 MB file each fail their own dataset, naming
    the file, within milliseconds of reading it; the valid dataset of the same `run` trains."""
    data = tmp_path / "hostile-data"
    shutil.copytree(data_dir / "iris", data / "iris")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
    )
    hostile = {
        "bomb": "target: species\n" + bomb,
        "deep": "target: species\nhyperparameters: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "big": "target: species\n",
    }
    for name, text in hostile.items():
        shutil.copytree(data_dir / "iris", data / name)
        (data / name / "experiment.yaml").write_text(text)
    with (data / "big" / "experiment.yaml").open("ab") as f:
        f.truncate(50 * 1024 * 1024)
    # Two broken version files: ISO dates in a column, and a header longer than the csv field limit.
    shutil.copytree(data_dir / "iris", data / "dates")
    lines = (data / "dates" / "v1.csv").read_text().splitlines()
    dated = [lines[0] + ",when", *(f"{line},2024-01-{1 + i % 28:02d}" for i, line in enumerate(lines[1:]))]
    (data / "dates" / "v1.csv").write_text("\n".join(dated) + "\n")
    shutil.copytree(data_dir / "iris", data / "oneline")
    (data / "oneline" / "v1.csv").write_text("x" * 300_000 + ",species\n1,a\n")
    store = tmp_path / "mlflow" / "mlflow.db"
    env = os.environ | {
        "EXPERIMENTS_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
    }
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [str(CLI), "run", "--version", "v1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert done.returncode == 1, done.stderr[-3000:]
    rows = dict(re.findall(r"^  (\S+)\s+(SUCCESS|FAILURE)", done.stdout, flags=re.M))
    assert rows == {
        "iris/v1": "SUCCESS",
        **{f"{name}/v1": "FAILURE" for name in ("bomb", "deep", "big", "dates", "oneline")},
    }
    root = data.resolve()
    assert f"{root / 'bomb' / 'experiment.yaml'} uses a YAML anchor or alias (line 2)" in done.stdout
    assert (
        f"{root / 'deep' / 'experiment.yaml'} nests lists or mappings more than 20 levels deep" in done.stdout
    )
    assert f"{root / 'big' / 'experiment.yaml'} is 52,428,800 bytes, more than the 262,144" in done.stdout
    assert "RecursionError" not in done.stderr and "unprintable" not in done.stdout + done.stderr
    assert (
        f"Column 'when' of {root / 'dates' / 'v1.csv'} holds dates or times (e.g. 2024-01-01" in done.stdout
    )
    assert (
        f"Dataset file {root / 'oneline' / 'v1.csv'} could not be read as csv: one field of its header is "
        "longer than 131,072 characters"
    ) in done.stdout
    assert "_csv.Error" not in done.stdout and "lists, structs" not in done.stdout
    client = MlflowClient(f"sqlite:///{store}")
    for experiment in client.search_experiments():
        assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
