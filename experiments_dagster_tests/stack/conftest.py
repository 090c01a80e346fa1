"""One real local stack for the production-profile tests: PostgreSQL, Redis, SeaweedFS, MLflow's server
with basic auth, two Celery workers, the Dagster daemon and webserver, on free ports under a temporary folder, stopped by
PID (and deleted) when this package's tests end. The daemon's sensor watches its own data folder
(``daemon_data``), empty until a test puts versions there, so it never races the tests' CLI runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devstack.local import LocalStack, pg_program
from devstack.seaweed import find_weed
from experiments_dagster.core.paths import PROJECT_ROOT

BIN = Path(sys.executable).parent
SHIPPED = PROJECT_ROOT / "data"


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    try:
        pg_program("initdb")
        find_weed()
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server (apt-get install redis-server)")
    except Exception as exc:  # PostgreSQL, SeaweedFS or Redis cannot be installed here
        pytest.skip(f"the local stack's programs are missing: {exc}")
    # Under /tmp with mode 0711: as root, PostgreSQL runs as `postgres`, which must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="experiments-stack-", dir="/tmp"))
    root.chmod(0o711)
    daemon_data = root / "daemon-data"
    daemon_data.mkdir()
    local = LocalStack(root / "stack", data_dir=daemon_data, preferred_ports=False)
    try:
        local.up(out=lambda line: None)
        yield local
    finally:
        local.down(out=lambda line: None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack_env(stack: LocalStack, tmp_path: Path) -> dict[str, str]:
    """A client's environment (what `. .stack/env` exports), a fresh data folder, nothing embedded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EXPERIMENTS_", "AWS_"))}
    env.update(stack.client_env())
    env["EXPERIMENTS_DATA_DIR"] = str(tmp_path / "data")
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def copy_dataset(env: dict[str, str], dataset: str, as_name: str | None = None) -> Path:
    """The shipped dataset's experiment.yaml and v1 into the env's data folder (under ``as_name``)."""
    target = Path(env["EXPERIMENTS_DATA_DIR"]) / (as_name or dataset)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED / dataset / "experiment.yaml", target)
    source = next(p for p in (SHIPPED / dataset).iterdir() if p.stem == "v1")
    shutil.copy(source, target)
    return target


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "experiments-dagster"), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    """``experiments-dagster <args>`` started in the background, output captured as text (for
    tests that act on the stack while it runs)."""
    return subprocess.Popen(
        [str(BIN / "experiments-dagster"), *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reexecute_from_failure(env: dict[str, str], dagster_run_id: str) -> subprocess.CompletedProcess:
    """Re-execute a failed run from failure on the workers (Dagster's public API, as the UI's
    "Re-execute from failure" does); prints the new run's id and whether it succeeded."""
    script = textwrap.dedent(
        f"""
        import dagster as dg
        from experiments_dagster.defs.definitions import experiment_job_on_workers
        with dg.DagsterInstance.get() as instance:
            parent = instance.get_run_by_id({dagster_run_id!r})
            result = dg.execute_job(
                dg.reconstructable(experiment_job_on_workers),
                instance,
                run_config=parent.run_config,  # its data folder
                tags={{"dagster/partition": parent.tags["dagster/partition"]}},
                reexecution_options=dg.ReexecutionOptions.from_failure(parent.run_id, instance),
            )
            if not result.success:  # which check item failed, for the assertion's message
                for event in result.all_events:
                    if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
                        print(event.event_specific_data.check_name, event.event_specific_data.metadata)
            print(result.run_id, result.success)
        """
    )
    return subprocess.run(
        [str(BIN / "python"), "-c", script],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def client_for(env: dict[str, str]) -> MlflowClient:
    """An MlflowClient of the stack's client user (MLflow reads credentials from the environment)."""
    os.environ["MLFLOW_TRACKING_USERNAME"] = env["MLFLOW_TRACKING_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = env["MLFLOW_TRACKING_PASSWORD"]
    return MlflowClient(env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def s3(stack: LocalStack):
    """An s3fs filesystem on the stack's bucket, no caches."""
    import s3fs

    from devstack.seaweed import storage_options

    s = stack.settings()
    return s3fs.S3FileSystem(
        **storage_options(stack.urls()["s3"], s.s3_access_key, s.s3_secret_key),
        skip_instance_cache=True,
        use_listings_cache=False,
    )


@pytest.fixture(autouse=True)
def _credentials_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials set by client_for do not leak into the next test."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
