"""The production profile against a real local stack: the whole graph, auth, faults, a backfill."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from devstack.local import LocalStack
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.tracking.server import server_problem
from experiments_dagster_tests.backfill import launch_backfill
from experiments_dagster_tests.stack.conftest import BIN, client_for, copy_dataset, run_cli, start_cli

pytestmark = [pytest.mark.stack, pytest.mark.slow]

DATASETS = {"breast_cancer": "binary", "iris": "multiclass", "diabetes": "regression"}
VALUE_ASSETS = ("raw_data", "data_hash", "splits", "fold_models", "cv_metrics", "final_model")


def parents_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} on the server"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_whole_graph_through_the_stack(stack: LocalStack, stack_env: dict, s3, tmp_path: Path):
    for dataset in DATASETS:
        copy_dataset(stack_env, dataset)
    result = run_cli(stack_env, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    for dataset in DATASETS:
        row = rf"{dataset}/v1\s+SUCCESS\s+{re.escape(stack_env['MLFLOW_TRACKING_URI'])}/#/experiments/"
        assert re.search(row, result.stdout), result.stdout

    client = client_for(stack_env)
    for dataset, task in DATASETS.items():
        audit = run_cli(stack_env, "audit", "--experiment", dataset, "--json")
        assert audit.returncode == 0, audit.stdout + audit.stderr
        report = json.loads(audit.stdout)
        assert report["complete"] is True and len(report["runs"]) == 1
        (parent,) = parents_of(client, dataset)
        assert parent.info.status == "FINISHED" and parent.data.tags["task"] == task
        # The MLflow UI link in Dagster's metadata and the Dagster link in MLflow point at the servers.
        assert parent.data.tags["dagster.run_url"].startswith(stack_env["EXPERIMENTS_DAGSTER_URL"] + "/runs/")
        # Artifacts: proxied by the server (mlflow-artifacts:), stored as objects in the bucket.
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
        key = f"experiments/mlflow/{parent.info.experiment_id}/{parent.info.run_id}/artifacts"
        stored = {Path(p).name for p in s3.find(key)}
        assert {
            "manifest.json",
            "requirements.txt",
            "confusion_matrix.png" if task != "regression" else "residuals.png",
        } <= stored, stored
        model_id = parent.data.tags["model.id"]
        model = client.get_logged_model(model_id)
        assert model.artifact_location.startswith("mlflow-artifacts:/")
        assert s3.find(f"experiments/mlflow/{parent.info.experiment_id}/models/{model_id}/artifacts"), model
        # Asset values: objects under s3://experiments/values/<asset>/<dataset>/<version>.
        for asset in VALUE_ASSETS:
            assert s3.exists(f"experiments/values/{asset}/{dataset}/v1"), asset

    # Nothing went to local disk: no value files in DAGSTER_HOME's storage (only the compute-log
    # folders Dagster names by run id), no artifact folders anywhere the processes wrote.
    storage = Path(stack_env["DAGSTER_HOME"]) / "storage"
    assert not any((storage / asset).exists() for asset in VALUE_ASSETS)
    for folder in (tmp_path, PROJECT_ROOT, stack.root / "mlflow", Path(stack_env["DAGSTER_HOME"])):
        assert not any((folder / name).exists() for name in ("mlruns", "mlartifacts", ".mlflow")), folder


def test_auth_refuses_missing_and_wrong_credentials_and_read_only_users(stack: LocalStack, stack_env: dict):
    copy_dataset(stack_env, "iris", as_name="auth_iris")
    uri = stack_env["MLFLOW_TRACKING_URI"]

    # No credentials: the server refuses (401), and the CLI says so in one line.
    anonymous = {k: v for k, v in stack_env.items() if not k.startswith("MLFLOW_TRACKING_USERNAME")}
    anonymous.pop("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401
    result = run_cli(anonymous, "run")
    assert result.returncode == 2
    assert "authentication failed at the MLflow tracking server " + uri in result.stderr
    assert "MLFLOW_TRACKING_USERNAME is unset" in result.stderr and "Traceback" not in result.stderr

    # A wrong password: refused with a clear message, no stack trace, nothing logged.
    wrong = {**stack_env, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    result = run_cli(wrong, "run")
    assert result.returncode == 2
    assert (
        f"authentication failed at the MLflow tracking server {uri} for user 'experiments'" in result.stderr
    )
    assert "Traceback" not in result.stderr
    audit = run_cli(wrong, "audit", "--experiment", "auth_iris")
    assert audit.returncode == 2 and "authentication failed" in audit.stderr

    # The right user logs the experiment; a second user with READ on it cannot log to it.
    result = run_cli(stack_env, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    client = client_for(stack_env)
    (parent,) = parents_of(client, "auth_iris")
    stack.create_user("reader", "reader-password-123")
    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"  # MLflow's own auth client, as the admin
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.settings().admin_password
    auth = get_app_client("basic-auth", tracking_uri=uri)
    auth.grant_user_permission("reader", "experiment", parent.info.experiment_id, "READ")
    granted = auth.get_user_permission("reader", "experiment", parent.info.experiment_id)
    assert granted.permission == "READ"
    os.environ["MLFLOW_TRACKING_USERNAME"] = "reader"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "reader-password-123"
    reader = MlflowClient(uri)
    assert reader.get_run(parent.info.run_id).info.status == "FINISHED"  # READ works
    with pytest.raises(MlflowException) as denied:
        reader.log_metric(parent.info.run_id, "tampered", 1.0)
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert server_problem(denied.value, uri).startswith(
        f"permission denied at the MLflow tracking server {uri} for user 'reader'"
    )
    with pytest.raises(MlflowException) as denied:
        reader.create_run(parent.info.experiment_id)
    assert denied.value.error_code == "PERMISSION_DENIED"
    os.environ["MLFLOW_TRACKING_USERNAME"] = stack_env["MLFLOW_TRACKING_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack_env["MLFLOW_TRACKING_PASSWORD"]
    assert "tampered" not in client.get_run(parent.info.run_id).data.metrics


def test_unreachable_server_fails_the_run_fast_naming_the_url(stack: LocalStack, stack_env: dict):
    from devstack.seaweed import free_port

    copy_dataset(stack_env, "iris", as_name="unreachable_iris")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**stack_env, "MLFLOW_TRACKING_URI": dead}
    started = time.monotonic()
    result = run_cli(env, "run")
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert (
        f"the MLflow tracking server {dead} is unreachable (connection refused; 1 retries, 10 s timeout"
        in result.stderr
    )
    assert elapsed < 30, elapsed

    # The same through Dagster (a run launched from the UI or the daemon): the resource's start-up
    # check fails the run before any step logs, with the same line.
    script = (
        "import dagster as dg\n"
        "from experiments_dagster.defs import defs\n"
        "from experiments_dagster.defs.partitions import DATASET_VERSIONS\n"
        "instance = dg.DagsterInstance.get()\n"
        "instance.add_dynamic_partitions(DATASET_VERSIONS, ['unreachable_iris/v1'])\n"
        "job = defs.resolve_job_def('experiment_job')\n"
        "try:\n"
        "    job.execute_in_process(partition_key='unreachable_iris/v1', instance=instance)\n"
        "except Exception as exc:\n"
        "    print('FAILED:', exc)\n"
    )
    started = time.monotonic()
    out = subprocess.run(
        [str(BIN / "python"), "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert "FAILED:" in out.stdout, out.stdout + out.stderr
    assert f"the MLflow tracking server {dead} is unreachable" in out.stdout + out.stderr
    assert time.monotonic() - started < 60


def test_server_gone_mid_run_fails_the_step_and_the_reconciler_closes_its_runs(
    stack: LocalStack, stack_env: dict
):
    folder = copy_dataset(stack_env, "iris", as_name="gone_iris")
    spec = (folder / "experiment.yaml").read_text().replace("n_estimators: 60", "n_estimators: 6000")
    (folder / "experiment.yaml").write_text(spec)
    client = client_for(stack_env)
    process = start_cli(stack_env, "run")
    try:
        deadline = time.monotonic() + 180
        folds = []
        while time.monotonic() < deadline and not folds:
            exp = client.get_experiment_by_name("gone_iris")
            if exp is not None:
                runs = client.search_runs([exp.experiment_id])
                folds = [r for r in runs if r.info.run_name and "fold" in r.info.run_name]
            time.sleep(0.5)
        assert folds, "the run never reached the CV folds"
        # The server dies (SIGKILL to its process group: no graceful drain) while folds train.
        os.killpg(stack.pid("mlflow"), signal.SIGKILL)
        stack.stop("mlflow")  # reaps it and removes its PID file
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        if stack.pid("mlflow") is None:
            stack.start_mlflow()
    assert process.returncode == 1, stdout + stderr
    assert "gone_iris/v1  FAILURE" in stdout
    assert "its MLflow runs cannot be closed now" in stderr and stack_env["MLFLOW_TRACKING_URI"] in stderr

    # Back up: the reconciler (here the sweep at the start of `audit`) marks what was left RUNNING FAILED.
    runs = client.search_runs([client.get_experiment_by_name("gone_iris").experiment_id])
    assert any(r.info.status == "RUNNING" for r in runs)  # what the dead server could not be told
    audit = run_cli(stack_env, "audit", "--experiment", "gone_iris")
    assert audit.returncode == 1  # the attempt is incomplete, and the audit says so
    runs = client.search_runs([client.get_experiment_by_name("gone_iris").experiment_id])
    states = [(r.info.run_name, r.info.status) for r in runs]
    assert runs and not any(status == "RUNNING" for _, status in states), states
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status in ("FAILED", "KILLED"), states
    # Only a fold that completed before the server went away may be FINISHED; others are closed.
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert all(r.data.tags.get("dagster.asset_key") == "fold_models" and r.data.metrics for r in finished), (
        states
    )
    assert len(finished) < len(runs) - 1, states  # at least one fold was cut off and closed
    assert parent.data.tags.get("reconciled.reason") or parent.data.tags.get("error.type")


def test_postgres_restarted_between_two_runs(stack: LocalStack, stack_env: dict):
    copy_dataset(stack_env, "iris", as_name="restart_iris")
    first = run_cli(stack_env, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    old = stack.pid("postgres")
    stack.restart_postgres()
    assert stack.pid("postgres") not in (None, old)
    shutil.copy(
        Path(stack_env["EXPERIMENTS_DATA_DIR"]) / "restart_iris" / "v1.csv",
        Path(stack_env["EXPERIMENTS_DATA_DIR"]) / "restart_iris" / "v2.csv",
    )
    second = run_cli(stack_env, "run", "--version", "v2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "restart_iris/v2  SUCCESS" in second.stdout
    client = client_for(stack_env)
    assert sorted(p.data.tags["dataset.version"] for p in parents_of(client, "restart_iris")) == ["v1", "v2"]


def test_stack_up_twice_changes_nothing(stack: LocalStack):
    before = stack.running()
    env_file = (stack.root / "env").read_text()
    result = subprocess.run(
        [str(BIN / "python"), "-m", "devstack", "up", "--dir", str(stack.root)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "is already up; nothing changed" in result.stdout
    assert stack.running() == before and (stack.root / "env").read_text() == env_file
    assert oct((stack.root / "credentials.json").stat().st_mode & 0o777) == "0o600"
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in env_file.splitlines()
        if line.startswith("export ")
    )
    assert {
        "EXPERIMENTS_PROFILE",
        "DAGSTER_HOME",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "EXPERIMENTS_S3_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    } <= set(exports)
    status = subprocess.run(
        [str(BIN / "python"), "-m", "devstack", "status", "--dir", str(stack.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and status.stdout.count("running, pid") == len(stack.services()) == 8


def test_backfill_of_six_versions_three_at_a_time_on_the_stack(
    stack: LocalStack, stack_env: dict, monkeypatch: pytest.MonkeyPatch
):
    """The stack's daemon runs a backfill over 6 versions (its QueuedRunCoordinator: 3 at once)."""
    data = stack.data_dir
    folder = data / "flowers"
    folder.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "data" / "iris" / "experiment.yaml", folder)
    frame = pd.read_csv(PROJECT_ROOT / "data" / "iris" / "v1.csv")
    versions = [f"v{i}" for i in range(1, 7)]
    for i, version in enumerate(versions):
        frame.sample(frac=0.9, random_state=i).to_csv(folder / f"{version}.csv", index=False)
    keys = [f"flowers/{v}" for v in versions]
    env = {**stack_env, "EXPERIMENTS_DATA_DIR": str(data)}
    monkeypatch.setenv("EXPERIMENTS_DAGSTER_PG_URL", env["EXPERIMENTS_DAGSTER_PG_URL"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        from experiments_dagster.defs.partitions import DATASET_VERSIONS

        instance.add_dynamic_partitions(DATASET_VERSIONS, keys)
        launch_backfill(keys, env)
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            records = [
                r
                for r in instance.get_run_records(dg.RunsFilter(job_name="experiment_job"))
                if r.dagster_run.tags.get("dagster/partition", "").startswith("flowers/")
            ]
            if len(records) >= 6 and all(r.dagster_run.is_finished for r in records):
                break
            time.sleep(3)
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == keys
        assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
        intervals = sorted((r.start_time, r.end_time) for r in records)
        overlap = max(sum(1 for s, e in intervals if s <= t < e) for t, _ in intervals)
        assert overlap == 3  # the coordinator's limit, reached and kept
        evaluations = [
            e.dagster_event.event_specific_data
            for r in records
            for e in instance.all_logs(
                r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        assert evaluations and all(e.passed for e in evaluations)
        dagster_ids = {r.dagster_run.run_id for r in records}
    client = client_for(stack_env)
    parents = parents_of(client, "flowers")
    assert sorted(p.data.tags["dataset.version"] for p in parents) == versions  # none duplicated
    assert {p.info.status for p in parents} == {"FINISHED"}
    assert {p.data.tags["dagster.run_id"] for p in parents} == dagster_ids
    audit = run_cli(stack_env, "audit", "--experiment", "flowers", "--json")
    assert audit.returncode == 0 and json.loads(audit.stdout)["complete"] is True
    # Steps ran on both Celery workers: every MLflow run names its worker, and so do the steps.
    from experiments_dagster_tests.stack.test_workers import worker_pids

    runs = client.search_runs([client.get_experiment_by_name("flowers").experiment_id], max_results=1000)
    assert all(":" in r.data.tags.get("worker", "") for r in runs)
    tagged = {v for r in runs for k, v in r.data.tags.items() if k == "worker" or k.startswith("worker.")}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        stepped = {
            e.dagster_event.event_specific_data.materialization.metadata["worker"].value
            for run_id in dagster_ids
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        }
    pools = worker_pids(stack)
    used = {
        service for service, pids in pools.items() for w in tagged | stepped if int(w.split(":")[1]) in pids
    }
    assert used == {"celery-worker-1", "celery-worker-2"}, (tagged, stepped, pools)
    # ...and nothing ran anywhere else (the run's own process orchestrates only).
    assert {int(w.split(":")[1]) for w in tagged | stepped} <= set().union(*pools.values())
