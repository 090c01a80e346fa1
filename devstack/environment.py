"""What clients of the stack are given: its URLs and the ``env`` file (``. .stack/env``)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from devstack import seaweed
from devstack.processes import ServiceFolder
from devstack.settings import BUCKET, CLIENT_USER, PG_USER
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


class ClientEnvironment(ServiceFolder):
    """The URLs of the stack's services and the variables a client of the production profile needs."""

    def pg_url(self, database: str) -> str:
        s = self.settings()
        return f"postgresql+psycopg2://{PG_USER}:{s.pg_password}@127.0.0.1:{s.ports['postgres']}/{database}"

    def redis_url(self) -> str:
        s = self.settings()
        return f"redis://:{s.redis_password}@127.0.0.1:{s.ports['redis']}/0"

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
