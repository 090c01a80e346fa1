"""The local stack: services from installed programs, under one folder, stopped by PID.

Layout of the folder (``.stack/`` by default, git-ignored):

- ``credentials.json`` (mode 0600): generated passwords, keys and the ports chosen at first start;
- ``env``: ``export`` lines for every variable a client needs (``. .stack/env``);
- ``pids/<service>.pid``: PID and start time of each service (a reused PID is not mistaken);
- ``logs/<service>.log``; ``pg/`` (PostgreSQL cluster), ``redis/``, ``s3/`` (SeaweedFS), ``mlflow/``
  (basic-auth config), ``dagster_home/`` (``deploy/dagster.yaml``).

The code, one module a noun, each importing only those above it:

- ``settings``: names, preferred ports, the generated ``Settings`` (credentials.json), ``StackError``;
- ``processes``: the folder's PID files and logs; start, wait for and stop a service by PID;
- ``environment``: the services' URLs and the clients' ``env`` file;
- ``postgres``, ``redis_broker``, ``s3_store``, ``mlflow_server``, ``dagster_services`` (Celery
  workers, daemon, webserver): one service each;
- ``stack``: ``LocalStack``, all of them in start order (up, down, wipe, status).

This module keeps the names other code imports from ``devstack.local``.
"""

from devstack.postgres import PG_BIN_DIRS, pg_program
from devstack.processes import READY_TIMEOUT_S, STOP_TIMEOUT_S
from devstack.settings import (
    ADMIN_USER,
    BUCKET,
    CLIENT_USER,
    CORE_SERVICES,
    DAGSTER_SERVICES,
    DATABASES,
    DEFAULT_WORKERS,
    PG_USER,
    PREFERRED_PORTS,
    WORKERS_ENV,
    Settings,
    StackError,
    workers_from_env,
)
from devstack.stack import LocalStack

__all__ = [
    "ADMIN_USER",
    "BUCKET",
    "CLIENT_USER",
    "CORE_SERVICES",
    "DAGSTER_SERVICES",
    "DATABASES",
    "DEFAULT_WORKERS",
    "PG_BIN_DIRS",
    "PG_USER",
    "PREFERRED_PORTS",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "WORKERS_ENV",
    "LocalStack",
    "Settings",
    "StackError",
    "pg_program",
    "workers_from_env",
]
