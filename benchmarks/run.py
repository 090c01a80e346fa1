"""Benchmark: the project's `experiments-dagster run` against a plain MLflow script, cold, side by side.

    make bench                                   # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --workloads small,medium --repeats 3
    .venv/bin/python benchmarks/run.py --workloads large --large-repeats 1

Every measurement is a fresh process (a subprocess per run) on a fresh, already-created MLflow
SQLite store and (for ours) a fresh DAGSTER_HOME; baseline and ours alternate (B,O then O,B ...).
See benchmarks/README.md for what is measured and the targets. Raw numbers go to
benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
PYTHON = sys.executable
OURS_CLI = str(Path(sys.executable).parent / "experiments-dagster")
RESULTS = BENCH / "results"
ALL_WORKLOADS = ("small", "medium", "large")
SIDES = ("baseline", "ours")
GIB = 1024**3

# Targets: ours/baseline wall-time ratio per workload.
# The performance guard of the "public paths" change: ours <= 1.0x the plain script on small, <= 0.9x on medium.
RATIO_TARGETS = {"small": 1.0, "medium": 0.9}
LARGE_RSS_TARGET_BYTES = 4 * GIB
HASH_TARGET_GB_S = 1.0
OVERHEAD_TARGET = 1.5  # (wall - fit/predict) <= 1.5 x fit/predict, ours on medium
PLOTS_ONLY_TARGET = 0.25  # plots-only / full graph, ours on medium
SENSOR_TARGET_S = 1.0
SENSOR_FILES = 500


# --- processes ------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any MLflow/Dagster/data-dir setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_", "EXPERIMENTS_"))}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env.update(extra)
    return env


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_for_idle(max_wait: float, threshold: float = 0.15, sample: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` of the machine; return s waited."""
    start = time.perf_counter()
    while True:
        before = busy_cpu_seconds()
        time.sleep(sample)
        after = busy_cpu_seconds()
        waited = time.perf_counter() - start
        if before is None or after is None:
            return waited
        if (after - before) / (sample * (os.cpu_count() or 1)) < threshold or waited >= max_wait:
            return waited


IDLE_WAIT = {"max": 0.0}
INSTANCE_YAML: dict[str, str | None] = {"text": None}
QUIET = {"max": 0.15}  # --max-noise


def measure(cmd: list[str], env: dict[str, str], log: Path, timeout: float, cwd: Path = PROJECT) -> dict:
    """Run ``cmd`` to completion: wall seconds, exit code, peak RSS and CPU of that process tree.

    Peak RSS is ``ru_maxrss`` from ``wait4`` on the child: the largest resident set of the child
    or of any descendant it waited for (not their sum). ``foreign_cpu_share`` is the share of
    the machine's CPU that *other* processes used meanwhile (0 = we had the machine alone).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    waited = wait_for_idle(IDLE_WAIT["max"]) if IDLE_WAIT["max"] > 0 else 0.0
    with open(log, "wb") as out:
        busy_before = busy_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): do not leave the run behind
            kill()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        busy_after = busy_cpu_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)
    own = usage.ru_utime + usage.ru_stime
    foreign = None
    if busy_before is not None and busy_after is not None and wall > 0:
        foreign = max(0.0, (busy_after - busy_before - own) / (wall * (os.cpu_count() or 1)))
    return {
        "wall_seconds": wall,
        "returncode": proc.returncode,
        "timed_out": timed_out.is_set(),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "foreign_cpu_share": foreign,
        "idle_wait_seconds": waited,
        "log": str(log),
    }


def last_json(log: Path) -> dict:
    """The JSON document a probe printed on its last stdout line."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- machine --------------------------------------------------------------------------------
def code_fingerprint() -> dict:
    """sha256 over the project's source files (the code under test changes between runs)."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted((PROJECT / "experiments_dagster").rglob("*.py"))
    newest = 0.0
    for path in files:
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {
        "sha256": digest.hexdigest(),
        "files": len(files),
        "newest_mtime": datetime.fromtimestamp(newest, UTC).isoformat() if files else None,
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    try:
        out = subprocess.run(
            [
                PYTHON,
                "-c",
                "import importlib.metadata as m, json; print(json.dumps({d: m.version(d) "
                "for d in ('dagster', 'mlflow', 'xgboost-cpu', 'scikit-learn', 'pandas', 'numpy')}))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        versions = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_bytes": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


# --- one measurement ------------------------------------------------------------------------
def new_store(mdir: Path, timeout: float) -> tuple[str, dict]:
    """A fresh, migrated SQLite MLflow store in ``mdir/store`` (created in its own process)."""
    store = mdir / "store"
    store.mkdir(parents=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    m = measure(
        [PYTHON, str(BENCH / "probes.py"), "create-store", "--uri", uri],
        clean_env(),
        mdir / "create_store.log",
        timeout,
    )
    m.update(last_json(mdir / "create_store.log"))
    return uri, m


def run_side(side: str, wl: dict, mdir: Path, data_dir: Path, timeout: float) -> dict:
    uri, store = new_store(mdir, timeout)
    if store["returncode"] != 0:
        return {
            "side": side,
            "store": store,
            "returncode": store["returncode"],
            "error": "store creation failed",
        }
    artifacts = (mdir / "store" / "artifacts").as_uri()
    if side == "baseline":
        cmd = [
            PYTHON,
            str(BENCH / "baseline.py"),
            "--data-file",
            wl["path"],
            "--tracking-uri",
            uri,
            "--artifact-root",
            artifacts,
            "--summary",
            str(mdir / "baseline_summary.json"),
        ]
        env = clean_env()
    else:
        home = mdir / "dagster_home"
        home.mkdir()
        # The project's own instance settings (telemetry off, run concurrency ...), as in its
        # persistent dagster_home/, snapshotted once at the start so every run uses the same.
        if INSTANCE_YAML["text"] is not None:
            (home / "dagster.yaml").write_text(INSTANCE_YAML["text"])
        cmd = [OURS_CLI, "run", "--dataset", wl["dataset"], "--version", wl["version"]]
        env = clean_env(EXPERIMENTS_DATA_DIR=str(data_dir), MLFLOW_TRACKING_URI=uri, DAGSTER_HOME=str(home))
    m = measure(cmd, env, mdir / f"{side}.log", timeout)
    m.update({"side": side, "uri": uri, "store": store, "dir": str(mdir)})
    if side == "baseline" and (mdir / "baseline_summary.json").is_file():
        m["baseline_summary"] = json.loads((mdir / "baseline_summary.json").read_text())
    return m


# --- statistics and the table ---------------------------------------------------------------
def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_s(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def summarize(workloads: list[dict], extras: dict) -> tuple[list[dict], dict]:
    """Table rows (one list for every workload) and a per-workload summary for the JSON."""
    rows: list[dict] = []
    summary: dict = {}
    for wl in workloads:
        name, runs = wl["name"], wl["runs"]
        ok = {s: [r for r in runs if r["side"] == s and r.get("returncode") == 0] for s in SIDES}
        failed = {s: [r for r in runs if r["side"] == s and r.get("returncode") != 0] for s in SIDES}
        wall = {s: [r["wall_seconds"] for r in ok[s]] for s in SIDES}
        rss = {s: [r["peak_rss_bytes"] for r in ok[s] + failed[s] if "peak_rss_bytes" in r] for s in SIDES}
        fp = {s: [r.get("readback", {}).get("fit_predict_seconds") for r in ok[s]] for s in SIDES}
        over = {
            s: [
                r["wall_seconds"] - r["readback"]["fit_predict_seconds"]
                for r in ok[s]
                if r.get("readback", {}).get("fit_predict_seconds") is not None
            ]
            for s in SIDES
        }
        over_ratio = [
            (r["wall_seconds"] - r["readback"]["fit_predict_seconds"]) / r["readback"]["fit_predict_seconds"]
            for r in ok["ours"]
            if r.get("readback", {}).get("fit_predict_seconds")
        ]
        quiet_over_ratio = [
            (r["wall_seconds"] - r["readback"]["fit_predict_seconds"]) / r["readback"]["fit_predict_seconds"]
            for r in ok["ours"]
            if r.get("readback", {}).get("fit_predict_seconds")
            and (r.get("foreign_cpu_share") or 0.0) <= QUIET["max"]
        ]
        stores = [
            r["store"]["wall_seconds"] for r in runs if "store" in r and r["store"].get("returncode") == 0
        ]
        mb, mo = med(wall["baseline"]), med(wall["ours"])
        ratio = mo / mb if mb and mo else None
        # Runs during which other processes used at most --max-noise of the CPUs. Verdicts use
        # them when both sides have at least one; every run is shown either way.
        quiet_runs = {
            s: [r for r in ok[s] if (r.get("foreign_cpu_share") or 0.0) <= QUIET["max"]] for s in SIDES
        }
        qwall = {s: [r["wall_seconds"] for r in quiet_runs[s]] for s in SIDES}
        qb, qo = med(qwall["baseline"]), med(qwall["ours"])
        qratio = qo / qb if qb and qo else None
        use_quiet = qratio is not None
        v_ratio = qratio if use_quiet else ratio
        full_ours = qo if qo else mo
        label = f"{name} ({wl['rows']:,} x {wl['columns']})"
        n = {s: f"{len(ok[s])}/{len(ok[s]) + len(failed[s])}" for s in SIDES}

        target, good = "-", None
        if name in RATIO_TARGETS:
            target = f"ours/base <= {RATIO_TARGETS[name]:.2f}x"
            good = v_ratio is not None and v_ratio <= RATIO_TARGETS[name] and not failed["ours"]
        elif name == "large":
            target = "ours completes"
            finished = [r for r in ok["ours"] if r.get("readback", {}).get("status") == "FINISHED"]
            good = bool(finished) and not failed["ours"]
        rows.append(
            {
                "workload": label,
                "measure": f"wall s, median (min-max), ok runs b={n['baseline']} o={n['ours']}",
                "baseline": fmt_s(wall["baseline"]),
                "ours": fmt_s(wall["ours"]),
                "ratio": f"{ratio:.2f}x" if ratio else "-",
                "target": target if not use_quiet else "(see quiet row)",
                "verdict": verdict(good) if not use_quiet else "",
            }
        )
        rows.append(
            {
                "workload": "",
                "measure": f"wall s, quiet runs only (others used <= {QUIET['max']:.0%} CPU), "
                f"n b={len(qwall['baseline'])} o={len(qwall['ours'])}",
                "baseline": fmt_s(qwall["baseline"]),
                "ours": fmt_s(qwall["ours"]),
                "ratio": f"{qratio:.2f}x" if qratio else "-",
                "target": target if use_quiet else "-",
                "verdict": verdict(good) if use_quiet else "-",
            }
        )

        cpu = {s: [r["cpu_user_seconds"] + r["cpu_system_seconds"] for r in ok[s]] for s in SIDES}
        cb, co = med(cpu["baseline"]), med(cpu["ours"])
        rows.append(
            {
                "workload": "",
                "measure": "CPU s user+sys, median (less sensitive to other load than wall)",
                "baseline": fmt_s(cpu["baseline"]),
                "ours": fmt_s(cpu["ours"]),
                "ratio": f"{co / cb:.2f}x" if cb and co else "-",
                "target": "-",
                "verdict": "-",
            }
        )
        peak = {s: max(rss[s]) if rss[s] else None for s in SIDES}
        target, good = "-", None
        if name == "large":
            target = "ours <= 4096 MiB"
            good = peak["ours"] is not None and peak["ours"] <= LARGE_RSS_TARGET_BYTES
        rows.append(
            {
                "workload": "",
                "measure": "peak RSS MiB (max over runs)",
                "baseline": f"{peak['baseline'] / 2**20:.0f}" if peak["baseline"] else "-",
                "ours": f"{peak['ours'] / 2**20:.0f}" if peak["ours"] else "-",
                "ratio": f"{peak['ours'] / peak['baseline']:.2f}x"
                if peak["baseline"] and peak["ours"]
                else "-",
                "target": target,
                "verdict": verdict(good),
            }
        )
        rows.append(
            {
                "workload": "",
                "measure": "fit+predict s (from MLflow runs: folds + final fit)",
                "baseline": fmt_s(fp["baseline"]),
                "ours": fmt_s(fp["ours"]),
                "ratio": "-",
                "target": "-",
                "verdict": "-",
            }
        )
        mor = med(quiet_over_ratio) if quiet_over_ratio else med(over_ratio)
        target, good = "-", None
        if name == "medium":
            target = f"ours overhead <= {OVERHEAD_TARGET}x fit+predict"
            good = mor is not None and mor <= OVERHEAD_TARGET
        rows.append(
            {
                "workload": "",
                "measure": "overhead s = wall - fit+predict; ratio = ours overhead/(fit+predict), quiet runs",
                "baseline": fmt_s(over["baseline"]),
                "ours": fmt_s(over["ours"]),
                "ratio": f"{mor:.2f}x" if mor is not None else "-",
                "target": target,
                "verdict": verdict(good),
            }
        )
        noise = {
            s: [r["foreign_cpu_share"] for r in ok[s] if r.get("foreign_cpu_share") is not None]
            for s in SIDES
        }
        dropped = {s: sum(1 for r in wl.get("discarded_noisy", []) if r.get("side") == s) for s in SIDES}
        rows.append(
            {
                "workload": "",
                "measure": "noise: CPU share used by other processes, median (max)"
                + (
                    f"; re-measured b={dropped['baseline']} o={dropped['ours']}"
                    if any(dropped.values())
                    else ""
                ),
                **{s: f"{med(noise[s]):.0%} ({max(noise[s]):.0%})" if noise[s] else "-" for s in SIDES},
                "ratio": "-",
                "target": "~0% for clean figures",
                "verdict": "-",
            }
        )
        rows.append(
            {
                "workload": "",
                "measure": "MLflow store creation s (own process, before each run)",
                "baseline": "",
                "ours": fmt_s(stores),
                "ratio": "-",
                "target": "not counted above",
                "verdict": "-",
            }
        )
        h = wl.get("hash", {})
        target, good = "-", None
        if name == "large":
            target = f"warm >= {HASH_TARGET_GB_S:.1f} GB/s"
            good = h.get("warm_gb_per_s") is not None and h["warm_gb_per_s"] >= HASH_TARGET_GB_S
        rows.append(
            {
                "workload": "",
                "measure": f"hash_file GB/s on {wl['bytes'] / 1e6:,.1f} MB: warm cache (cold)",
                "baseline": "",
                "ours": f"{h['warm_gb_per_s']:.2f} ({h['cold_gb_per_s']:.2f})" if h else "-",
                "ratio": "-",
                "target": target,
                "verdict": verdict(good),
            }
        )
        po = wl.get("plots_only")
        po_ratio = None
        if po is not None:
            po_wall = [r["wall_seconds"] for r in po if r.get("returncode") == 0 and r.get("success")]
            po_ratio = med(po_wall) / full_ours if po_wall and full_ours else None
            target, good = "-", None
            if name == "medium":
                target = f"<= {PLOTS_ONLY_TARGET:.2f}x full graph"
                good = po_ratio is not None and po_ratio <= PLOTS_ONLY_TARGET
            rows.append(
                {
                    "workload": "",
                    "measure": "ours: evaluation_plots alone (cold process) vs full graph (quiet median)",
                    "baseline": "",
                    "ours": fmt_s(po_wall),
                    "ratio": f"{po_ratio:.2f}x" if po_ratio else "-",
                    "target": target,
                    "verdict": verdict(good),
                }
            )
        summary[name] = {
            "wall_median": {"baseline": mb, "ours": mo},
            "wall_median_quiet": {"baseline": qb, "ours": qo},
            "ratio_quiet": qratio,
            "cpu_median": {"baseline": cb, "ours": co},
            "ratio_ours_over_baseline": ratio,
            "peak_rss_bytes": peak,
            "fit_predict_median": {s: med(fp[s]) for s in SIDES},
            "overhead_median": {s: med(over[s]) for s in SIDES},
            "ours_overhead_over_fit_predict": mor,
            "store_creation_median": med(stores),
            "hash": h,
            "plots_only_over_full": po_ratio,
            "failed_runs": {s: len(failed[s]) for s in SIDES},
            "foreign_cpu_share_median": {s: med(noise[s]) for s in SIDES},
        }
    sensor = extras.get("sensor")
    if sensor is not None:
        if not sensor.get("implemented"):
            rows.append(
                {
                    "workload": "sensor",
                    "measure": f"dataset_version_sensor, one tick over {SENSOR_FILES} files",
                    "baseline": "",
                    "ours": "not implemented yet",
                    "ratio": "-",
                    "target": f"<= {SENSOR_TARGET_S:.0f} s",
                    "verdict": "MISS",
                }
            )
        else:
            worst = sensor.get("max_tick_seconds")
            ticks = ", ".join(f"{t['tick']} {t['seconds']:.3f}" for t in sensor.get("ticks", []))
            rows.append(
                {
                    "workload": "sensor",
                    "measure": f"dataset_version_sensor over {SENSOR_FILES} files, slowest of 3 ticks "
                    f"(s: {ticks or 'failed'})",
                    "baseline": "",
                    "ours": f"{worst:.3f}" if worst is not None else "error",
                    "ratio": "-",
                    "target": f"<= {SENSOR_TARGET_S:.0f} s",
                    "verdict": verdict(worst is not None and worst <= SENSOR_TARGET_S),
                }
            )
    stack = extras.get("stack")
    if stack is not None:
        times = stack.get("times") or {}
        emb, prod = med(times.get("embedded", [])), med(times.get("stack", []))
        rows.append(
            {
                "workload": "stack",
                "measure": "small, `experiments-dagster run`: embedded default (baseline column) vs the "
                f"production profile on a local stack (ours column), wall s median of {len(times.get('stack', []))}"
                f"; stack start {stack.get('stack_start_seconds', 0):.0f} s, not counted",
                "baseline": fmt_s(times.get("embedded", [])) if emb is not None else "error",
                "ours": fmt_s(times.get("stack", [])) if prod is not None else "error",
                "ratio": f"{prod / emb:.2f}x" if emb and prod else "-",
                "target": "- (what the server costs)",
                "verdict": "-" if emb and prod else "MISS",
            }
        )
    workers = extras.get("workers")
    if workers is not None:
        rows.extend(workers_rows(workers))
    return rows, summary


def workers_rows(doc: dict) -> list[dict]:
    """The 'workers' rows: backfill throughput and search wall time, 1 worker against 2."""
    eph = doc.get("experiments_per_hour") or {}
    one, two = eph.get("1"), eph.get("2")
    runs = [m for m in doc.get("backfill", []) if m.get("workers") in (1, 2)]
    ok = sum(1 for m in runs for s in m.get("statuses", []) if s == "SUCCESS")
    total = sum(m.get("versions", 0) for m in runs)
    noise = [m["foreign_cpu_share"] for m in runs if m.get("foreign_cpu_share") is not None]
    rows = [
        {
            "workload": "workers",
            "measure": f"backfill of {doc.get('versions', '?')} small versions on a local stack, experiments/hour "
            "(launch to last run end): 1 Celery worker (baseline column) vs 2 (ours column); "
            f"runs SUCCESS {ok}/{total}; others used {max(noise):.0%} of the CPUs at most"
            if noise
            else "backfill on a local stack, experiments/hour: 1 vs 2 Celery workers",
            "baseline": f"{one:.0f}" if one else "error",
            "ours": f"{two:.0f}" if two else "error",
            "ratio": f"{two / one:.2f}x" if one and two else "-",
            "target": "- (2 cores; see README)",
            "verdict": "-" if one and two and ok == total else "MISS",
        }
    ]
    status = doc.get("search_status", "not measured")
    sw = doc.get("search_wall_seconds") or {}
    s1, s2 = sw.get("1"), sw.get("2")
    measured = status == "measured"
    rows.append(
        {
            "workload": "",
            "measure": f"search of {doc.get('trials', '?')} trials, `experiments-dagster run` wall s: "
            "search.workers 1 (baseline column) vs 2 (ours column)" + ("" if measured else f": {status}"),
            "baseline": (f"{s1:.1f}" if s1 else "error") if measured else "n/a",
            "ours": (f"{s2:.1f}" if s2 else "error") if measured else "n/a",
            "ratio": f"{s2 / s1:.2f}x" if s1 and s2 else "-",
            "target": "-",
            "verdict": "-",
        }
    )
    ps = doc.get("per_step") or {}
    pe = doc.get("per_experiment") or {}
    if ps.get("steps_measured"):
        rows.append(
            {
                "workload": "",
                "measure": f"per step (event log, {ps['steps_measured']} steps): median step s; queue wait s "
                "(submitted -> STEP_START); steps and Celery task s per experiment",
                "baseline": "",
                "ours": f"{ps['step_seconds_median']:.2f}; {ps['queue_wait_seconds_median']:.2f}; "
                f"{ps['steps_per_experiment']:.0f}; {pe.get('celery_task_seconds') or 0:.0f}",
                "ratio": "-",
                "target": "-",
                "verdict": "-",
            }
        )
    return rows


def print_table(rows: list[dict]) -> str:
    cols = [
        ("workload", "workload"),
        ("measure", "measure"),
        ("baseline", "baseline"),
        ("ours", "ours"),
        ("ratio", "ratio"),
        ("target", "target"),
        ("verdict", ""),
    ]
    widths = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in cols}
    lines = [
        "  ".join(h.ljust(widths[k]) for k, h in cols).rstrip(),
        "  ".join("-" * widths[k] for k, _ in cols),
    ]
    for r in rows:
        if r["workload"] and lines[-1][0] != "-":
            lines.append("")
        lines.append("  ".join(str(r[k]).ljust(widths[k]) for k, _ in cols).rstrip())
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# --- main -----------------------------------------------------------------------------------
def _terminate(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads",
        default="small,medium",
        help="comma-separated subset of small,medium,large (default: small,medium; large takes ~16 min "
        "for one run per side on 2 cores)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per side for small and medium (default 3)"
    )
    parser.add_argument(
        "--large-repeats",
        type=int,
        default=1,
        help="runs per side for large (default 1: each large run takes minutes)",
    )
    parser.add_argument(
        "--plots-only-repeats", type=int, default=3, help="plots-only re-materializations (default 3)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a single run is killed")
    parser.add_argument("--workdir", type=Path, help="where data and stores go (default: a new tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep data, stores and logs after the run")
    parser.add_argument("--skip-sensor", action="store_true")
    parser.add_argument(
        "--skip-stack",
        action="store_true",
        help="skip the 'stack' row (small on the embedded default vs a local production stack)",
    )
    parser.add_argument(
        "--skip-workers",
        action="store_true",
        help="skip the 'workers' rows (backfill throughput and search time with 1 and 2 Celery workers on "
        "a local production stack, ~8 min)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="before each measured process, wait up to this many seconds for other processes "
        "to use < 15%% of the CPUs (default 30; 0 disables)",
    )
    parser.add_argument(
        "--max-noise",
        type=float,
        default=0.15,
        help="a run during which other processes used more than this share of the CPUs is measured again "
        "(default 0.15)",
    )
    parser.add_argument(
        "--noise-retries", type=int, default=2, help="how often (default 2; the last one is kept)"
    )
    parser.add_argument("--summarize", type=Path, help="only print the table of a results JSON again")
    args = parser.parse_args()
    IDLE_WAIT["max"] = args.wait_idle
    QUIET["max"] = args.max_noise
    if args.summarize:
        doc = json.loads(args.summarize.read_text())
        rows, _ = summarize(doc["workloads"], doc.get("extras", {}))
        print(f"{doc['started']} .. {doc['finished']}; repeats {doc['repeats']}\n")
        print_table(rows)
        return 0
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in names if w not in ALL_WORKLOADS]
    if bad or not names:
        parser.error(f"unknown workloads {bad}; choose from {','.join(ALL_WORKLOADS)}")
    names = [w for w in ALL_WORKLOADS if w in names]

    started = datetime.now(UTC)
    own_root = args.workdir is None
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="experiments-bench-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    info = machine()
    code = code_fingerprint()
    project_yaml = PROJECT / "dagster_home" / "dagster.yaml"
    INSTANCE_YAML["text"] = project_yaml.read_text() if project_yaml.is_file() else None
    code["dagster_yaml"] = INSTANCE_YAML["text"]
    print(
        f"benchmark {started:%Y-%m-%d %H:%M UTC} on {info['nproc']} x {info['cpu_model']}, "
        f"{info['mem_total_bytes'] / GIB:.1f} GiB; workdir {root}\n"
        f"code under test: experiments_dagster/ sha256 {code['sha256'][:12]} ({code['files']} files, newest "
        f"{code['newest_mtime']})",
        flush=True,
    )
    repeats = {w: (args.large_repeats if w == "large" else args.repeats) for w in names}
    if "large" not in names:
        print(
            "note: large is not selected (default small,medium): one large run per side takes ~16 min on "
            "2 cores; add it with --workloads small,medium,large or make bench BENCH_ARGS=--workloads=large.",
            flush=True,
        )
    if "large" in names and repeats["large"] < 3:
        print(
            f"note: large runs {repeats['large']} time(s) per side (each run takes minutes); its wall "
            "time is that single run, not a median of 3 (use --large-repeats 3).",
            flush=True,
        )

    print(f"generating workloads {','.join(names)} ...", flush=True)
    gen = measure(
        [PYTHON, str(BENCH / "workloads.py"), "--data-dir", str(data_dir), "--workloads", ",".join(names)],
        clean_env(),
        root / "generate.log",
        args.timeout,
    )
    if gen["returncode"] != 0:
        print(f"workload generation failed:\n{tail(root / 'generate.log')}", file=sys.stderr)
        return 1
    generated = {}
    for line in (root / "generate.log").read_text().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            generated[doc["name"]] = doc
    for w in names:
        g = generated[w]
        print(
            f"  {w}: {g['description']}, {g['bytes'] / 1e6:,.1f} MB csv, generated in {g['generate_seconds']:.1f}s",
            flush=True,
        )

    extras: dict = {}
    if not args.skip_sensor:
        sdir = root / "sensor"
        m = measure(
            [
                PYTHON,
                str(BENCH / "probes.py"),
                "sensor",
                "--files",
                str(SENSOR_FILES),
                "--workdir",
                str(sdir),
            ],
            clean_env(),
            sdir / "sensor.log",
            args.timeout,
        )
        extras["sensor"] = {**last_json(sdir / "sensor.log"), "process": m}
        if m["returncode"] != 0:
            extras["sensor"]["error"] = tail(sdir / "sensor.log")
        s = extras["sensor"]
        if not s.get("implemented"):
            print("sensor: not implemented yet", flush=True)
        elif "max_tick_seconds" in s:
            print(
                f"sensor: slowest of 3 ticks over {SENSOR_FILES} files {s['max_tick_seconds']:.3f}s",
                flush=True,
            )
        else:
            print(f"sensor: failed:\n{tail(sdir / 'sensor.log')}", flush=True)

    if not args.skip_stack and "small" in names:
        stdir = root / "stack"
        stdir.mkdir(parents=True, exist_ok=True)
        g = generated["small"]
        print(
            f"[{datetime.now():%H:%M:%S}] stack: small on the embedded default and on a local stack ...",
            flush=True,
        )
        m = measure(
            [
                PYTHON,
                str(BENCH / "stack_row.py"),
                "--data-dir",
                str(data_dir),
                "--dataset",
                g["dataset"],
                "--version",
                g["version"],
                "--repeats",
                str(args.repeats),
            ],
            clean_env(),
            stdir / "stack.log",
            args.timeout,
        )
        extras["stack"] = {**last_json(stdir / "stack.log"), "process": m}
        if m["returncode"] != 0:
            extras["stack"]["error"] = tail(stdir / "stack.log")
            print(f"stack: failed:\n{extras['stack']['error']}", flush=True)

    if not args.skip_workers and "small" in names:
        wdir = root / "workers"
        wdir.mkdir(parents=True, exist_ok=True)
        g = generated["small"]
        print(
            f"[{datetime.now():%H:%M:%S}] workers: backfill and search of small with 1 and 2 Celery workers "
            "on a local stack ...",
            flush=True,
        )
        m = measure(
            [
                PYTHON,
                str(BENCH / "workers_row.py"),
                "--data-dir",
                str(data_dir),
                "--dataset",
                g["dataset"],
                "--version",
                g["version"],
            ],
            clean_env(),
            wdir / "workers.log",
            args.timeout,
        )
        extras["workers"] = {**last_json(wdir / "workers.log"), "process": m}
        if m["returncode"] != 0:
            extras["workers"]["error"] = tail(wdir / "workers.log")
            print(f"workers: failed:\n{extras['workers']['error']}", flush=True)

    results = []
    for w in names:
        wl = {**generated[w], "runs": []}
        results.append(wl)
        hp = measure(
            [PYTHON, str(BENCH / "probes.py"), "hash", "--file", wl["path"]],
            clean_env(),
            root / w / "hash.log",
            args.timeout,
        )
        wl["hash"] = last_json(root / w / "hash.log") if hp["returncode"] == 0 else {}
        for i in range(repeats[w]):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                for attempt in range(args.noise_retries + 1):
                    mdir = (
                        root / w / f"{i}-{side}" if attempt == 0 else root / w / f"{i}-{side}-retry{attempt}"
                    )
                    print(
                        f"[{datetime.now():%H:%M:%S}] {w} run {i + 1}/{repeats[w]} {side}"
                        + (f" (retry {attempt})" if attempt else "")
                        + " ...",
                        end=" ",
                        flush=True,
                    )
                    r = run_side(side, wl, mdir, data_dir, args.timeout)
                    r["repeat"] = i
                    if r.get("returncode") != 0:
                        why = "timed out" if r.get("timed_out") else f"exit {r.get('returncode')}"
                        print(
                            f"FAILED ({why}); log: {r.get('log', mdir)}\n{tail(Path(r.get('log', mdir / 'x')))}",
                            flush=True,
                        )
                        wl["runs"].append(r)
                        break
                    busy = r.get("foreign_cpu_share") or 0.0
                    print(
                        f"{r['wall_seconds']:.1f}s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB "
                        f"(store creation {r['store']['wall_seconds']:.1f}s; "
                        f"other processes used {busy:.0%} of the CPUs meanwhile)",
                        flush=True,
                    )
                    if busy <= args.max_noise or attempt == args.noise_retries:
                        wl["runs"].append(r)
                        break
                    print(f"    noisy (> {args.max_noise:.0%}): measuring again", flush=True)
                    wl.setdefault("discarded_noisy", []).append(r)
                    shutil.rmtree(mdir, ignore_errors=True)
        # Read fit/predict seconds back from every store of this workload, in one process.
        uris = [r["uri"] for r in wl["runs"] if r.get("returncode") == 0]
        if uris:
            cmd = [PYTHON, str(BENCH / "probes.py"), "readback"] + [a for u in uris for a in ("--uri", u)]
            rb = measure(cmd, clean_env(), root / w / "readback.log", args.timeout)
            by_uri = {d["uri"]: d for d in last_json(root / w / "readback.log").get("runs", [])}
            if rb["returncode"] != 0:
                print(f"readback failed:\n{tail(root / w / 'readback.log')}", flush=True)
            for r in wl["runs"]:
                if r.get("uri") in by_uri:
                    r["readback"] = by_uri[r["uri"]]
        # evaluation_plots alone, on the last successful full graph of ours (same stores, cold process).
        last_ours = [r for r in wl["runs"] if r["side"] == "ours" and r.get("returncode") == 0]
        if w in ("small", "medium") and last_ours:
            r = last_ours[-1]
            env = clean_env(
                EXPERIMENTS_DATA_DIR=str(data_dir),
                MLFLOW_TRACKING_URI=r["uri"],
                DAGSTER_HOME=str(Path(r["dir"]) / "dagster_home"),
            )
            wl["plots_only"] = []
            for j in range(args.plots_only_repeats):
                log = Path(r["dir"]) / f"plots_only_{j}.log"
                print(
                    f"[{datetime.now():%H:%M:%S}] {w} evaluation_plots alone {j + 1}/{args.plots_only_repeats} ...",
                    end=" ",
                    flush=True,
                )
                for attempt in range(args.noise_retries + 1):
                    # The README's command with an asset selection: what a user runs to redraw plots.
                    m = measure(
                        [
                            OURS_CLI,
                            "run",
                            "--dataset",
                            w,
                            "--version",
                            wl["version"],
                            "--select",
                            "evaluation_plots",
                        ],
                        env,
                        log,
                        args.timeout,
                    )
                    m["success"] = m.get("returncode") == 0 and "SUCCESS" in log.read_text(errors="replace")
                    busy = m.get("foreign_cpu_share") or 0.0
                    print(
                        f"{m['wall_seconds']:.1f}s (others used {busy:.0%})"
                        + ("" if m.get("success") else f" FAILED\n{tail(log)}"),
                        end="",
                        flush=True,
                    )
                    if busy <= args.max_noise or attempt == args.noise_retries or not m.get("success"):
                        wl["plots_only"].append(m)
                        print(flush=True)
                        break
                    wl.setdefault("discarded_noisy", []).append({**m, "side": "plots-only"})
                    print(" noisy, again ...", end=" ", flush=True)
        if not args.keep:
            for r in wl["runs"]:
                if r.get("returncode") == 0 and r.get("dir"):
                    shutil.rmtree(r["dir"], ignore_errors=True)

    rows, summary = summarize(results, extras)
    finished = datetime.now(UTC)
    code_after = code_fingerprint()
    if code_after["sha256"] != code["sha256"]:
        print(
            f"WARNING: experiments_dagster/ changed during the benchmark (sha256 {code['sha256'][:12]} -> "
            f"{code_after['sha256'][:12]}, newest file {code_after['newest_mtime']}); runs may mix two versions.",
            flush=True,
        )
    code["sha256_at_end"] = code_after["sha256"]
    print(
        f"\nResults ({finished:%Y-%m-%d %H:%M UTC}; {info['nproc']} x {info['cpu_model']}, "
        f"{info['mem_total_bytes'] / GIB:.1f} GiB RAM; repeats: "
        + ", ".join(f"{w} {repeats[w]}" for w in names)
        + ")\n",
        flush=True,
    )
    table = print_table(rows)
    print(
        "\nwall = whole cold process (imports included); store creation is separate and not in wall. "
        "fit+predict = the CV's time (sum of the 5 fold runs' fit_time_seconds + predict_time_seconds, or, "
        "when folds trained at once, the wall time their runs covered, whichever is smaller) plus the final "
        "fit_time_seconds, read back from each side's MLflow store; where the final fit trained in the CV's "
        "pool (ours' training_wall_seconds), the pool's wall time if smaller than the sum of all fits.",
        flush=True,
    )

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "finished": finished.isoformat(),
                "machine": info,
                "code": code,
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "repeats": repeats,
                "workdir": str(root),
                "targets": {
                    "ratio": RATIO_TARGETS,
                    "large_peak_rss_bytes": LARGE_RSS_TARGET_BYTES,
                    "hash_gb_per_s": HASH_TARGET_GB_S,
                    "overhead_over_fit_predict": OVERHEAD_TARGET,
                    "plots_only_over_full": PLOTS_ONLY_TARGET,
                    "sensor_tick_seconds": SENSOR_TARGET_S,
                },
                "generate": gen,
                "workloads": results,
                "summary": summary,
                "extras": extras,
                "table": table,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nraw numbers: {out.relative_to(PROJECT)}", flush=True)
    if not args.keep:
        shutil.rmtree(root / "sensor", ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        leftovers = [p for p in root.rglob("*.log")]
        if own_root and not any(r.get("returncode") != 0 for wl in results for r in wl["runs"]):
            shutil.rmtree(root, ignore_errors=True)
        elif leftovers:
            print(f"logs of failed runs kept under {root}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
