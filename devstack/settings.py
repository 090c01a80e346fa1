"""The stack's settings: names, preferred ports, and the ports and secrets generated once.

``credentials.json`` (mode 0600) under the stack's folder holds a ``Settings``; ``load_settings``
reads it, or generates it at the first start.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from devstack import seaweed

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


class StackError(RuntimeError):
    """A service of the stack could not be started or stopped; the message names it and its log."""


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


def load_settings(path: Path, preferred_ports: bool = True) -> Settings:
    """The settings in ``path``, generated (mode 0600) if it does not exist yet."""
    if path.is_file():
        settings = Settings(**json.loads(path.read_text()))
        if not settings.values_key:  # a stack from before values were signed: add one
            settings.values_key = secrets.token_hex(32)
            write_settings(path, settings)
        return settings
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings.generate(preferred_ports)
    write_settings(path, settings)
    return settings


def write_settings(path: Path, settings: Settings) -> None:
    seaweed.write_private(path, json.dumps(settings.__dict__, indent=2).encode())


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def workers_from_env() -> int:
    """``$EXPERIMENTS_WORKERS`` (default 2): how many Celery workers `make stack-up` starts."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return DEFAULT_WORKERS
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise StackError(f"${WORKERS_ENV}={raw!r} must be a whole number of Celery workers from 1 to 64.")
    return int(raw)
