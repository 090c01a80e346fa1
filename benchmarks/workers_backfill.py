"""One backfill of K versions of a dataset on the local stack's Celery workers, and what it cost."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from report import med
from workers_counters import Counters
from workers_steps import step_costs, steps_by_worker, summarize_steps

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # devstack/ sits beside the package, outside the wheel
from devstack.local import LocalStack

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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


def launch_backfill(stack: LocalStack, instance, env: dict[str, str], name: str, args: argparse.Namespace):
    """Write K versions of the dataset and launch ``dagster job backfill`` over them; counters at launch."""
    from experiments_dagster.defs.partitions import DATASET_VERSIONS

    source = args.data_dir / args.dataset / f"{args.version}.csv"
    spec = args.data_dir / args.dataset / "experiment.yaml"
    keys = [f"{name}/v{i}" for i in range(1, args.versions + 1)]
    # Known to the instance before the files appear: the sensor leaves them to the backfill.
    instance.add_dynamic_partitions(DATASET_VERSIONS, keys)
    write_versions(stack.data_dir / name, source, spec, args.versions)
    counters = Counters(stack)
    launched = time.time()
    cmd = [str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", "experiment_job"]
    cmd += ["--partitions", ",".join(keys), "--noprompt"]
    cli = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    return cli, launched, counters


def wait_for_runs(instance, name: str, args: argparse.Namespace) -> tuple[list, bool]:
    """Poll the instance until the K runs of the backfill ``name`` finished; their records, timed out."""
    import dagster as dg

    deadline = time.monotonic() + args.timeout
    records: list = []
    while time.monotonic() < deadline:
        records = [
            r
            for r in instance.get_run_records(dg.RunsFilter(job_name="experiment_job"))
            if r.dagster_run.tags.get("dagster/partition", "").startswith(name + "/")
        ]
        if len(records) >= args.versions and all(r.dagster_run.is_finished for r in records):
            return records, False
        time.sleep(1.0)
    return records, True


def run_facts(instance, records: list) -> list[dict]:
    """Each run of a backfill: partition, status, start, end and its steps' costs."""
    runs = []
    for r in sorted(records, key=lambda r: r.dagster_run.tags["dagster/partition"]):
        start, end = r.start_time, r.end_time
        runs.append(
            {
                "partition": r.dagster_run.tags["dagster/partition"],
                "run_id": r.dagster_run.run_id,
                "status": r.dagster_run.status.value,
                "start": start,
                "end": end,
                "seconds": (end - start) if start and end else None,
                **step_costs(instance, r.dagster_run.run_id),
            }
        )
    return runs


def throughput(runs: list[dict], launched: float, tasks: list[float], k: int) -> dict:
    """Experiments per hour from the launch (and from the first run's start), Celery task times."""
    ends = [r["end"] for r in runs if r["end"]]
    starts = [r["start"] for r in runs if r["start"]]
    complete = len(ends) >= k and len(starts) >= k
    wall = (max(ends) - launched) if complete else None
    # Without the fixed start of a backfill (CLI, backfill daemon, run queue, first run process).
    steady = (max(ends) - min(starts)) if complete else None
    return {
        "wall_seconds": wall,
        "experiments_per_hour": k * 3600 / wall if wall else None,
        "first_start_to_last_end_seconds": steady,
        "experiments_per_hour_from_first_start": k * 3600 / steady if steady else None,
        "celery_tasks": len(tasks),
        "celery_task_seconds_median": med(tasks),
        "celery_task_seconds_per_experiment": sum(tasks) / k,
        "statuses": [r["status"] for r in runs],
        "all_success": len(runs) == k and all(r["status"] == "SUCCESS" for r in runs),
        "run_seconds": [r["seconds"] for r in runs],
        "first_start_after_launch_seconds": min(starts) - launched if starts else None,
    }


def backfill(
    stack: LocalStack, instance, env: dict[str, str], name: str, args: argparse.Namespace, workers: int
) -> dict:
    """One backfill of K versions on the stack's workers as they are: its throughput and costs."""
    cli, launched, counters = launch_backfill(stack, instance, env, name, args)
    result: dict = {
        "workers": workers,
        "dataset": name,
        "versions": args.versions,
        "backfill_cli_seconds": time.time() - launched,
        "backfill_cli_code": cli.returncode,
    }
    if cli.returncode != 0:
        result["error"] = (cli.stdout + cli.stderr)[-2000:]
        return result
    records, timed_out = wait_for_runs(instance, name, args)
    if timed_out:
        result["timed_out"] = True
    result.update(counters.delta())
    runs = run_facts(instance, records)
    tasks = [t for times in result["celery_task_seconds"].values() for t in times]
    result.update(throughput(runs, launched, tasks, args.versions))
    result.update(steps_by_worker=steps_by_worker(runs), per_step=summarize_steps(runs), runs=runs)
    return result
