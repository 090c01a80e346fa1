"""`experiments-dagster reproduce RUN_ID` on runs made by `experiments-dagster run`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.tracking.audit import local_artifact_root

pytestmark = pytest.mark.slow
PYTHON = sys.executable
TASKS = {"breast_cancer": "binary", "iris": "multiclass", "diabetes": "regression"}
COMPARED = {"identical"}
LISTED_ONLY = {"timing (not compared)", "promotion (not rerun)"}


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "experiments_dagster.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def setup_store(tmp_path: Path, data_dir: Path, datasets: tuple[str, ...]) -> tuple[dict[str, str], Path]:
    data = tmp_path / "repro-data"
    for name in datasets:
        shutil.copytree(data_dir / name, data / name)
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env |= {"EXPERIMENTS_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "home")}
    return env, data


def parent_of(client: MlflowClient, dataset: str):
    experiment = client.get_experiment_by_name(dataset)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [
        r for r in runs if "mlflow.parentRunId" not in r.data.tags and "reproduction.of" not in r.data.tags
    ]


def test_reproduce_every_task_bit_for_bit_and_the_checks_that_stop_it(tmp_path: Path, data_dir: Path):
    env, data = setup_store(tmp_path, data_dir, tuple(TASKS))
    done = cli(env, tmp_path, "run", "--version", "v1")
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / '.mlflow' / 'mlflow.db'}")
    originals = {name: parent_of(client, name)[0] for name in TASKS}
    assert {n: r.data.tags["task"] for n, r in originals.items()} == TASKS

    # A changed package version: a warning, and exit 2 with --strict (nothing is rerun).
    iris = originals["iris"]
    manifest_file = local_artifact_root(iris.info.artifact_uri) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    installed_numpy = next(p for p in manifest["packages"] if p.startswith("numpy=="))
    manifest["packages"] = [p if p != installed_numpy else "numpy==1.0.0" for p in manifest["packages"]]
    manifest_file.write_text(json.dumps(manifest))
    strict = cli(env, tmp_path, "reproduce", iris.info.run_id, "--strict", "--json")
    assert strict.returncode == 2, strict.stderr[-3000:]
    assert f"numpy logged 1.0.0, installed {installed_numpy.split('==')[1]}" in strict.stderr
    assert json.loads(strict.stdout)["verdict"] == "blocked"
    assert [r for r in parent_of(client, "iris") if r.info.run_id != iris.info.run_id] == []

    for name, original in originals.items():
        again = cli(env, tmp_path, "reproduce", original.info.run_id, "--json")
        assert again.returncode == 0, again.stderr[-3000:]
        report = json.loads(again.stdout)
        assert report["verdict"] == "identical" and report["exit_code"] == 0
        rows = report["rows"]
        compared = [r for r in rows if r["result"] not in LISTED_ONLY]
        assert {r["result"] for r in compared} == COMPARED
        # Every param and every metric of the original is there, with the same value.
        assert {r["name"] for r in rows if r["kind"] == "param"} == set(original.data.params)
        assert {r["name"] for r in rows if r["kind"] == "metric"} == set(original.data.metrics)
        rerun = client.get_run(report["reproduction_run_id"])
        assert rerun.data.tags["reproduction.of"] == original.info.run_id
        assert rerun.info.status == "FINISHED" and rerun.data.tags["audit.status"] == "complete"
        for metric, value in original.data.metrics.items():
            if not metric.endswith("_seconds") and not metric.startswith("baseline_"):
                assert rerun.data.metrics[metric] == value, metric  # bit for bit
        assert rerun.data.params == original.data.params
        tags = client.get_run(original.info.run_id).data.tags
        assert tags["reproduction.last_verdict"] == "identical"
        assert tags["reproduction.last_run_id"] == rerun.info.run_id
        assert tags["reproduction.last_at"] == report["reproduced_at"]
        if name == "iris":
            assert (
                "warning: Package versions differ (--strict stops on this): numpy logged 1.0.0"
                in again.stderr
            )
            assert "packages" in {w["check"] for w in report["warnings"]}

    # A tampered data file: exit 2, both hashes named, no rerun.
    diabetes = originals["diabetes"]
    path = data / "diabetes" / "v1.csv"
    logged = hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")  # one row twice
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    before = len(client.search_runs([diabetes.info.experiment_id], max_results=1000))
    tampered = cli(env, tmp_path, "reproduce", diabetes.info.run_id)
    assert tampered.returncode == 2
    assert f"sha256 logged {logged}, now {now}" in tampered.stderr and str(path) in tampered.stderr
    assert len(client.search_runs([diabetes.info.experiment_id], max_results=1000)) == before

    unknown = cli(env, tmp_path, "reproduce", "0" * 32)
    assert unknown.returncode == 2 and "No run '00000000000000000000000000000000'" in unknown.stderr


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    return subprocess.run(
        ["git", *identity, "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_at_commit_runs_the_logged_commit_from_a_temporary_worktree(tmp_path: Path, data_dir: Path):
    env, _ = setup_store(tmp_path, data_dir, ("iris",))
    repo = tmp_path / "repo"
    shutil.copytree(
        PROJECT_ROOT / "experiments_dagster",
        repo / "experiments_dagster",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (repo / ".gitignore").write_text("__pycache__/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    in_repo = env | {"PYTHONPATH": str(repo)}  # the test repository's code, not the installed one
    done = cli(in_repo, repo, "run", "--dataset", "iris")
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / '.mlflow' / 'mlflow.db'}")
    (original,) = parent_of(client, "iris")
    assert original.data.tags["git.commit"] == first and original.data.tags["git.dirty"] == "false"

    # A later commit changes the training code: its code version differs from the run's.
    training = repo / "experiments_dagster" / "ml" / "training.py"
    training.write_text(training.read_text() + "\n# a later change\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")

    again = cli(in_repo, repo, "reproduce", original.info.run_id, "--at-commit", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    assert report["verdict"] == "identical"
    rerun = client.get_run(report["reproduction_run_id"])
    # The rerun ran the first commit's code (its git commit and code version), not the checkout's.
    assert rerun.data.tags["git.commit"] == first
    assert rerun.data.tags["code.version"] == original.data.tags["code.version"]
    assert "is at" not in again.stderr  # no "working tree at another commit" warning with --at-commit
    # The user's checkout is untouched and the temporary worktree is gone.
    assert git(repo, "rev-parse", "HEAD") == second and git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1

    without = cli(in_repo, repo, "reproduce", original.info.run_id, "--json")
    assert without.returncode == 0, without.stderr[-3000:]
    assert f"is at {second}, the run was trained at {first}" in without.stderr
    newer = client.get_run(json.loads(without.stdout)["reproduction_run_id"])
    assert newer.data.tags["git.commit"] == second
    assert newer.data.tags["code.version"] != original.data.tags["code.version"]
