"""The stack's folder and its processes: settings, PID files and logs; start, wait for, stop by PID.

Each service runs in its own session (process group) and is stopped by its recorded PID: SIGTERM to
the group (SIGINT, a fast shutdown, to PostgreSQL's postmaster), SIGKILL after a grace period. A PID
file holds the PID and the process's start time, so a reused PID is not mistaken for the service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from devstack.settings import Settings, StackError, load_settings
from experiments_dagster.tracking.liveness import process_start

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class ServiceFolder:
    """The services under ``root``: what every service of the stack builds on."""

    root: Path
    preferred_ports: bool
    bin: Path  # the folder of this environment's programs (mlflow, dagster-daemon ...)
    project: Path  # the project whose deploy/ and workspace.yaml the services use
    data_dir: Path | None  # the data folder the daemon's sensor watches
    _settings: Settings | None

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.json"

    def settings(self) -> Settings:
        """The stack's settings, generated (mode 0600) on first use, read once per object."""
        if self._settings is None:
            self._settings = load_settings(self.credentials_path, self.preferred_ports)
        return self._settings

    def pid_path(self, service: str) -> Path:
        return self.root / "pids" / f"{service}.pid"

    def log_path(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def pid(self, service: str) -> int | None:
        """The PID of ``service`` if its recorded process is alive (same PID and start time)."""
        try:
            pid_text, start = self.pid_path(service).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if process_start(pid) == start else None

    def _record(self, service: str, pid: int) -> None:
        path = self.pid_path(service)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{pid} {process_start(pid)}\n")

    def _spawn(self, service: str, command: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        log = self.log_path(service)
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopped as one, never by the caller's Ctrl-C
                # Files a service writes are its user's only: `dagster-celery worker start` writes the
                # broker URL, password included, into a config module under DAGSTER_HOME.
                umask=0o077,
                **kwargs,
            )
        self._record(service, process.pid)
        return process

    def _wait(self, service: str, ready, process: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{service} exited with code {process.returncode} while starting; "
                    f"log {self.log_path(service)}:\n{self._tail(service)}"
                )
            try:
                last = ready()
            except Exception as exc:  # not ready yet (connection refused, 503 ...)
                last = exc
            if last is None:
                return
            time.sleep(0.3)
        raise StackError(
            f"{service} not ready after {READY_TIMEOUT_S:.0f} s ({last!r}); log {self.log_path(service)}:\n"
            f"{self._tail(service)}"
        )

    def _tail(self, service: str) -> str:
        try:
            return self.log_path(service).read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self, service: str) -> bool:
        """Stop ``service`` by its recorded PID; True if it was running."""
        pid = self.pid(service)
        if pid is None:
            self.pid_path(service).unlink(missing_ok=True)
            return False
        if service == "postgres":
            os.kill(pid, signal.SIGINT)  # fast shutdown: the postmaster stops its backends
        else:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and self.pid(service) == pid:
            _reap(pid)
            time.sleep(0.2)
        if self.pid(service) == pid:
            _signal_group(pid, signal.SIGKILL)
            while self.pid(service) == pid:
                _reap(pid)
                time.sleep(0.1)
        self.pid_path(service).unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the service is its group's leader (start_new_session)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child (a zombie keeps its /proc entry)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
