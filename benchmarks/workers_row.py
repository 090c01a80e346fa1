"""Distributed execution on the production profile's local stack: 1 Celery worker against 2.

Starts a local stack (experiments_dagster.stack: PostgreSQL, Redis, SeaweedFS, MLflow's server,
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
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from experiments_dagster.stack.local import PG_USER, LocalStack

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "experiments-dagster")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEARCH_UNAVAILABLE = "not available: search.workers not in this build"
# uvicorn's access log line of the MLflow server: `... 127.0.0.1:port - "GET /api/... HTTP/1.1" 200`
REQUEST_LINE = re.compile(rb'- "(?:GET|POST|PUT|PATCH|DELETE|HEAD) ')
SEARCH_SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 6},
    "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
    "subsample": {"type": "choice", "choices": [0.7, 0.85, 1.0]},
}


# --- CPU accounting from /proc ----------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of the children it reaped)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        table[int(stat.parent.name)] = (int(fields[1]), (utime + stime + cutime + cstime) / CLK_TCK)
    return table


def tree_cpu(stack: LocalStack) -> dict[str, float]:
    """CPU seconds so far of each service's process tree (alive processes plus what they reaped)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for service in stack.services():
        pid = stack.pid(service)
        if pid is None:
            continue
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            total += table.get(p, (0, 0.0))[1]
            todo.extend(children.get(p, []))
        out[service] = total
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


# --- counters of the servers ------------------------------------------------------------------
def mlflow_requests(stack: LocalStack) -> int:
    try:
        return len(REQUEST_LINE.findall(stack.log_path("mlflow").read_bytes()))
    except OSError:
        return 0


TASK_DONE = re.compile(rb"Task execute_plan\[[^\]]+\] (succeeded|raised|failed)[^\n]*? in ([0-9.]+)s")


def log_sizes(stack: LocalStack) -> dict[str, int]:
    sizes = {}
    for service in stack.worker_services():
        try:
            sizes[service] = stack.log_path(service).stat().st_size
        except OSError:
            sizes[service] = 0
    return sizes


def celery_tasks(stack: LocalStack, since: dict[str, int]) -> dict[str, list[float]]:
    """Runtime of every task each worker finished after ``since`` (Celery's own INFO line)."""
    out = {}
    for service in stack.worker_services():
        try:
            with open(stack.log_path(service), "rb") as log:
                log.seek(since.get(service, 0))
                text = log.read()
        except OSError:
            continue
        out[service] = [float(m.group(2)) for m in TASK_DONE.finditer(text)]
    return out


def redis_commands(stack: LocalStack) -> int | None:
    import redis

    s = stack.settings()
    client = redis.Redis(host="127.0.0.1", port=s.ports["redis"], password=s.redis_password, socket_timeout=5)
    try:
        return int(client.info("stats")["total_commands_processed"])
    except Exception:
        return None
    finally:
        client.close()


def pg_counts(stack: LocalStack) -> dict[str, tuple[int, int]]:
    """Committed transactions and rows written so far per database (PostgreSQL's statistics)."""
    import psycopg2

    s = stack.settings()
    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=s.ports["postgres"],
            user=PG_USER,
            password=s.pg_password,
            dbname="postgres",
            connect_timeout=5,
        )
    except psycopg2.Error:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname, xact_commit, tup_inserted + tup_updated + tup_deleted "
                "FROM pg_stat_database WHERE datname IS NOT NULL"
            )
            return {name: (int(commits), int(rows)) for name, commits, rows in cur.fetchall()}
    finally:
        conn.close()


class Counters:
    """Every counter at the start of a measurement; ``delta()`` at its end."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.start = self._read()

    def _read(self) -> dict:
        return {
            "monotonic": time.monotonic(),
            "busy": machine_busy(),
            "cpu": tree_cpu(self.stack),
            "mlflow": mlflow_requests(self.stack),
            "redis": redis_commands(self.stack),
            "pg": pg_counts(self.stack),
            "logs": log_sizes(self.stack),
        }

    def delta(self) -> dict:
        time.sleep(1.0)  # PostgreSQL's backends publish their statistics within a second when idle
        end, start = self._read(), self.start
        seconds = end["monotonic"] - start["monotonic"]
        cpu = {k: end["cpu"][k] - start["cpu"].get(k, 0.0) for k in end["cpu"]}
        stack_cpu = sum(cpu.values())
        busy = end["busy"] - start["busy"]
        ncpu = os.cpu_count() or 1
        return {
            "seconds": seconds,
            "service_cpu_seconds": cpu,
            "stack_cpu_seconds": stack_cpu,
            "machine_busy_share": busy / (seconds * ncpu),
            # Busy CPU not spent by the stack's services (this script, other jobs on the machine).
            "foreign_cpu_share": max(0.0, busy - stack_cpu) / (seconds * ncpu),
            "mlflow_requests": end["mlflow"] - start["mlflow"],
            "redis_commands": None
            if end["redis"] is None or start["redis"] is None
            else end["redis"] - start["redis"],
            "pg_commits": {k: v[0] - start["pg"].get(k, (0, 0))[0] for k, v in end["pg"].items()},
            "pg_rows_written": {k: v[1] - start["pg"].get(k, (0, 0))[1] for k, v in end["pg"].items()},
            "celery_task_seconds": celery_tasks(self.stack, start["logs"]),
        }


# --- the event log --------------------------------------------------------------------------
def step_costs(instance, run_id: str) -> dict:
    """Per step of one run: submitted, picked up by a worker, started, ended (epoch seconds)."""
    import dagster as dg

    steps: dict[str, dict] = {}
    events = instance.all_logs(run_id)
    for entry in events:
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        step = steps.setdefault(entry.step_key, {})
        kind = event.event_type
        if kind == dg.DagsterEventType.ENGINE_EVENT:
            message = event.message or ""
            if message.startswith("Submitting celery task"):
                step.setdefault("submitted", entry.timestamp)
            elif "Executing steps" in message and "celery worker" in message:
                step.setdefault("picked_up", entry.timestamp)
                meta = event.event_specific_data.metadata if event.event_specific_data else {}
                worker = meta.get("Celery worker")
                if worker is not None:
                    step["worker"] = str(getattr(worker, "value", worker)).split("@")[0]
        elif kind == dg.DagsterEventType.STEP_START:
            step.setdefault("started", entry.timestamp)
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step["ended"] = entry.timestamp
            step["status"] = "SUCCESS" if kind == dg.DagsterEventType.STEP_SUCCESS else "FAILURE"
    step_events = sum(1 for e in events if e.step_key)
    return {"steps": steps, "events": len(events), "step_events": step_events}


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_steps(per_run: list[dict]) -> dict:
    """Medians over every step of the runs given, and per-experiment sums."""
    work, queue, pickup, rebuild, handoff = [], [], [], [], []
    worker_s, busy_s, steps_n, events_n, events_per_step = [], [], [], [], []
    for run in per_run:
        steps = [s for s in run["steps"].values() if "started" in s and "ended" in s]
        steps_n.append(len(steps))
        events_n.append(run["events"])
        if steps:
            events_per_step.append(run["step_events"] / len(steps))
        worker_s.append(sum(s["ended"] - s["started"] for s in steps))
        busy_s.append(sum(s["ended"] - s.get("picked_up", s["started"]) for s in steps))
        for s in steps:
            work.append(s["ended"] - s["started"])
            if "submitted" in s:
                queue.append(s["started"] - s["submitted"])
                if "picked_up" in s:
                    pickup.append(s["picked_up"] - s["submitted"])
            if "picked_up" in s:
                rebuild.append(s["started"] - s["picked_up"])
        # Orchestration hand-off: from a step's end to the next submission in the same run.
        ends = sorted(s["ended"] for s in steps)
        for s in steps:
            if "submitted" in s:
                before = [e for e in ends if e <= s["submitted"]]
                if before:
                    handoff.append(s["submitted"] - before[-1])
    return {
        "steps_per_experiment": med(steps_n),
        "step_seconds_median": med(work),
        "queue_wait_seconds_median": med(queue),  # 'Submitting celery task' -> STEP_START
        "queue_wait_seconds_max": max(queue) if queue else None,
        # 'Submitting celery task' -> the worker's 'Executing steps' event: time in the queue plus
        # the worker's load of the job and its step plan (the first task of a worker imports the code).
        "pickup_seconds_median": med(pickup),
        "resource_init_seconds_median": med(rebuild),  # worker's 'Executing steps' -> STEP_START
        "handoff_seconds_median": med(handoff),  # latest earlier step end -> next submission
        "step_seconds_per_experiment": med(worker_s),  # sum of STEP_START -> end
        "worker_busy_seconds_per_experiment": med(busy_s),  # sum of pickup -> end
        "events_per_experiment": med(events_n),
        "step_events_per_step": med(events_per_step),
        "steps_measured": len(work),
    }


# --- one backfill -----------------------------------------------------------------------------
def write_versions(folder: Path, source: Path, spec: Path, k: int) -> list[str]:
    """``experiment.yaml`` and v1..vK: the source file with data row i left out of version i."""
    folder.mkdir(parents=True)
    shutil.copy(spec, folder / "experiment.yaml")
    lines = source.read_bytes().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    versions = []
    for i in range(1, k + 1):
        (folder / f"v{i}{source.suffix}").write_bytes(header + b"".join(rows[:i] + rows[i + 1 :]))
        versions.append(f"v{i}")
    return versions


def backfill(
    stack: LocalStack, instance, env: dict[str, str], name: str, args: argparse.Namespace, workers: int
) -> dict:
    import dagster as dg

    from experiments_dagster.defs.partitions import DATASET_VERSIONS

    source = args.data_dir / args.dataset / f"{args.version}.csv"
    spec = args.data_dir / args.dataset / "experiment.yaml"
    folder = stack.data_dir / name
    keys = [f"{name}/{v}" for v in [f"v{i}" for i in range(1, args.versions + 1)]]
    # Known to the instance before the files appear: the sensor leaves them to the backfill.
    instance.add_dynamic_partitions(DATASET_VERSIONS, keys)
    write_versions(folder, source, spec, args.versions)
    counters = Counters(stack)
    launched = time.time()
    cli = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "experiment_job",
            "--partitions",
            ",".join(keys),
            "--noprompt",
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    cli_seconds = time.time() - launched
    result: dict = {
        "workers": workers,
        "dataset": name,
        "versions": args.versions,
        "backfill_cli_seconds": cli_seconds,
        "backfill_cli_code": cli.returncode,
    }
    if cli.returncode != 0:
        result["error"] = (cli.stdout + cli.stderr)[-2000:]
        return result
    deadline = time.monotonic() + args.timeout
    records: list = []
    while time.monotonic() < deadline:
        records = [
            r
            for r in instance.get_run_records(dg.RunsFilter(job_name="experiment_job"))
            if r.dagster_run.tags.get("dagster/partition", "").startswith(name + "/")
        ]
        if len(records) >= args.versions and all(r.dagster_run.is_finished for r in records):
            break
        time.sleep(1.0)
    else:
        result["timed_out"] = True
    result.update(counters.delta())
    runs = []
    for r in sorted(records, key=lambda r: r.dagster_run.tags["dagster/partition"]):
        runs.append(
            {
                "partition": r.dagster_run.tags["dagster/partition"],
                "run_id": r.dagster_run.run_id,
                "status": r.dagster_run.status.value,
                "start": r.start_time,
                "end": r.end_time,
                "seconds": (r.end_time - r.start_time) if r.start_time and r.end_time else None,
                **step_costs(instance, r.dagster_run.run_id),
            }
        )
    ends = [r["end"] for r in runs if r["end"]]
    starts = [r["start"] for r in runs if r["start"]]
    complete = len(ends) >= args.versions and len(starts) >= args.versions
    wall = (max(ends) - launched) if complete else None
    # Without the fixed start of a backfill (CLI, backfill daemon, run queue, first run process).
    steady = (max(ends) - min(starts)) if complete else None
    tasks = [t for times in result["celery_task_seconds"].values() for t in times]
    result.update(
        {
            "wall_seconds": wall,
            "experiments_per_hour": args.versions * 3600 / wall if wall else None,
            "first_start_to_last_end_seconds": steady,
            "experiments_per_hour_from_first_start": args.versions * 3600 / steady if steady else None,
            "celery_tasks": len(tasks),
            "celery_task_seconds_median": med(tasks),
            "celery_task_seconds_per_experiment": sum(tasks) / args.versions,
            "statuses": [r["status"] for r in runs],
            "all_success": len(runs) == args.versions and all(r["status"] == "SUCCESS" for r in runs),
            "run_seconds": [r["seconds"] for r in runs],
            "first_start_after_launch_seconds": min(starts) - launched if starts else None,
            "steps_by_worker": _by_worker(runs),
            "per_step": summarize_steps(runs),
            "runs": runs,
        }
    )
    return result


def _by_worker(runs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        for step in run["steps"].values():
            if "worker" in step:
                counts[step["worker"]] = counts.get(step["worker"], 0) + 1
    return counts


# --- one search -------------------------------------------------------------------------------
def search_available() -> bool:
    from experiments_dagster.spec import SearchSpec

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
def main() -> int:
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
    instance = None
    ok = True
    try:
        started = time.monotonic()
        stack.up(out=lambda line: None)
        doc["stack_start_seconds"] = time.monotonic() - started
        env = {**base, **stack.client_env(), "EXPERIMENTS_DATA_DIR": str(stack.data_dir)}
        # This process reads the instance too (its dagster.yaml names the URL's variable).
        os.environ["EXPERIMENTS_DAGSTER_PG_URL"] = env["EXPERIMENTS_DAGSTER_PG_URL"]
        import dagster as dg

        instance = dg.DagsterInstance.from_config(str(stack.root / "dagster_home"))
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
        if args.skip_search:
            doc["search_status"] = "skipped"
        elif not search_available():
            doc["search_status"] = SEARCH_UNAVAILABLE
        else:
            doc["search_status"] = "measured"
            for i in range(args.repeats):
                for workers in (1, 2) if i % 2 == 0 else (2, 1):
                    m = search(stack, env, root, f"search_w{workers}_r{i}", args, workers)
                    m["repeat"] = i
                    doc["search"].append(m)
                    ok = ok and m.get("code") == 0
    finally:
        if instance is not None:
            instance.dispose()
        stack.down(out=lambda line: None)
    for w in (1, 2):
        rows = [m for m in doc["backfill"] if m["workers"] == w]
        doc.setdefault("experiments_per_hour", {})[str(w)] = med(
            [m.get("experiments_per_hour") for m in rows]
        )
        doc.setdefault("backfill_wall_seconds", {})[str(w)] = med([m.get("wall_seconds") for m in rows])
        doc.setdefault("search_wall_seconds", {})[str(w)] = med(
            [m["wall_seconds"] for m in doc["search"] if m["workers"] == w and m.get("code") == 0]
        )
        doc.setdefault("experiments_per_hour_from_first_start", {})[str(w)] = med(
            [m.get("experiments_per_hour_from_first_start") for m in rows]
        )
    eph, sw = doc["experiments_per_hour"], doc["search_wall_seconds"]
    doc["throughput_ratio"] = eph["2"] / eph["1"] if eph["1"] and eph["2"] else None
    doc["search_ratio"] = sw["2"] / sw["1"] if sw["1"] and sw["2"] else None
    measured = [r for m in doc["backfill"] for r in m.get("runs", []) if r["status"] == "SUCCESS"]
    doc["per_step"] = summarize_steps(measured)
    per_exp: dict[str, list[float]] = {}
    for m in doc["backfill"]:
        if not m.get("all_success"):
            continue
        by_service: dict[str, float] = {}
        for service, seconds in m["service_cpu_seconds"].items():
            key = "celery-workers" if service.startswith("celery-worker-") else service
            by_service[key] = by_service.get(key, 0.0) + seconds
        for key, seconds in by_service.items():
            per_exp.setdefault(f"cpu_{key}", []).append(seconds / m["versions"])
        per_exp.setdefault("cpu_stack", []).append(m["stack_cpu_seconds"] / m["versions"])
        per_exp.setdefault("mlflow_requests", []).append(m["mlflow_requests"] / m["versions"])
        per_exp.setdefault("celery_tasks", []).append(m["celery_tasks"] / m["versions"])
        per_exp.setdefault("celery_task_seconds", []).append(m["celery_task_seconds_per_experiment"])
        if m.get("redis_commands") is not None:
            per_exp.setdefault("redis_commands", []).append(m["redis_commands"] / m["versions"])
        for db in ("dagster", "mlflow", "mlflow_auth"):
            if db in m["pg_commits"]:
                per_exp.setdefault(f"pg_commits_{db}", []).append(m["pg_commits"][db] / m["versions"])
                per_exp.setdefault(f"pg_rows_written_{db}", []).append(
                    m["pg_rows_written"][db] / m["versions"]
                )
        per_exp.setdefault("run_seconds", []).extend(s for s in m["run_seconds"] if s)
    doc["per_experiment"] = {k: med(v) for k, v in per_exp.items()}
    print(json.dumps(doc, default=str))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
