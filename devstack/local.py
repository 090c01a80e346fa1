"""The local stack: services from installed programs, under one folder, stopped by PID.

Layout of the folder (``.stack/`` by default, git-ignored):

- ``credentials.json`` (mode 0600): generated passwords, keys and the ports chosen at first start;
- ``env``: ``export`` lines for every variable a client needs (``. .stack/env``);
- ``pids/<service>.pid``: PID and start time of each service (a reused PID is not mistaken);
- ``logs/<service>.log``; ``pg/`` (PostgreSQL cluster), ``s3/`` (SeaweedFS), ``mlflow/``
  (basic-auth config), ``dagster_home/`` (``deploy/dagster.yaml``).

Services, in start order: ``postgres`` (databases ``dagster``, ``mlflow``, ``mlflow_auth``,
``optuna``), ``redis`` (Celery's broker and result backend), ``s3`` (bucket ``experiments``: MLflow
artifacts under ``mlflow/``, asset values under ``values/``), ``mlflow`` (``mlflow server --app-name
basic-auth --serve-artifacts``, one worker), ``celery-worker-1`` .. ``celery-worker-N``
(``dagster-celery worker start``, one step at a time each; N is ``$EXPERIMENTS_WORKERS``, default 2),
``dagster-daemon`` and ``dagster-webserver``. Each runs in its own session (process group) and is
stopped by its recorded PID: SIGTERM to the group (SIGINT, a fast shutdown, to PostgreSQL's
postmaster), SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

from devstack import seaweed
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.core.profile import (
    BACKEND_ENV,
    BROKER_ENV,
    CELERY,
    DAGSTER_URL_ENV,
    EXECUTOR_ENV,
    OPTUNA_STORAGE_ENV,
    PG_URL_ENV,
    PRODUCTION,
    PROFILE_ENV,
    S3_URL_ENV,
)
from experiments_dagster.core.signing import KEY_ENV as VALUES_KEY_ENV
from experiments_dagster.tracking.liveness import process_start

BUCKET = "experiments"
PG_USER = "experiments"
CLIENT_USER = "experiments"  # the MLflow user clients log as; `admin` is the basic-auth admin
ADMIN_USER = "admin"
CORE_SERVICES = ("postgres", "redis", "s3", "mlflow")
DAGSTER_SERVICES = ("dagster-daemon", "dagster-webserver")
WORKERS_ENV = "EXPERIMENTS_WORKERS"
DEFAULT_WORKERS = 2
DATABASES = ("dagster", "mlflow", "mlflow_auth", "optuna")
PREFERRED_PORTS = {"postgres": 15432, "redis": 16379, "s3": 18333, "mlflow": 15000, "dagster": 13000}
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


class StackError(RuntimeError):
    """A service of the stack could not be started or stopped; the message names it and its log."""


def pg_program(name: str) -> str:
    """``initdb`` or ``postgres`` from PATH or Debian's PostgreSQL folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    raise StackError(
        f"PostgreSQL's `{name}` was not found (PATH, {', '.join(PG_BIN_DIRS)}): "
        "install it with `apt-get install postgresql`."
    )


@dataclass
class Settings:
    """What the stack generated once and reuses on every start: ports and secrets."""

    ports: dict[str, int]
    weed_ports: dict[str, int]
    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    admin_password: str
    client_password: str
    flask_secret: str
    redis_password: str = ""
    values_key: str = ""  # signs asset values (EXPERIMENTS_VALUES_KEY); "" in files from before it

    @classmethod
    def generate(cls, preferred_ports: bool = True) -> Settings:
        """New secrets; the preferred ports where free (else any free port), or only free ports."""

        def port(name: str) -> int:
            preferred = PREFERRED_PORTS[name]
            return preferred if preferred_ports and _port_free(preferred) else seaweed.free_port()

        return cls(
            ports={name: port(name) for name in PREFERRED_PORTS},
            weed_ports={k: v for k, v in seaweed.free_ports().items() if k != "s3.port"},
            pg_password=secrets.token_urlsafe(24),
            s3_access_key="experiments-" + secrets.token_hex(6),
            s3_secret_key=secrets.token_urlsafe(30),
            admin_password=secrets.token_urlsafe(24),
            client_password=secrets.token_urlsafe(24),
            flask_secret=secrets.token_urlsafe(32),
            redis_password=secrets.token_urlsafe(24),
            values_key=secrets.token_hex(32),
        )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalStack:
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
        self._settings: Settings | None = None

    # --- settings and environment ---------------------------------------------------------
    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.json"

    def settings(self) -> Settings:
        """The stack's settings, generated (mode 0600) on first use, read once per object."""
        if self._settings is not None:
            return self._settings
        if self.credentials_path.is_file():
            self._settings = Settings(**json.loads(self.credentials_path.read_text()))
            if not self._settings.values_key:  # a stack from before values were signed: add one
                self._settings.values_key = secrets.token_hex(32)
                self._write_settings(self._settings)
            return self._settings
        self.root.mkdir(parents=True, exist_ok=True)
        settings = Settings.generate(self.preferred_ports)
        self._write_settings(settings)
        self._settings = settings
        return settings

    def _write_settings(self, settings: Settings) -> None:
        seaweed.write_private(self.credentials_path, json.dumps(settings.__dict__, indent=2).encode())

    def pg_url(self, database: str) -> str:
        s = self.settings()
        return f"postgresql+psycopg2://{PG_USER}:{s.pg_password}@127.0.0.1:{s.ports['postgres']}/{database}"

    def redis_url(self) -> str:
        s = self.settings()
        return f"redis://:{s.redis_password}@127.0.0.1:{s.ports['redis']}/0"

    def worker_services(self) -> list[str]:
        """The Celery workers to run, and any recorded beyond them (a smaller N later): all stopped."""
        wanted = [f"celery-worker-{i}" for i in range(1, self.workers + 1)]
        recorded = sorted(p.stem for p in (self.root / "pids").glob("celery-worker-*.pid"))
        return wanted + [r for r in recorded if r not in wanted]

    def services(self) -> list[str]:
        return [*CORE_SERVICES, *self.worker_services(), *DAGSTER_SERVICES]

    def urls(self) -> dict[str, str]:
        p = self.settings().ports
        return {
            "mlflow": f"http://127.0.0.1:{p['mlflow']}",
            "dagster": f"http://127.0.0.1:{p['dagster']}",
            "s3": f"http://127.0.0.1:{p['s3']}",
            "postgres": f"postgresql://127.0.0.1:{p['postgres']}",
            "redis": f"redis://127.0.0.1:{p['redis']}/0",
        }

    def client_env(self) -> dict[str, str]:
        """Every variable a client of the production profile needs (written to ``env``)."""
        s = self.settings()
        urls = self.urls()
        return {
            PROFILE_ENV: PRODUCTION,
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            PG_URL_ENV: self.pg_url("dagster"),
            DAGSTER_URL_ENV: urls["dagster"],
            EXECUTOR_ENV: CELERY,
            BROKER_ENV: self.redis_url(),
            BACKEND_ENV: self.redis_url(),
            OPTUNA_STORAGE_ENV: self.pg_url("optuna"),
            "MLFLOW_TRACKING_URI": urls["mlflow"],
            "MLFLOW_TRACKING_USERNAME": CLIENT_USER,
            "MLFLOW_TRACKING_PASSWORD": s.client_password,
            S3_URL_ENV: f"s3://{BUCKET}/values",
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_ENDPOINT_URL": urls["s3"],
            "AWS_DEFAULT_REGION": seaweed.REGION,
            VALUES_KEY_ENV: s.values_key,
        }

    def write_env_file(self) -> Path:
        path = self.root / "env"
        lines = ["# Written by `make stack-up`: `. .stack/env` points clients at the local stack."]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items()]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        return path

    # --- processes ------------------------------------------------------------------------
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

    def running(self) -> dict[str, int | None]:
        return {service: self.pid(service) for service in self.services()}

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

    # --- the services ---------------------------------------------------------------------
    def _as_postgres_user(self) -> dict[str, object]:
        """PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError("running as root needs a `postgres` user for PostgreSQL's programs") from exc
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start_postgres(self) -> None:
        s = self.settings()
        pg = self.root / "pg"
        data = pg / "data"
        sockets = pg / "run"
        as_user = self._as_postgres_user()
        if not (data / "PG_VERSION").is_file():
            if data.exists():
                shutil.rmtree(data)  # an initdb that did not finish
            sockets.mkdir(parents=True, exist_ok=True)
            pwfile = pg / "pwfile"
            pwfile.write_text(s.pg_password + "\n")
            if as_user:
                _make_reachable(pg, as_user["user"])
                for path in (pg, sockets, pwfile):
                    os.chown(path, as_user["user"], as_user["group"])
            pwfile.chmod(0o600)
            try:
                subprocess.run(
                    [
                        pg_program("initdb"),
                        f"--pgdata={data}",
                        f"--username={PG_USER}",
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                    ],
                    check=True,
                    capture_output=True,
                    cwd=pg,
                    **as_user,
                )
            except subprocess.CalledProcessError as exc:
                raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from exc
            finally:
                pwfile.unlink(missing_ok=True)
        env = {**os.environ, "LC_ALL": "C"}
        process = self._spawn(
            "postgres",
            [
                pg_program("postgres"),
                "-D",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={s.ports['postgres']}",
                "-c",
                f"unix_socket_directories={sockets}",
                "-c",
                "max_connections=200",
            ],
            env,
            cwd=pg,
            **as_user,
        )
        self._wait("postgres", lambda: self._pg_connect("postgres").close(), process)
        conn = self._pg_connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for database in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()

    def _pg_connect(self, database: str):
        import psycopg2

        s = self.settings()
        return psycopg2.connect(
            host="127.0.0.1",
            port=s.ports["postgres"],
            user=PG_USER,
            password=s.pg_password,
            dbname=database,
            connect_timeout=3,
        )

    def start_redis(self) -> None:
        s = self.settings()
        program = shutil.which("redis-server")
        if program is None:
            raise StackError(
                "`redis-server` was not found on PATH: install it with `apt-get install redis-server`."
            )
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "redis.conf"
        # A config file, not arguments, so the password is not in `ps` output. No persistence:
        # the broker holds only in-flight tasks, and a restart between runs loses nothing.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f"bind 127.0.0.1\nport {s.ports['redis']}\nrequirepass {s.redis_password}\n"
                f'dir {folder}\nsave ""\nappendonly no\nprotected-mode yes\ndaemonize no\n'
            )
        process = self._spawn("redis", [program, str(conf)], dict(os.environ), cwd=folder)
        self._wait("redis", self._redis_ping, process)

    def _redis_ping(self) -> None:
        import redis

        s = self.settings()
        client = redis.Redis(
            host="127.0.0.1", port=s.ports["redis"], password=s.redis_password, socket_timeout=2
        )
        try:
            client.ping()
        finally:
            client.close()

    def restart_redis(self) -> None:
        self.stop("redis")
        self.start_redis()

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

    def start_s3(self) -> None:
        s = self.settings()
        root = self.root / "s3"
        ports = {**s.weed_ports, "s3.port": s.ports["s3"]}
        command = seaweed.weed_command(root, ports, s.s3_access_key, s.s3_secret_key)
        process = self._spawn("s3", command, dict(os.environ), cwd=root)
        endpoint = self.urls()["s3"]
        self._wait("s3", lambda: seaweed.s3_answers(endpoint, s.s3_access_key, s.s3_secret_key), process)
        import s3fs

        fs = s3fs.S3FileSystem(
            **seaweed.storage_options(endpoint, s.s3_access_key, s.s3_secret_key), skip_instance_cache=True
        )
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)

    def mlflow_env(self) -> dict[str, str]:
        """The server's environment: its object store, auth config and secrets (never the clients')."""
        s = self.settings()
        folder = self.root / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        ini = folder / "basic_auth.ini"
        seaweed.write_private(  # holds the auth database's password: 0600 from the start
            ini,
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.pg_url('mlflow_auth')}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # One worker, so no other worker can hold a stale entry; saves PBKDF2 per request.
            "auth_cache_ttl_seconds = 300\n".encode(),
        )
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            # The server's own option (--backend-store-uri) from its environment, so the
            # PostgreSQL password is not on its command line for every local user's `ps`.
            "MLFLOW_BACKEND_STORE_URI": self.pg_url("mlflow"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.flask_secret,
            "MLFLOW_S3_ENDPOINT_URL": self.urls()["s3"],
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_DEFAULT_REGION": seaweed.REGION,
        }

    def start_mlflow(self) -> None:
        s = self.settings()
        command = [
            str(self.bin / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{BUCKET}/mlflow",
            "--host",
            "127.0.0.1",
            "--port",
            str(s.ports["mlflow"]),
            "--workers",
            "1",
        ]
        process = self._spawn("mlflow", command, self.mlflow_env(), cwd=self.root / "mlflow")
        url = self.urls()["mlflow"]
        self._wait("mlflow", lambda: urllib.request.urlopen(f"{url}/health", timeout=2).close(), process)
        self.create_user(CLIENT_USER, s.client_password)

    def admin_request(self, endpoint: str, payload: dict, method: str = "POST") -> dict:
        """A call to the server's REST API as the basic-auth admin."""
        s = self.settings()
        token = b64encode(f"{ADMIN_USER}:{s.admin_password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.urls()['mlflow']}{endpoint}",
            data=json.dumps(payload).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def create_user(self, username: str, password: str) -> None:
        """A basic-auth user (kept if it exists)."""
        try:
            self.admin_request("/api/2.0/mlflow/users/create", {"username": username, "password": password})
        except urllib.error.HTTPError as exc:
            if b"RESOURCE_ALREADY_EXISTS" not in exc.read():
                raise

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

    # --- the stack ------------------------------------------------------------------------
    def up(self, out=print) -> bool:
        """Start every service that is not running; False (and nothing changed) if all were up."""
        running = self.running()
        if all(running.values()):
            out(f"The stack under {self.root} is already up; nothing changed.")
            self.print_urls(out)
            return False
        starters = {
            "postgres": self.start_postgres,
            "redis": self.start_redis,
            "s3": self.start_s3,
            "mlflow": self.start_mlflow,
            "dagster-daemon": self.start_dagster_daemon,
            "dagster-webserver": self.start_dagster_webserver,
        }
        # The Dagster daemon's code location connects to the others at load: keep the order.
        self.settings()
        for service in self.services():
            if running[service]:
                out(f"  {service:<18} already running (pid {running[service]})")
                continue
            if service.startswith("celery-worker-") and int(service.rsplit("-", 1)[1]) > self.workers:
                continue  # recorded by an earlier, larger N and no longer running
            started = time.monotonic()
            if service in starters:
                starters[service]()
            else:
                self.start_worker(service)
            out(f"  {service:<18} started (pid {self.pid(service)}, {time.monotonic() - started:.1f} s)")
        env = self.write_env_file()
        self.print_urls(out)
        out(f"Client settings: {env}  (`. {os.path.relpath(env)}`; credentials in {self.credentials_path})")
        return True

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

    def restart_postgres(self) -> None:
        self.stop("postgres")
        self.start_postgres()

    def status(self, out=print) -> bool:
        running = self.running()
        for service, pid in running.items():
            out(f"  {service:<18} {'running, pid ' + str(pid) if pid else 'stopped'}")
        return all(running.values())


def workers_from_env() -> int:
    """``$EXPERIMENTS_WORKERS`` (default 2): how many Celery workers `make stack-up` starts."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return DEFAULT_WORKERS
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise StackError(f"${WORKERS_ENV}={raw!r} must be a whole number of Celery workers from 1 to 64.")
    return int(raw)


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


def _make_reachable(folder: Path, uid: int) -> None:
    """The `postgres` user must be able to walk down to its data folder."""
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by the `postgres` user (mode {oct(mode & 0o777)}); "
                f"`chmod o+x {parent}` or choose a stack folder elsewhere."
            )
