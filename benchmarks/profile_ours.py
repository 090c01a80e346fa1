"""Profile OUR side (`experiments-dagster run`) on one workload and say where the time goes.

    .venv/bin/pip install pyinstrument      # a local tool, not a project dependency
    .venv/bin/python benchmarks/profile_ours.py --workload small [--out benchmarks/results/profile-small]

Generates the workload, creates a fresh MLflow store (not profiled), then runs
`experiments-dagster run --dataset <w> --version v1` under pyinstrument in a cold process
(fresh DAGSTER_HOME). Writes <out>.html, <out>.txt and <out>.pyisession, and prints the
wall time split two ways:

- by step: the Dagster step (asset or check) that was executing, plus start-up before the
  first step and shutdown after the last one;
- by what it was doing: the outermost recognised call on the stack (store opening, model
  saving, plot rendering, IO-manager pickling, audits, fit, ...), with every module load
  counted as imports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from procs import clean_env

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
BIN = Path(sys.executable).parent

# Which part of the graph was running: the asset (or check) function on the stack.
STEPS = {
    ("raw_data", "data_assets.py"): "asset raw_data",
    ("data_hash", "data_assets.py"): "asset data_hash",
    ("splits", "training_assets.py"): "asset splits",
    ("plan_search", "search_ops.py"): "asset search_trials",  # search_trials is a graph of these ops
    ("search_worker", "search_ops.py"): "asset search_trials",
    ("collect_search", "search_ops.py"): "asset search_trials",
    ("fold_models", "training_assets.py"): "asset fold_models",
    ("cv_metrics", "training_assets.py"): "asset cv_metrics",
    ("final_model", "training_assets.py"): "asset final_model",
    ("evaluation_plots", "report_assets.py"): "asset evaluation_plots",
    ("repro_manifest", "report_assets.py"): "asset repro_manifest",
    ("model_promotion", "registry_assets.py"): "asset model_promotion",
    ("_check", "checks.py"): "asset checks (audits)",
    ("champion_alias_matches_decision", "registry_assets.py"): "asset checks (audits)",
    ("handle_output", "dagster/"): "IO manager (pickle asset values)",
    ("load_input", "dagster/"): "IO manager (pickle asset values)",
}

# What the time was spent on. The outermost matching frame names the bucket, except that
# module loading (`_find_and_load`) always counts as imports. (label, function, file substring)
BUCKETS = [
    ("Dagster instance open (DAGSTER_HOME storages)", "get", "dagster/_core/instance/instance.py"),
    ("Dagster run creation + planned-event writes", "create_run_for_job", "dagster/"),
    ("MLflow store open (client, SQLAlchemy engines)", "open_sqlite_client", "experiments_dagster/"),
    ("MLflow store open (client, SQLAlchemy engines)", "_client", "experiments_dagster/tracking/store.py"),
    ("IO manager: pickle.dump of asset values", "handle_output", "dagster/"),
    ("IO manager: pickle.load of asset values", "load_input", "dagster/"),
    ("audits: asset checks + promotion audit", "audit", "experiments_dagster/tracking/audit.py"),
    (
        "model saving: pyfunc model (skops, requirements, signature, copy)",
        "log_pyfunc_model",
        "experiments_dagster/",
    ),
    ("model saving: joblib pickle + sha256", "dump_pickle", "experiments_dagster/"),
    ("model registry (register version, aliases)", "", "experiments_dagster/experiment/registry.py"),
    ("plots: rendering PNG (savefig)", "savefig", "matplotlib/"),
    ("plots: predictions, importance, figure building", "plot_set", "experiments_dagster/"),
    ("requirements.txt (scan of installed distributions)", "installed_requirements", "experiments_dagster/"),
    ("git subprocesses", "git_state", "experiments_dagster/"),
    ("read CSV", "load_table", "experiments_dagster/"),
    ("sha256 of the file", "hash_file", "experiments_dagster/"),
    ("mlflow.log_input (dataset schema)", "log_dataset", "experiments_dagster/"),
    ("train/test split + validation", "prepare_experiment", "experiments_dagster/"),
    ("fit (folds + final)", "fit_timed", "experiments_dagster/"),
    ("predict + fold metrics", "predict", "experiments_dagster/ml/metrics.py"),
    ("predict + fold metrics", "task_metrics", "experiments_dagster/ml/metrics.py"),
    ("predict + fold metrics", "final_metrics", "experiments_dagster/"),
    ("MLflow artifact copy (log_artifact/log_bytes/log_json)", "log_file", "experiments_dagster/"),
    ("Dagster run creation + planned-event writes", "create_run_for_job", "dagster/"),
]
# Fallbacks when no bucket above is on the stack; here the innermost match wins.
GENERIC = [
    ("MLflow tracking calls (runs, params, metrics, tags)", "", "mlflow/tracking/client.py"),
    ("Dagster event log writes (SQLite)", "store_event", "dagster/"),
    ("Dagster step machinery (events, metadata, logging)", "", "dagster/_core/execution/"),
    ("Dagster definitions / job resolution", "", "dagster/_core/definitions/"),
]
IMPORTS = ("_find_and_load", "<frozen importlib._bootstrap>")


def _matches(frame, function: str, where: str) -> bool:
    return (not function or frame.function == function) and where in (frame.file_path or "")


def split(session) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per step (outermost match) and per bucket (see BUCKETS), from pyinstrument's tree."""
    by_step: dict[str, float] = defaultdict(float)
    by_bucket: dict[str, float] = defaultdict(float)
    seen_step = [False]

    def walk(frame, step, bucket, generic, in_import):
        if step is None:
            for (fn, where), label in STEPS.items():
                if _matches(frame, fn, where):
                    step, seen_step[0] = label, True
                    break
        if not in_import and _matches(frame, *IMPORTS):
            in_import = True
            bucket = "imports (lazy, inside steps)" if seen_step[0] else "imports (start-up)"
        elif bucket is None:
            bucket = next((label for label, fn, where in BUCKETS if _matches(frame, fn, where)), None)
            generic = next((label for label, fn, where in GENERIC if _matches(frame, fn, where)), generic)
        own = frame.time - sum(ch.time for ch in frame.children)
        if own > 0:
            by_step[
                step or ("start-up (before the first step)" if not seen_step[0] else "Dagster between steps")
            ] += own
            by_bucket[bucket or generic or "other"] += own
        for child in frame.children:
            walk(child, step, bucket, generic, in_import)

    walk(session.root_frame(), None, None, None, False)
    return dict(by_step), dict(by_bucket)


def prepare(root: Path, workload: str) -> dict[str, str]:
    """Generate the workload and a fresh MLflow store under ``root`` (not profiled); ours' environment."""
    gen = [
        sys.executable,
        str(BENCH / "workloads.py"),
        "--data-dir",
        str(root / "data"),
        "--workloads",
        workload,
    ]
    subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
    (root / "store").mkdir()
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    store = [sys.executable, str(BENCH / "probes.py"), "create-store", "--uri", uri]
    subprocess.run(store, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home = root / "dagster_home"
    home.mkdir()
    if (PROJECT / "dagster_home" / "dagster.yaml").is_file():
        shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return clean_env(EXPERIMENTS_DATA_DIR=str(root / "data"), MLFLOW_TRACKING_URI=uri, DAGSTER_HOME=str(home))


def run_profiled(workload: str, out: Path, interval: float) -> tuple[Path, float] | None:
    """Generate the workload, create the store, run ours under pyinstrument; (session file, wall s)."""
    root = Path(tempfile.mkdtemp(prefix="experiments-profile-"))
    session_file = out.with_suffix(".pyisession")
    try:
        env = prepare(root, workload)
        cmd = [
            str(BIN / "pyinstrument"),
            "--interval",
            str(interval),
            "-r",
            "pyisession",
            "-o",
            str(session_file),
        ]
        # main(), not the console script: its quick exit (cli.exit_now) would end the
        # process before pyinstrument writes the session. Teardown is not profiled.
        cmd += [
            "-c",
            "import sys; from experiments_dagster.cli.main import main; sys.exit(main(sys.argv[1:]))",
        ]
        cmd += ["run", "--dataset", workload, "--version", "v1"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=PROJECT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            return None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return session_file, wall


def report(session, workload: str, wall: float | None, out: Path) -> None:
    """Write the session as HTML and text, print the time by step and by bucket, save them as JSON."""
    from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer

    out.with_suffix(".html").write_text(HTMLRenderer().render(session))
    out.with_suffix(".txt").write_text(
        ConsoleRenderer(unicode=True, color=False, show_all=False, time="seconds").render(session)
    )
    by_step, by_bucket = split(session)
    total = session.duration
    print(
        f"{workload}: wall {wall or 0:.1f}s under pyinstrument (profiled {total:.1f}s, "
        f"{session.cpu_time or 0:.1f}s CPU)\n"
    )
    for title, table in (("by step", by_step), ("by what it was doing", by_bucket)):
        print(f"{title}:")
        for label, secs in sorted(table.items(), key=lambda kv: -kv[1]):
            if secs >= 0.05:
                print(f"  {secs:7.2f}s  {secs / total:5.1%}  {label}")
        print()
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "workload": workload,
                "wall": wall,
                "profiled": total,
                "by_step": by_step,
                "by_bucket": by_bucket,
            },
            indent=2,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="small", choices=("small", "medium", "large"))
    parser.add_argument(
        "--out", type=Path, help="output prefix (default benchmarks/results/profile-<workload>)"
    )
    parser.add_argument("--analyze", type=Path, help="only analyze this saved .pyisession (no run)")
    parser.add_argument("--interval", type=float, default=0.005, help="pyinstrument sampling interval (s)")
    args = parser.parse_args()
    try:
        from pyinstrument.session import Session
    except ImportError:
        print(
            "pyinstrument is not installed: .venv/bin/pip install pyinstrument (a local tool only)",
            file=sys.stderr,
        )
        return 2
    out = args.out or BENCH / "results" / f"profile-{args.workload}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.analyze:
        session_file, wall = args.analyze, None
    else:
        profiled = run_profiled(args.workload, out, args.interval)
        if profiled is None:
            return 1
        session_file, wall = profiled

    report(Session.load(str(session_file)), args.workload, wall, out)
    print(f"profile: {out.with_suffix('.html')} / .txt / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
