"""Benchmark: the project's `experiments-dagster run` against a plain MLflow script, cold, side by side.

    make bench                                   # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --workloads small,medium --repeats 3
    .venv/bin/python benchmarks/run.py --workloads large --large-repeats 1

Generates the workloads, runs the sensor and workers probes, then pytest-benchmark on
benchmarks/bench_experiment.py (every round a fresh process on a fresh, already-created MLflow
store and, for ours, a fresh DAGSTER_HOME) and bench_stack.py, and prints every row with its
ratio ours/baseline and target. See benchmarks/README.md. pytest-benchmark's JSON, with this driver's plan and extras
added under "bench", goes to benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from extra_rows import sensor_row, stack_row, workers_rows
from procs import PROJECT, clean_env, last_json, run_process, tail
from report import GIB, SENSOR_FILES, TARGETS, print_table, workload_rows

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
RESULTS = BENCH / "results"
ALL_WORKLOADS = ("small", "medium", "large")
FOOTER = (
    "wall = whole cold process (imports included), timed by pytest-benchmark; store creation is separate and "
    "not in wall. fit+predict = the CV's time (sum of the 5 fold runs' fit_time_seconds + predict_time_seconds, "
    "or, when folds trained at once, the wall time their runs covered, whichever is smaller) plus the final "
    "fit_time_seconds, read back from each side's MLflow store; where the final fit trained in the CV's pool "
    "(ours' training_wall_seconds), the pool's wall time if smaller than the sum of all fits."
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add(
        "--workloads",
        default="small,medium",
        help="comma-separated subset of small,medium,large (default: "
        "small,medium; large takes ~16 min for one run per side on 2 cores)",
    )
    add("--repeats", type=int, default=3, help="rounds per side for small and medium (default 3)")
    add(
        "--large-repeats",
        type=int,
        default=1,
        help="rounds per side for large (default 1: each takes minutes)",
    )
    add("--plots-only-repeats", type=int, default=3, help="plots-only rounds (default 3)")
    add("--timeout", type=float, default=3600, help="seconds before a single process is killed")
    add("--workdir", type=Path, help="where data and stores go (default: a new tmp dir)")
    add("--keep", action="store_true", help="keep data, stores and logs after the run")
    add("--skip-sensor", action="store_true")
    add("--skip-stack", action="store_true", help="skip the 'stack' row (embedded default vs a local stack)")
    add(
        "--skip-workers", action="store_true", help="skip the 'workers' rows (1 and 2 Celery workers, ~8 min)"
    )
    add(
        "--wait-idle",
        type=float,
        default=30.0,
        help="before each round, wait up to this many seconds for "
        "other processes to use < --max-noise of the CPUs (default 30; 0 disables)",
    )
    add(
        "--max-noise",
        type=float,
        default=0.15,
        help="rounds during which other processes used more than this "
        "share of the CPUs are left out of the quiet row (default 0.15)",
    )
    add("--summarize", type=Path, help="only print the table of a results JSON again")
    return p.parse_args()


def code_fingerprint() -> str:
    """sha256 over the project's source files (the code under test may change during a run)."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT / "experiments_dagster").rglob("*.py")):
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def generate(names: list[str], data_dir: Path, timeout: float) -> dict[str, dict] | None:
    """Write the workloads' CSVs and experiment.yaml (benchmarks/workloads.py); their facts by name."""
    print(f"generating workloads {','.join(names)} ...", flush=True)
    cmd = [PYTHON, str(BENCH / "workloads.py"), "--data-dir", str(data_dir), "--workloads", ",".join(names)]
    try:
        done = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"workload generation took more than --timeout {timeout:.0f} s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"workload generation failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
        return None
    generated = {d["name"]: d for d in map(json.loads, filter(None, done.stdout.splitlines()))}
    for g in generated.values():
        print(f"  {g['name']}: {g['description']}, {g['bytes'] / 1e6:,.1f} MB csv", flush=True)
    return generated


def probe(name: str, cmd: list[str], log: Path, timeout: float) -> dict:
    """One of the probe scripts in its own process; the JSON it printed last, plus errors."""
    print(f"[{datetime.now():%H:%M:%S}] {name} ...", flush=True)
    result = run_process(cmd, clean_env(), log, timeout)
    doc = {**last_json(log), "process": result}
    if result["returncode"] != 0:
        doc["error"] = tail(log)
        print(f"{name}: failed:\n{doc['error']}", flush=True)
    return doc


def run_probes(args: argparse.Namespace, root: Path, data_dir: Path, small: dict | None) -> dict:
    """The sensor tick and the workers rows (each skipped on request, the workers without small)."""
    extras: dict = {}
    if not args.skip_sensor:
        cmd = [PYTHON, str(BENCH / "probes.py"), "sensor", "--files", str(SENSOR_FILES), "--workdir"]
        extras["sensor"] = probe("sensor", [*cmd, str(root / "sensor")], root / "sensor.log", args.timeout)
    if not args.skip_workers and small:
        where = ["--data-dir", str(data_dir), "--dataset", "small", "--version", small["version"]]
        cmd = [PYTHON, str(BENCH / "workers_row.py"), *where]
        extras["workers"] = probe("workers: 1 and 2 Celery workers", cmd, root / "workers.log", args.timeout)
    return extras


def build_rows(doc: dict) -> list[dict]:
    """Every row of the table from a results JSON (pytest-benchmark's, with "bench" added)."""
    plan, extras = doc["bench"]["plan"], doc["bench"]["extras"]
    by_workload: dict[str, dict] = {}
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        by_workload.setdefault(info["workload"], {})[info["side"]] = bench
    rows = []
    for name, wl in plan["workloads"].items():
        rows += workload_rows(name, wl, by_workload.get(name, {}), plan["max_noise"])
    if "sensor" in extras:
        rows.append(sensor_row(extras["sensor"]))
    if "stack" in by_workload:
        rows.append(stack_row(by_workload["stack"]))
    if "workers" in extras:
        rows += workers_rows(extras["workers"])
    return rows


def run_benchmarks(plan: dict, root: Path, out: Path) -> int:
    """pytest-benchmark on bench_experiment.py (and bench_stack.py) with ``plan``; its JSON to ``out``."""
    import pytest

    (root / "plan.json").write_text(json.dumps(plan))
    os.environ["BENCH_PLAN"] = str(root / "plan.json")
    options = [
        "--benchmark-columns=min,median,max,rounds",
        "--benchmark-sort=name",
        f"--benchmark-json={out}",
    ]
    suites = [BENCH / "bench_experiment.py", *([BENCH / "bench_stack.py"] if plan["stack"] else [])]
    return pytest.main([*map(str, suites), "-s", "-q", *options])


def report(doc: dict, started: datetime, out: Path) -> None:
    """Print the table, warn if the code changed during the run, and add the table to the JSON."""
    bench = doc["bench"]
    if code_fingerprint() != bench["code_sha256"]:
        print(
            "WARNING: experiments_dagster/ changed during the benchmark; runs may mix two versions.",
            flush=True,
        )
    cpu = doc["machine_info"].get("cpu", {}).get("brand_raw", "unknown CPU")
    repeats = ", ".join(f"{w} {wl['repeats']}" for w, wl in bench["plan"]["workloads"].items())
    print(
        f"\nResults ({datetime.now(UTC):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} x {cpu}, "
        f"{bench['mem_total_bytes'] / GIB:.1f} GiB RAM; repeats: {repeats})\n",
        flush=True,
    )
    bench["table"] = print_table(build_rows(doc))
    print(f"\n{FOOTER}", flush=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nraw numbers: {out.relative_to(PROJECT)}", flush=True)


def plan_of(args: argparse.Namespace, names: list[str], root: Path, generated: dict) -> dict:
    yaml_file = PROJECT / "dagster_home" / "dagster.yaml"
    repeats = {w: args.large_repeats if w == "large" else args.repeats for w in names}
    return {
        "root": str(root),
        "data_dir": str(root / "data"),
        "timeout": args.timeout,
        "wait_idle": args.wait_idle,
        "max_noise": args.max_noise,
        "plots_only_repeats": args.plots_only_repeats,
        "keep": args.keep,
        "stack": not args.skip_stack and "small" in names,
        "dagster_yaml": yaml_file.read_text() if yaml_file.is_file() else None,
        "workloads": {w: {**generated[w], "repeats": repeats[w]} for w in names},
    }


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args()
    if args.summarize:
        doc = json.loads(args.summarize.read_text())
        print_table(build_rows(doc))
        return 0
    names = [w for w in ALL_WORKLOADS if w in {n.strip() for n in args.workloads.split(",")}]
    if not names or set(filter(None, args.workloads.split(","))) - set(ALL_WORKLOADS):
        sys.exit(f"unknown workloads in {args.workloads!r}; choose from {','.join(ALL_WORKLOADS)}")
    if "large" in names and args.large_repeats < 3:
        print(
            f"note: large runs {args.large_repeats} time(s) per side; its 'median' is that run.", flush=True
        )
    started, own_root = datetime.now(UTC), args.workdir is None
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="experiments-bench-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(f"benchmark {started:%Y-%m-%d %H:%M UTC} on {os.cpu_count()} CPUs; workdir {root}", flush=True)
    code = code_fingerprint()
    generated = generate(names, root / "data", args.timeout)
    if generated is None:
        return 1
    extras = run_probes(args, root, root / "data", generated.get("small"))
    plan = plan_of(args, names, root, generated)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    status = run_benchmarks(plan, root, out)
    if not out.is_file():
        print(f"pytest-benchmark wrote no results (pytest exit {status}); logs under {root}", file=sys.stderr)
        return 1
    doc = json.loads(out.read_text())
    packages = ("dagster", "mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy", "pytest-benchmark")
    doc["bench"] = {
        "plan": plan,
        "extras": extras,
        "targets": TARGETS,
        "code_sha256": code,
        "args": str(vars(args)),
        "packages": {p: md.version(p) for p in packages},
        "mem_total_bytes": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
    }
    report(doc, started, out)
    if not args.keep:
        shutil.rmtree(root / "data", ignore_errors=True)
        shutil.rmtree(root / "sensor", ignore_errors=True)
        if own_root and status == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept under {root}", flush=True)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
