"""pytest-benchmark suite: baseline and ours per workload, plots-only, and hash_file throughput.

Run by ``benchmarks/run.py``, which generates the workloads and passes their plan in the
environment variable ``BENCH_PLAN`` (a JSON file); without it nothing is collected. Not part of
the unit tests (``testpaths`` is ``experiments_dagster_tests``). pytest-benchmark times every
round (``benchmark.pedantic``: a setup per round that is not timed, no calibration, no warm-up)
and keeps the statistics; ``extra_info`` holds what a round's process used and what its MLflow
store says, for the driver's table.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from procs import clean_env, last_json, run_process, tail, wait_for_idle

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
OURS_CLI = str(Path(sys.executable).parent / "experiments-dagster")
SIDES = ("baseline", "ours")
PLAN: dict = json.loads(Path(os.environ["BENCH_PLAN"]).read_text()) if os.environ.get("BENCH_PLAN") else {}
WORKLOADS: dict[str, dict] = PLAN.get("workloads", {})
LAST_OURS: dict[str, dict] = {}  # workload -> the last successful round of ours (its stores are kept)


def new_store(mdir: Path) -> tuple[str, dict]:
    """A fresh, migrated SQLite MLflow store in ``mdir/store``, created in its own process (not timed)."""
    uri = f"sqlite:///{mdir / 'store' / 'mlflow.db'}"
    (mdir / "store").mkdir(parents=True)
    started = time.perf_counter()
    result = run_process(
        [PYTHON, str(BENCH / "probes.py"), "create-store", "--uri", uri],
        clean_env(),
        mdir / "create_store.log",
        PLAN["timeout"],
    )
    return uri, {**result, "seconds": time.perf_counter() - started}


def side_command(side: str, wl: dict, mdir: Path, uri: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one side on one workload."""
    if side == "baseline":
        artifacts = (mdir / "store" / "artifacts").as_uri()
        args = ["--data-file", wl["path"], "--tracking-uri", uri, "--artifact-root", artifacts]
        args += ["--summary", str(mdir / "baseline_summary.json")]  # its own phase timings, kept in the JSON
        return [PYTHON, str(BENCH / "baseline.py"), *args], clean_env()
    home = mdir / "dagster_home"
    home.mkdir()
    # The project's own instance settings, snapshotted by run.py so every round uses the same.
    if PLAN.get("dagster_yaml") is not None:
        (home / "dagster.yaml").write_text(PLAN["dagster_yaml"])
    env = clean_env(EXPERIMENTS_DATA_DIR=PLAN["data_dir"], MLFLOW_TRACKING_URI=uri, DAGSTER_HOME=str(home))
    return [OURS_CLI, "run", "--dataset", wl["dataset"], "--version", wl["version"]], env


def read_back(rounds: list[dict], log: Path) -> None:
    """Add what each successful round's MLflow store says (fit/predict seconds, status) to it."""
    uris = [r["uri"] for r in rounds if r["returncode"] == 0]
    if not uris:
        return
    cmd = [PYTHON, str(BENCH / "probes.py"), "readback", *(a for u in uris for a in ("--uri", u))]
    run_process(cmd, clean_env(), log, PLAN["timeout"])
    by_uri = {d["uri"]: d for d in last_json(log).get("runs", [])}
    for r in rounds:
        if r.get("uri") in by_uri:
            r["readback"] = by_uri[r["uri"]]


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", end=" ", flush=True)


def tell(result: dict) -> None:
    """What a round's process used, or why it failed (with the end of its log)."""
    if result["returncode"] != 0:
        why = "timed out" if result["timed_out"] else f"exit {result['returncode']}"
        print(f"FAILED ({why}); log: {result['log']}\n{tail(Path(result['log']))}", flush=True)
        return
    print(
        f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, others used {result['foreign_cpu_share']:.0%} "
        "of the CPUs",
        flush=True,
    )


@pytest.mark.parametrize(("workload", "side"), [(w, s) for w in WORKLOADS for s in SIDES])
def test_wall(benchmark, workload: str, side: str) -> None:
    """One side on one workload: a cold process per round, each on a fresh store."""
    wl, rounds = WORKLOADS[workload], []
    root = Path(PLAN["root"]) / workload

    def setup() -> tuple[tuple, dict]:
        wait_for_idle(PLAN["wait_idle"], PLAN["max_noise"])
        mdir = root / f"{len(rounds)}-{side}"
        uri, store = new_store(mdir)
        cmd, env = side_command(side, wl, mdir, uri)
        rounds.append({"uri": uri, "dir": str(mdir), "store": store})
        say(f"{workload} {side} round {len(rounds)}/{wl['repeats']} ...")
        return (cmd, env, mdir / f"{side}.log"), {}

    def target(cmd: list[str], env: dict[str, str], log: Path) -> None:
        rounds[-1].update(run_process(cmd, env, log, PLAN["timeout"]))
        tell(rounds[-1])
        summary = Path(rounds[-1]["dir"]) / "baseline_summary.json"
        if summary.is_file():
            rounds[-1]["baseline_summary"] = json.loads(summary.read_text())

    benchmark.group = workload
    benchmark.pedantic(target, setup=setup, rounds=wl["repeats"], warmup_rounds=0)
    read_back(rounds, root / f"readback-{side}.log")
    benchmark.extra_info.update(workload=workload, side=side, rounds=rounds)
    ok = [r for r in rounds if r["returncode"] == 0]
    if side == "ours" and ok and workload in ("small", "medium"):
        LAST_OURS[workload] = ok[-1]
    for r in rounds:
        if r is not LAST_OURS.get(workload) and r["returncode"] == 0 and not PLAN["keep"]:
            shutil.rmtree(r["dir"], ignore_errors=True)
    if len(ok) < len(rounds):
        pytest.fail(
            f"{len(rounds) - len(ok)} round(s) failed; their logs are kept under {root}", pytrace=False
        )


@pytest.mark.parametrize("workload", [w for w in WORKLOADS if w in ("small", "medium")])
def test_plots_only(benchmark, workload: str) -> None:
    """``experiments-dagster run ... --select evaluation_plots`` on the last full run of ours."""
    last = LAST_OURS.get(workload)
    if last is None:
        pytest.skip("no successful full run of ours to redraw")
    mdir, rounds = Path(last["dir"]), []
    env = clean_env(
        EXPERIMENTS_DATA_DIR=PLAN["data_dir"],
        MLFLOW_TRACKING_URI=last["uri"],
        DAGSTER_HOME=str(mdir / "dagster_home"),
    )
    version = WORKLOADS[workload]["version"]
    # The README's command with an asset selection: what a user runs to redraw the plots.
    cmd = [OURS_CLI, "run", "--dataset", workload, "--version", version, "--select", "evaluation_plots"]

    def setup() -> tuple[tuple, dict]:
        wait_for_idle(PLAN["wait_idle"], PLAN["max_noise"])
        say(f"{workload} evaluation_plots alone {len(rounds) + 1}/{PLAN['plots_only_repeats']} ...")
        return (mdir / f"plots_only_{len(rounds)}.log",), {}

    def target(log: Path) -> None:
        result = run_process(cmd, env, log, PLAN["timeout"])
        result["success"] = result["returncode"] == 0 and "SUCCESS" in log.read_text(errors="replace")
        rounds.append(result)
        tell(result)

    benchmark.group = workload
    benchmark.pedantic(target, setup=setup, rounds=PLAN["plots_only_repeats"], warmup_rounds=0)
    benchmark.extra_info.update(workload=workload, side="plots-only", rounds=rounds)
    if not all(r["success"] for r in rounds):
        pytest.fail(f"plots-only failed; logs under {mdir}", pytrace=False)
    if not PLAN["keep"]:
        shutil.rmtree(mdir, ignore_errors=True)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_hash(benchmark, workload: str) -> None:
    """``experiments_dagster.core.dataset.hash_file`` on the workload's CSV: cold once, then warm."""
    from probes import drop_from_page_cache

    from experiments_dagster.core.dataset import hash_file

    path = Path(WORKLOADS[workload]["path"])
    uncached = drop_from_page_cache(path)
    started = time.perf_counter()
    hash_file(path)
    cold = time.perf_counter() - started
    benchmark.group = "hash_file"
    benchmark.pedantic(hash_file, args=(path,), rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(
        workload=workload,
        side="hash",
        bytes=path.stat().st_size,
        cold_seconds=cold,
        cold_is_uncached=uncached,
    )
