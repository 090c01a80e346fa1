"""What a measurement on the local stack cost each service: CPU from /proc, MLflow requests, Redis, PostgreSQL."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from procs import CLK_TCK, busy_cpu_seconds

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # devstack/ sits beside the package, outside the wheel
from devstack.local import PG_USER, LocalStack

# uvicorn's access log line of the MLflow server: `... 127.0.0.1:port - "GET /api/... HTTP/1.1" 200`
REQUEST_LINE = re.compile(rb'- "(?:GET|POST|PUT|PATCH|DELETE|HEAD) ')


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
            "busy": busy_cpu_seconds(),
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
