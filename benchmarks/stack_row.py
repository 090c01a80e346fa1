"""The same experiment on the embedded default and on the production profile's local stack.

Starts a local stack (experiments_dagster.stack: PostgreSQL, SeaweedFS, MLflow's server with
basic auth, the Dagster daemon and webserver) on free ports in a temporary folder, then runs
``experiments-dagster run --dataset D --version V`` alternately on both profiles, each in a cold
process: embedded on one SQLite store and DAGSTER_HOME, production through the stack; on both one
experiment, a new attempt each time (the first run of each side creates its store's experiment). Prints one JSON line with
every wall time, then stops the stack by PID. Used by run.py for its "stack" row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments_dagster.stack.local import LocalStack

PROJECT = Path(__file__).resolve().parent.parent

CLI = str(Path(sys.executable).with_name("experiments-dagster"))


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    started = time.monotonic()
    with open(log, "ab") as out:
        code = subprocess.run(cmd, env=env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.monotonic() - started, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="small")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="experiments-bench-stack-", dir="/tmp"))
    root.chmod(0o711)  # PostgreSQL runs as `postgres` when started as root: it must reach its folder
    (root / "daemon-data").mkdir()
    stack = LocalStack(root / "stack", data_dir=root / "daemon-data", preferred_ports=False)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "EXPERIMENTS_", "AWS_", "DAGSTER_"))
    }
    base["EXPERIMENTS_DATA_DIR"] = str(args.data_dir)
    base["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    # --force: every repeat trains a new attempt on the one store (else it is "up to date").
    cmd = [CLI, "run", "--dataset", args.dataset, "--version", args.version, "--force"]
    times: dict[str, list[float]] = {"embedded": [], "stack": []}
    codes: dict[str, list[int]] = {"embedded": [], "stack": []}
    try:
        started = time.monotonic()
        stack.up(out=lambda line: None)
        stack_start = time.monotonic() - started
        for i in range(args.repeats):
            order = ("embedded", "stack") if i % 2 == 0 else ("stack", "embedded")
            for side in order:
                if side == "embedded":
                    # One store and instance across the repeats, as on the stack: a new attempt each time.
                    run_dir = root / "embedded"
                    if not (run_dir / "home").is_dir():
                        (run_dir / "home").mkdir(parents=True)
                        shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", run_dir / "home")
                    env = {
                        **base,
                        "DAGSTER_HOME": str(run_dir / "home"),
                        "MLFLOW_TRACKING_URI": f"sqlite:///{run_dir / 'store' / 'mlflow.db'}",
                    }
                else:
                    env = {**base, **stack.client_env()}
                seconds, code = timed(cmd, env, root / f"{side}.log")
                times[side].append(seconds)
                codes[side].append(code)
    finally:
        stack.down(out=lambda line: None)
    print(json.dumps({"times": times, "codes": codes, "stack_start_seconds": stack_start}))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(c == 0 for side in codes.values() for c in side) else 1


if __name__ == "__main__":
    sys.exit(main())
