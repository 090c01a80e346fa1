"""The whole stack: every service in start order, started if not running, stopped by PID.

Services, in start order: ``postgres``, ``redis``, ``s3``, ``mlflow``, ``celery-worker-1`` ..
``celery-worker-N`` (N is ``$EXPERIMENTS_WORKERS``, default 2), ``dagster-daemon`` and
``dagster-webserver``. A start that fails stops, by PID, every service that start had started, and
says what failed and what it stopped.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from devstack.dagster_services import DagsterServices
from devstack.mlflow_server import MlflowServer
from devstack.redis_broker import RedisBroker
from devstack.s3_store import S3Store
from devstack.settings import (
    ADMIN_USER,
    BUCKET,
    CLIENT_USER,
    CORE_SERVICES,
    DAGSTER_SERVICES,
    DATABASES,
    StackError,
    workers_from_env,
)
from experiments_dagster.core.paths import PROJECT_ROOT


class LocalStack(DagsterServices, RedisBroker, S3Store, MlflowServer):
    """The stack rooted at ``root``; ``data_dir`` is the data directory the daemon's sensor watches."""

    def __init__(
        self,
        root: Path,
        data_dir: Path | None = None,
        project: Path = PROJECT_ROOT,
        preferred_ports: bool = True,
        workers: int | None = None,
    ) -> None:
        self.root = root.resolve()
        self.workers = workers if workers is not None else workers_from_env()
        self.preferred_ports = preferred_ports
        self.project = project
        self.data_dir = data_dir
        self.bin = Path(sys.executable).parent
        self._settings = None

    def worker_services(self) -> list[str]:
        """The Celery workers to run, and any recorded beyond them (a smaller N later): all stopped."""
        wanted = [f"celery-worker-{i}" for i in range(1, self.workers + 1)]
        recorded = sorted(p.stem for p in (self.root / "pids").glob("celery-worker-*.pid"))
        return wanted + [r for r in recorded if r not in wanted]

    def services(self) -> list[str]:
        return [*CORE_SERVICES, *self.worker_services(), *DAGSTER_SERVICES]

    def running(self) -> dict[str, int | None]:
        return {service: self.pid(service) for service in self.services()}

    def up(self, out=print) -> bool:
        """Start every service that is not running; False (and nothing changed) if all were up."""
        running = self.running()
        if all(running.values()):
            out(f"The stack under {self.root} is already up; nothing changed.")
            self.print_urls(out)
            return False
        self.settings()
        self._start_missing(running, out)
        env = self.write_env_file()
        self.print_urls(out)
        out(f"Client settings: {env}  (`. {os.path.relpath(env)}`; credentials in {self.credentials_path})")
        return True

    def _start_missing(self, running: dict[str, int | None], out) -> None:
        """Start the services not running, in order (the daemon's code location connects to the others
        at load); if one fails, stop the ones started here and raise a StackError saying so."""
        started: list[tuple[str, int | None]] = []
        for service in self.services():
            if running[service]:
                out(f"  {service:<18} already running (pid {running[service]})")
                continue
            if service.startswith("celery-worker-") and int(service.rsplit("-", 1)[1]) > self.workers:
                continue  # recorded by an earlier, larger N and no longer running
            began = time.monotonic()
            try:
                self._start(service)
            except Exception as exc:
                raise StackError(self._undo_start(service, started, exc)) from exc
            started.append((service, self.pid(service)))
            out(f"  {service:<18} started (pid {self.pid(service)}, {time.monotonic() - began:.1f} s)")

    def _start(self, service: str) -> None:
        starters = {
            "postgres": self.start_postgres,
            "redis": self.start_redis,
            "s3": self.start_s3,
            "mlflow": self.start_mlflow,
            "dagster-daemon": self.start_dagster_daemon,
            "dagster-webserver": self.start_dagster_webserver,
        }
        if service in starters:
            starters[service]()
        else:
            self.start_worker(service)

    def _undo_start(self, failed: str, started: list[tuple[str, int | None]], exc: Exception) -> str:
        """Stop ``failed`` (if it still runs) and what this start had started, newest first; the message."""
        failed_pid = self.pid(failed)  # spawned but not ready in time: still running
        if self.stop(failed):
            started = [*started, (failed, failed_pid)]
        for service, _ in reversed(started):
            self.stop(service)
        stopped = ", ".join(f"{service} (pid {pid})" for service, pid in started) or "nothing"
        return (
            f"{failed} failed to start, so the stack is not up; stopped what this start had started: "
            f"{stopped}.\n{failed}: {exc}"
        )

    def print_urls(self, out=print) -> None:
        urls = self.urls()
        out(f"  MLflow:   {urls['mlflow']}  (user {CLIENT_USER}; admin {ADMIN_USER})")
        out(f"  Dagster:  {urls['dagster']}")
        out(f"  S3:       {urls['s3']}  (bucket {BUCKET})")
        out(f"  Postgres: {urls['postgres']}  (databases {', '.join(DATABASES)})")
        out(f"  Redis:    {urls['redis']}  (Celery broker; {self.workers} workers)")

    def down(self, out=print) -> None:
        """Stop every service by PID, in reverse start order."""
        for service in reversed(self.services()):
            if self.stop(service):
                out(f"  {service:<18} stopped")

    def wipe(self, out=print) -> None:
        """Stop the stack and delete its data, logs and credentials."""
        self.down(out)
        self._settings = None
        if self.root.exists():
            shutil.rmtree(self.root)
            out(f"Deleted {self.root}.")

    def status(self, out=print) -> bool:
        running = self.running()
        for service, pid in running.items():
            out(f"  {service:<18} {'running, pid ' + str(pid) if pid else 'stopped'}")
        return all(running.values())
