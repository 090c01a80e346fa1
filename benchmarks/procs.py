"""Child processes of the benchmark: a clean environment, peak RSS and CPU from ``wait4``, noise.

pytest-benchmark times each round; this module only says what a round's process used (its
resources, and the share of the machine other processes took meanwhile) and waits for a quiet
machine before a round.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any MLflow/Dagster/data-dir setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_", "EXPERIMENTS_"))}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env.update(extra)
    return env


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_for_idle(max_wait: float, threshold: float, sample: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` of the machine."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        before = busy_cpu_seconds()
        time.sleep(sample)
        if (busy_cpu_seconds() - before) / (sample * NCPU) < threshold:
            break
    return time.perf_counter() - start


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_process(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> dict:
    """Run ``cmd`` to completion in its own session; its exit code, peak RSS, CPU and the noise.

    Peak RSS is ``ru_maxrss`` from ``wait4``: the largest resident set of the child or of any
    descendant it waited for (not their sum). ``foreign_cpu_share`` is the share of the machine's
    CPU that *other* processes used meanwhile (0 = we had the machine alone). The process is
    killed with its group after ``timeout`` seconds or when the benchmark is interrupted.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        busy_before, start = busy_cpu_seconds(), time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: do not leave the run behind
            _kill_group(proc.pid)
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        busy = busy_cpu_seconds() - busy_before
    own = usage.ru_utime + usage.ru_stime
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "timed_out": wall >= timeout,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_seconds": own,
        "foreign_cpu_share": max(0.0, busy - own) / (wall * NCPU),
        "log": str(log),
    }


def last_json(log: Path) -> dict:
    """The JSON document a probe printed on its last JSON line."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
