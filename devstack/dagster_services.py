"""Dagster's services on the shared instance (``<stack>/dagster_home``, runs in PostgreSQL): the
Celery workers (``dagster-celery worker start``), the daemon and the webserver."""

from __future__ import annotations

import os
import shutil
import urllib.request

from devstack.postgres import PostgresService


class DagsterServices(PostgresService):
    """The stack's Dagster daemon, webserver and Celery workers."""

    def dagster_env(self) -> dict[str, str]:
        env = {**os.environ, **self.client_env()}
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in service logs
        if self.data_dir is not None:
            env["EXPERIMENTS_DATA_DIR"] = str(self.data_dir)
        return env

    def prepare_dagster_home(self) -> None:
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.project / "deploy" / "dagster.yaml", home / "dagster.yaml")

    def start_worker(self, service: str) -> None:
        """``dagster-celery worker start`` (Dagster's own worker command) on the shared instance:
        a Celery worker named ``<service>@<host>`` running one step at a time."""
        self.prepare_dagster_home()
        command = [
            str(self.bin / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            "-y",
            str(self.project / "deploy" / "celery.yaml"),
            "-n",
            service,
            "--",
            "--concurrency=1",
        ]
        log = self.log_path(service)
        offset = log.stat().st_size if log.exists() else 0
        env = self.dagster_env()
        # `dagster-celery worker start` runs `celery` from PATH: this environment's.
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        process = self._spawn(service, command, env, cwd=self.project)

        def ready() -> str | None:  # Celery's "celery@<name>@<host> ready." line, in this start's log
            with open(log, "rb") as text:
                text.seek(offset)
                said = text.read()
            return None if f"{service}@".encode() in said and b" ready." in said else "starting"

        self._wait(service, ready, process)

    def start_dagster_daemon(self) -> None:
        self.prepare_dagster_home()
        command = [str(self.bin / "dagster-daemon"), "run", "-w", str(self.project / "workspace.yaml")]
        process = self._spawn("dagster-daemon", command, self.dagster_env(), cwd=self.project)
        # The daemon's first heartbeat: it has loaded the instance (PostgreSQL) and the code location.
        self._wait("dagster-daemon", self._daemon_beat, process)

    def _daemon_beat(self) -> str | None:
        import psycopg2

        try:
            conn = self._pg_connect("dagster")
        except psycopg2.OperationalError as exc:
            return str(exc)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM daemon_heartbeats")
                return None if cur.fetchone()[0] > 0 else "no daemon heartbeat yet"
        except psycopg2.Error as exc:  # tables not created yet
            return str(exc)
        finally:
            conn.close()

    def start_dagster_webserver(self) -> None:
        self.prepare_dagster_home()
        command = [
            str(self.bin / "dagster-webserver"),
            "-w",
            str(self.project / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.settings().ports["dagster"]),
        ]
        process = self._spawn("dagster-webserver", command, self.dagster_env(), cwd=self.project)
        url = self.urls()["dagster"]
        self._wait(
            "dagster-webserver",
            lambda: urllib.request.urlopen(f"{url}/server_info", timeout=2).close(),
            process,
        )
