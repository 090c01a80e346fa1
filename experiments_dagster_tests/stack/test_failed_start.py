"""A stack that fails to start stops, by PID, every service that start had started, and says so."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.local import LocalStack, pg_program
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster_tests.stack.conftest import BIN

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture
def root() -> Iterator[Path]:
    """A stack folder with its settings (free ports) written, nothing started."""
    try:
        pg_program("initdb")
    except Exception as exc:
        pytest.skip(f"PostgreSQL's programs are missing: {exc}")
    # Under /tmp with mode 0711: as root, PostgreSQL runs as `postgres`, which must reach its folder.
    top = Path(tempfile.mkdtemp(prefix="experiments-failed-start-", dir="/tmp"))
    top.chmod(0o711)
    stack = LocalStack(top / "stack", preferred_ports=False)
    stack.settings()
    try:
        yield stack.root
    finally:
        stack.down(out=lambda line: None)  # in case the test failed with something left running
        shutil.rmtree(top, ignore_errors=True)


def path_without(program: str, folder: Path) -> str:
    """$PATH with every folder that holds ``program`` replaced by a copy of it (symlinks) without it."""
    entries = []
    for i, entry in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if entry and (Path(entry) / program).exists():
            shadow = folder / f"path-{i}"
            shadow.mkdir()
            for item in Path(entry).iterdir():
                if item.name != program:
                    (shadow / item.name).symlink_to(item)
            entry = str(shadow)
        entries.append(entry)
    return os.pathsep.join(entries)


def stack_up(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "python"), "-m", "devstack", "up", "--dir", str(root)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def processes_of(root: Path, groups: set[int]) -> list[str]:
    """Live processes whose command line names the stack's folder or that are in one of ``groups``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z" and (str(root).encode() in cmdline or int(pgrp) in groups):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


def assert_failed_start_cleaned_up(root: Path, result: subprocess.CompletedProcess, cause: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr
    assert message.startswith(
        "stack up: redis failed to start, so the stack is not up; "
        "stopped what this start had started: postgres (pid "
    ), message
    assert cause in message, message
    assert "  postgres           started (pid" in result.stdout
    stopped = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", message.splitlines()[0])}
    assert stopped and all(not Path(f"/proc/{pid}").exists() for pid in stopped), message
    assert processes_of(root, stopped) == []
    assert list((root / "pids").glob("*.pid")) == []


def test_redis_server_missing_stops_what_the_start_had_started(root: Path, tmp_path: Path):
    path = path_without("redis-server", tmp_path)
    assert shutil.which("redis-server", path=path) is None
    result = stack_up(root, {**os.environ, "PATH": path})
    assert_failed_start_cleaned_up(root, result, "redis: `redis-server` was not found on PATH")


def test_redis_port_taken_stops_what_the_start_had_started(root: Path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = LocalStack(root).settings().ports["redis"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = stack_up(root, dict(os.environ))
    assert_failed_start_cleaned_up(root, result, "redis exited with code 1 while starting")
