"""pytest-benchmark suite of the 'stack' row: small on the embedded default and on a local production stack.

Starts a local stack (devstack: PostgreSQL, SeaweedFS, MLflow's server with basic
auth, the Dagster daemon and webserver) on free ports in a temporary folder, once for both
benchmarks, and stops it by PID at the end. Each round is ``experiments-dagster run --dataset D
--version V --force`` in a cold process: embedded on one SQLite store and DAGSTER_HOME kept across
the rounds, production through the stack; on both a new attempt of one experiment each round (the
first round of each creates its store's experiment). Run by ``benchmarks/run.py`` with its plan in
``BENCH_PLAN``; the stack's start is not timed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_experiment import OURS_CLI, PLAN, say, tell
from procs import PROJECT, run_process

SMALL = PLAN.get("workloads", {}).get("small")
STACK_SIDES = ("embedded", "stack") if PLAN.get("stack") and SMALL else ()


@pytest.fixture(scope="module")
def local_stack() -> Iterator[dict]:
    """A local production stack in a temporary folder, its client environment and start seconds."""
    from devstack.local import LocalStack

    root = Path(tempfile.mkdtemp(prefix="experiments-bench-stack-", dir="/tmp"))
    root.chmod(0o711)  # PostgreSQL runs as `postgres` when started as root: it must reach its folder
    (root / "daemon-data").mkdir()
    stack = LocalStack(root / "stack", data_dir=root / "daemon-data", preferred_ports=False)
    say("stack: starting a local stack ...")
    started = time.perf_counter()
    try:
        stack.up(out=lambda line: None)
        print(f"up in {time.perf_counter() - started:.0f} s", flush=True)
        yield {"root": root, "env": stack.client_env(), "start_seconds": time.perf_counter() - started}
    finally:
        stack.down(out=lambda line: None)
        shutil.rmtree(root, ignore_errors=True)


def profile_env(side: str, stack: dict) -> dict[str, str]:
    """The environment of one profile: the embedded default's own stores, or the stack's clients."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "EXPERIMENTS_", "AWS_", "DAGSTER_"))
    }
    base.update(EXPERIMENTS_DATA_DIR=PLAN["data_dir"], MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    if side == "stack":
        return {**base, **stack["env"]}
    # One store and instance across the rounds, as on the stack: a new attempt each time.
    home = stack["root"] / "embedded" / "home"
    if not home.is_dir():
        home.mkdir(parents=True)
        shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    uri = f"sqlite:///{stack['root'] / 'embedded' / 'store' / 'mlflow.db'}"
    return {**base, "DAGSTER_HOME": str(home), "MLFLOW_TRACKING_URI": uri}


@pytest.mark.parametrize("side", STACK_SIDES)
def test_stack(benchmark, local_stack: dict, side: str) -> None:
    """``experiments-dagster run`` of small on one profile, ``--repeats`` rounds."""
    env, rounds = profile_env(side, local_stack), []
    # --force: every round trains a new attempt on the one store (else it is "up to date").
    cmd = [OURS_CLI, "run", "--dataset", SMALL["dataset"], "--version", SMALL["version"], "--force"]

    def setup() -> tuple[tuple, dict]:
        say(f"stack row: {side} round {len(rounds) + 1}/{SMALL['repeats']} ...")
        return (local_stack["root"] / f"{side}-{len(rounds)}.log",), {}

    def target(log: Path) -> None:
        rounds.append(run_process(cmd, env, log, PLAN["timeout"]))
        tell(rounds[-1])

    benchmark.group = "stack"
    benchmark.pedantic(target, setup=setup, rounds=SMALL["repeats"], warmup_rounds=0)
    benchmark.extra_info.update(
        workload="stack", side=side, rounds=rounds, stack_start_seconds=local_stack["start_seconds"]
    )
    if not all(r["returncode"] == 0 for r in rounds):
        pytest.fail(f"{side}: a round failed; see the end of its log above", pytrace=False)
