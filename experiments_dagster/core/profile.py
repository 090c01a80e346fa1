"""Deployment profiles: one setting, ``EXPERIMENTS_PROFILE``, chooses where runs, values and logs go.

- ``embedded`` (the default when unset): SQLite MLflow store and artifacts beside the data
  directory, Dagster's SQLite instance in ``DAGSTER_HOME`` (``<project>/dagster_home``), asset
  values in the instance's storage folder. Nothing here is read or checked for it, so the default
  costs nothing.
- ``production``: the services a team shares, named by environment variables (the contract of
  deployment scripts; ``make stack-up`` writes them to ``.stack/env``):

  ``MLFLOW_TRACKING_URI``
      ``http(s)://`` URL of MLflow's tracking server (``mlflow server --app-name basic-auth
      --serve-artifacts``); artifacts go through it to its object store.
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
      the user MLflow's basic-auth app knows (MLflow's own variables).
  ``DAGSTER_HOME``
      a folder holding the ``dagster.yaml`` of the PostgreSQL instance (``deploy/dagster.yaml``,
      which reads ``EXPERIMENTS_DAGSTER_PG_URL``, a ``postgresql+psycopg2://`` URL).
  ``EXPERIMENTS_S3_URL``
      ``s3://<bucket>/<prefix>`` for asset values, through s3fs with the standard AWS variables
      (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a non-AWS store).
  ``EXPERIMENTS_DAGSTER_URL`` (optional)
      the Dagster webserver's URL; MLflow runs then carry a ``dagster.run_url`` tag.
  ``EXPERIMENTS_EXECUTOR`` (optional)
      ``in_process`` (the default: every step in the run's process) or ``celery``: steps go to
      Celery workers (``dagster-celery``) through ``EXPERIMENTS_CELERY_BROKER_URL`` (a
      ``redis://`` URL; ``EXPERIMENTS_CELERY_BACKEND_URL`` for results, default the broker).
  ``EXPERIMENTS_LOCK_URL`` (optional)
      PostgreSQL URL for the locks that keep promotions apart across workers (locks.py);
      default ``EXPERIMENTS_DAGSTER_PG_URL``. The Celery executor needs one of them.
  ``EXPERIMENTS_OPTUNA_STORAGE`` (optional)
      SQLAlchemy URL of the Optuna storage that searches with ``search.workers`` > 1 share.

On every profile, an ``http(s)://`` ``MLFLOW_TRACKING_URI`` gets bounded HTTP settings
(``bound_http_waits``): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=1`` and
``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` unless set, instead of MLflow's 7 retries with backoff and 120 s
(minutes per call against a server that is gone). Setting either variable raises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from experiments_dagster.core import settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.settings import (  # noqa: F401  (names importers take from here)
    BACKEND_ENV,
    BROKER_ENV,
    DAGSTER_HOME_ENV,
    DAGSTER_URL_ENV,
    EXECUTOR_ENV,
    LOCK_URL_ENV,
    OPTUNA_STORAGE_ENV,
    PG_URL_ENV,
    PROFILE_ENV,
    RETRIES_ENV,
    S3_URL_ENV,
    TIMEOUT_ENV,
    TRACKING_URI_ENV,
)

# MLflow's HTTP client settings (mlflow.environment_variables): defaults for any tracking server.
HTTP_DEFAULTS = {RETRIES_ENV: "1", TIMEOUT_ENV: "10"}
IN_PROCESS = "in_process"
CELERY = "celery"
EXECUTORS = (IN_PROCESS, CELERY)
EMBEDDED = "embedded"
PRODUCTION = "production"
PROFILES = (EMBEDDED, PRODUCTION)


@dataclass(frozen=True)
class Profile:
    """What a profile resolves to; None fields keep the embedded defaults (paths.py)."""

    name: str
    tracking_uri: str | None = None
    values_url: str | None = None  # the IO manager's base_dir
    dagster_url: str | None = None
    executor: str = IN_PROCESS
    celery_broker: str | None = None
    celery_backend: str | None = None
    lock_url: str | None = None  # PostgreSQL, for locks.NamedLock; None: locks within one process
    optuna_storage: str | None = None  # shared Optuna study storage; None: in-memory studies

    @property
    def production(self) -> bool:
        return self.name == PRODUCTION


def bound_http_waits(tracking_uri: str | None) -> None:
    """For an http(s) tracking URI, MLflow's HTTP retries and timeout default to ``HTTP_DEFAULTS``
    (a value already in the environment is kept: that is how a team raises them)."""
    if urlparse(tracking_uri or "").scheme in ("http", "https"):
        for key, value in HTTP_DEFAULTS.items():
            settings.set_default(key, value)


def profile_name() -> str:
    """``$EXPERIMENTS_PROFILE`` (unset or blank: embedded); an unknown name lists the valid ones."""
    raw = settings.text(PROFILE_ENV)
    name = raw.lower() or EMBEDDED
    if name not in PROFILES:
        raise ExperimentInputError(
            f"${PROFILE_ENV}={raw!r} is not a profile; valid profiles: {', '.join(PROFILES)} "
            f"(unset means {EMBEDDED})."
        )
    return name


def executor_name(profile: str) -> str:
    """``$EXPERIMENTS_EXECUTOR`` (unset: in_process); Celery only on the production profile."""
    executor = settings.text(EXECUTOR_ENV).lower() or IN_PROCESS
    if executor not in EXECUTORS:
        raise ExperimentInputError(
            f"${EXECUTOR_ENV}={executor!r} is not an executor; valid: {', '.join(EXECUTORS)} "
            f"(unset means {IN_PROCESS})."
        )
    if profile == EMBEDDED and executor != IN_PROCESS:
        raise ExperimentInputError(
            f"${EXECUTOR_ENV}={executor} needs {PROFILE_ENV}=production: Celery workers share "
            "the PostgreSQL instance and the object store, which the embedded default has not."
        )
    return executor


def lock_url() -> str | None:
    """``$EXPERIMENTS_LOCK_URL``, else ``$EXPERIMENTS_DAGSTER_PG_URL``, else None."""
    return settings.text(LOCK_URL_ENV) or settings.text(PG_URL_ENV) or None


def lock_url_env() -> str | None:
    """The name of the variable ``lock_url`` takes its value from, or None."""
    return next((name for name in (LOCK_URL_ENV, PG_URL_ENV) if settings.is_set(name)), None)


def store_problems(uri: str, values: str) -> list[str]:
    """What is wrong with the production profile's tracking server, instance and object store."""
    problems = []
    if urlparse(uri).scheme not in ("http", "https"):
        problems.append(
            f"MLFLOW_TRACKING_URI must be the tracking server's http(s):// URL (is {uri or 'unset'!r})"
        )
    home = settings.text(DAGSTER_HOME_ENV)
    if not home or not (Path(home) / "dagster.yaml").is_file():
        problems.append(
            f"DAGSTER_HOME must be a folder with the PostgreSQL instance's dagster.yaml "
            f"(deploy/dagster.yaml; is {home or 'unset'!r})"
        )
    parsed = urlparse(values)
    if parsed.scheme != "s3" or not parsed.netloc:
        problems.append(
            f"{S3_URL_ENV} must be s3://<bucket>/<prefix> for asset values (is {values or 'unset'!r})"
        )
    return problems


def celery_problems(executor: str, broker: str | None, lock: str | None) -> list[str]:
    """What the Celery executor lacks: a redis:// broker and a PostgreSQL lock URL."""
    if executor != CELERY:
        return []
    problems = []
    if urlparse(broker or "").scheme not in ("redis", "rediss"):
        problems.append(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}=redis://host:port/db (is {broker!r})")
    if not lock:
        problems.append(
            f"{EXECUTOR_ENV}=celery needs {LOCK_URL_ENV} or {PG_URL_ENV} (a PostgreSQL URL): "
            "Celery ignores Dagster's pools, so promotions are kept apart by a PostgreSQL lock"
        )
    return problems


def load_profile() -> Profile:
    """The active profile. For production, checks its settings. Any profile with an http(s)
    ``MLFLOW_TRACKING_URI`` gets the bounded HTTP settings."""
    name = profile_name()
    uri = settings.text(TRACKING_URI_ENV)
    bound_http_waits(uri)
    executor = executor_name(name)
    if name == EMBEDDED:
        return Profile(EMBEDDED)
    values = settings.text(S3_URL_ENV).rstrip("/")
    broker = settings.text(BROKER_ENV) or None
    lock = lock_url()
    problems = store_problems(uri, values) + celery_problems(executor, broker, lock)
    if problems:
        raise ExperimentInputError(
            f"{PROFILE_ENV}=production is missing settings: "
            + "; ".join(problems)
            + ". For the local stack: `make stack-up`, then `. .stack/env`."
        )
    celery = executor == CELERY
    return Profile(
        PRODUCTION,
        tracking_uri=uri,
        values_url=values,
        dagster_url=settings.dagster_url(),
        executor=executor,
        celery_broker=broker if celery else None,
        celery_backend=(settings.text(BACKEND_ENV) or broker) if celery else None,
        lock_url=lock,
        optuna_storage=settings.text(OPTUNA_STORAGE_ENV) or None,
    )
