"""Is the process that opened an MLflow run still alive? (host + pid + pid start time)"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not mistaken."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def worker_id(pid: int | None = None) -> str:
    """``<hostname>:<pid>``: the process (Celery worker child, or the run's own process) at work."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Host, pid and the pid's start time (enough to tell later whether it is alive), and ``worker``."""
    pid = pid or os.getpid()
    return {
        "process.host": socket.gethostname(),
        "process.pid": str(pid),
        "process.start": process_start(pid),
        "worker": worker_id(pid),  # tags.WORKER
    }


def process_is_dead(tags: Mapping[str, str]) -> bool | None:
    """True/False when this host can tell from the run's process tags; None when it cannot."""
    pid, host, start = tags.get("process.pid"), tags.get("process.host"), tags.get("process.start")
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # The pid exists; it is the same process only if it started at the same time.
    return bool(start) and process_start(int(pid)) != start
