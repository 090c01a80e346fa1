"""Distributed execution on the production profile's local stack: 1 Celery worker against 2.

Starts a local stack (devstack: PostgreSQL, Redis, SeaweedFS, MLflow's server,
two Celery workers, the Dagster daemon and webserver) on free ports in a temporary folder and
measures, in one run:

1. **Backfill throughput.** ``--versions`` K copies of the small dataset's version file (each
   with one data row left out, so every version file is distinct) go into the daemon's data
   folder under a fresh dataset name per measurement; their partitions are registered with the
   instance first (the daemon's sensor then treats them as known and launches nothing), then
   ``dagster job backfill`` is launched and the instance polled until all K runs finished. Wall
   time = from the launch to the last run's end. With 1 worker, ``celery-worker-2`` is stopped
   before and started again after; the order alternates between repeats (1, 2, then 2, 1 ...).
2. **A search of ``--trials`` trials** through ``experiments-dagster run --dataset D`` with
   ``search.workers`` 1 and 2, if ``SearchSpec`` has that field; otherwise recorded as not
   available.
3. **Per-step costs** from the Dagster event log of the measured runs (STEP_START to
   STEP_SUCCESS, 'Submitting celery task' to the worker's 'Executing steps' event and to
   STEP_START), the CPU seconds of every service of the stack during each measurement (from
   /proc), MLflow requests (access-log lines of the server), Redis commands and PostgreSQL
   commits per experiment.

Prints one JSON line with every number, then stops the stack by PID. Used by run.py for its
"workers" row; see benchmarks/README.md, "Distributed execution".
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

import yaml
from report import med
from workers_backfill import backfill
from workers_counters import Counters
from workers_steps import summarize_steps

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # devstack/ sits beside the package, outside the wheel
from devstack.local import LocalStack

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "experiments-dagster")
SEARCH_UNAVAILABLE = "not available: search.workers not in this build"
SEARCH_SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 6},
    "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
    "subsample": {"type": "choice", "choices": [0.7, 0.85, 1.0]},
}


# --- one search -------------------------------------------------------------------------------
def search_available() -> bool:
    from experiments_dagster.core.spec import SearchSpec

    return "workers" in SearchSpec.model_fields


def search(
    stack: LocalStack,
    env: dict[str, str],
    root: Path,
    name: str,
    args: argparse.Namespace,
    workers: int | None,
) -> dict:
    """``experiments-dagster run --dataset <name>`` with a ``--trials`` search on ``workers`` workers.

    The dataset goes to a folder of its own (not the daemon's: its sensor would start a run)."""
    data = root / "search-data"
    folder = data / name
    folder.mkdir(parents=True)
    spec = yaml.safe_load((args.data_dir / args.dataset / "experiment.yaml").read_text())
    spec["search"] = {"enabled": True, "n_trials": args.trials, "cv_folds": 3, "space": SEARCH_SPACE}
    if workers is not None:  # None: the build's default, without the key
        spec["search"]["workers"] = workers
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(args.data_dir / args.dataset / f"{args.version}.csv", folder / "v1.csv")
    counters = Counters(stack)
    started = time.monotonic()
    log = root / f"search-{name}.log"
    with open(log, "wb") as out:
        try:
            code = subprocess.run(
                [
                    CLI,
                    "run",
                    "--dataset",
                    name,
                    "--force",
                ],  # trains even if an earlier call made it up to date
                env={**env, "EXPERIMENTS_DATA_DIR": str(data)},
                cwd=PROJECT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.monotonic() - started
    result = {"workers": workers, "dataset": name, "wall_seconds": seconds, "code": code, **counters.delta()}
    if code != 0:
        result["error"] = log.read_text(errors="replace")[-2000:]
    return result


def code_state() -> dict:
    """The commit, the files changed since (the code measured), and the workers' Celery settings."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=PROJECT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    try:
        celery = yaml.safe_load((PROJECT / "deploy" / "celery.yaml").read_text())["execution"]["config"]
        source = celery.get("config_source", {})
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        source = {}
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "changed": git("status", "--porcelain", "--", "experiments_dagster", "deploy").splitlines(),
        "celery_config_source": source,
    }


# --- main -----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="benchmarks/workloads.py's data dir")
    parser.add_argument("--dataset", default="small")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--versions", type=int, default=4, help="K: versions per backfill (default 4)")
    parser.add_argument("--repeats", type=int, default=1, help="backfills per worker count (default 1)")
    parser.add_argument("--trials", type=int, default=40, help="search trials (default 40)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement (default 600)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-backfill", action="store_true", help="measure only the search")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    return args


def measure_backfills(
    stack: LocalStack, instance, env: dict[str, str], args: argparse.Namespace, doc: dict
) -> bool:
    """Backfills with 1 and 2 workers, alternating the order per repeat; True if every run succeeded."""
    ok = True
    for i in range(0 if args.skip_backfill else args.repeats):
        for workers in (1, 2) if i % 2 == 0 else (2, 1):
            if workers == 1:
                stack.stop("celery-worker-2")
            try:
                m = backfill(stack, instance, env, f"bf_w{workers}_r{i}", args, workers)
            finally:
                if workers == 1:
                    stack.start_worker("celery-worker-2")
            m["repeat"] = i
            doc["backfill"].append(m)
            ok = ok and bool(m.get("all_success"))
    return ok


def measure_searches(
    stack: LocalStack, env: dict[str, str], root: Path, args: argparse.Namespace, doc: dict
) -> bool:
    """Searches with search.workers 1 and 2 (when the build has the field); True if every one succeeded."""
    if args.skip_search or not search_available():
        doc["search_status"] = "skipped" if args.skip_search else SEARCH_UNAVAILABLE
        return True
    doc["search_status"] = "measured"
    ok = True
    for i in range(args.repeats):
        for workers in (1, 2) if i % 2 == 0 else (2, 1):
            m = search(stack, env, root, f"search_w{workers}_r{i}", args, workers)
            m["repeat"] = i
            doc["search"].append(m)
            ok = ok and m.get("code") == 0
    return ok


def measure(stack: LocalStack, base: dict[str, str], root: Path, args: argparse.Namespace, doc: dict) -> bool:
    """Start the stack, measure the backfills and searches, stop the stack (always)."""
    instance = None
    try:
        started = time.monotonic()
        stack.up(out=lambda line: None)
        doc["stack_start_seconds"] = time.monotonic() - started
        env = {**base, **stack.client_env(), "EXPERIMENTS_DATA_DIR": str(stack.data_dir)}
        # This process reads the instance too (its dagster.yaml names the URL's variable).
        os.environ["EXPERIMENTS_DAGSTER_PG_URL"] = env["EXPERIMENTS_DAGSTER_PG_URL"]
        import dagster as dg

        instance = dg.DagsterInstance.from_config(str(stack.root / "dagster_home"))
        ok = measure_backfills(stack, instance, env, args, doc)
        return measure_searches(stack, env, root, args, doc) and ok
    finally:
        if instance is not None:
            instance.dispose()
        stack.down(out=lambda line: None)


def per_experiment(backfills: list[dict]) -> dict:
    """Median per experiment over the successful backfills: CPU of each service, requests, commits."""
    per_exp: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        per_exp.setdefault(key, []).append(value)

    for m in (m for m in backfills if m.get("all_success")):
        k = m["versions"]
        by_service: dict[str, float] = {}
        for service, seconds in m["service_cpu_seconds"].items():
            key = "celery-workers" if service.startswith("celery-worker-") else service
            by_service[key] = by_service.get(key, 0.0) + seconds
        for key, seconds in by_service.items():
            add(f"cpu_{key}", seconds / k)
        add("cpu_stack", m["stack_cpu_seconds"] / k)
        add("mlflow_requests", m["mlflow_requests"] / k)
        add("celery_tasks", m["celery_tasks"] / k)
        add("celery_task_seconds", m["celery_task_seconds_per_experiment"])
        if m.get("redis_commands") is not None:
            add("redis_commands", m["redis_commands"] / k)
        for db in ("dagster", "mlflow", "mlflow_auth"):
            if db in m["pg_commits"]:
                add(f"pg_commits_{db}", m["pg_commits"][db] / k)
                add(f"pg_rows_written_{db}", m["pg_rows_written"][db] / k)
        per_exp.setdefault("run_seconds", []).extend(s for s in m["run_seconds"] if s)
    return {k: med(v) for k, v in per_exp.items()}


def aggregate(doc: dict) -> None:
    """Medians per worker count, the 2/1 ratios, per-step and per-experiment costs, into ``doc``."""
    for w in (1, 2):
        rows = [m for m in doc["backfill"] if m["workers"] == w]
        searches = [m["wall_seconds"] for m in doc["search"] if m["workers"] == w and m.get("code") == 0]
        doc.setdefault("experiments_per_hour", {})[str(w)] = med(
            [m.get("experiments_per_hour") for m in rows]
        )
        doc.setdefault("backfill_wall_seconds", {})[str(w)] = med([m.get("wall_seconds") for m in rows])
        doc.setdefault("search_wall_seconds", {})[str(w)] = med(searches)
        doc.setdefault("experiments_per_hour_from_first_start", {})[str(w)] = med(
            [m.get("experiments_per_hour_from_first_start") for m in rows]
        )
    eph, sw = doc["experiments_per_hour"], doc["search_wall_seconds"]
    doc["throughput_ratio"] = eph["2"] / eph["1"] if eph["1"] and eph["2"] else None
    doc["search_ratio"] = sw["2"] / sw["1"] if sw["1"] and sw["2"] else None
    measured = [r for m in doc["backfill"] for r in m.get("runs", []) if r["status"] == "SUCCESS"]
    doc["per_step"] = summarize_steps(measured)
    doc["per_experiment"] = per_experiment(doc["backfill"])


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="experiments-bench-workers-", dir="/tmp"))
    root.chmod(0o711)  # PostgreSQL runs as `postgres` when started as root: it must reach its folder
    (root / "daemon-data").mkdir()
    stack = LocalStack(root / "stack", data_dir=root / "daemon-data", preferred_ports=False, workers=2)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "EXPERIMENTS_", "AWS_", "DAGSTER_"))
    }
    base["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    doc: dict = {
        "versions": args.versions,
        "repeats": args.repeats,
        "trials": args.trials,
        "nproc": os.cpu_count(),
        "code": code_state(),
        "backfill": [],
        "search": [],
    }
    ok = measure(stack, base, root, args, doc)
    aggregate(doc)
    print(json.dumps(doc, default=str))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
