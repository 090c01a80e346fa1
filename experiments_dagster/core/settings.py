"""Every environment variable the package reads, declared once (name, default, meaning), and the
only module under ``experiments_dagster/`` (``cli/`` aside) that reads or sets ``os.environ``.

``SETTINGS`` is the declared list; docs/hooks.py renders it as the table of
docs/reference/environment.md. The functions below are the typed accessors every other tier
calls; a name read here must be declared in ``SETTINGS`` (``declared`` checks it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from experiments_dagster.core.errors import ExperimentInputError


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default (as a reader would state it) and meaning."""

    name: str
    default: str
    meaning: str


# Names, one constant each: modules import these instead of spelling the variables.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
DATA_DIR_ENV = "EXPERIMENTS_DATA_DIR"
CPUS_ENV = "EXPERIMENTS_CPUS"
CV_WORKERS_ENV = "EXPERIMENTS_CV_WORKERS"
CV_MEMORY_ENV = "EXPERIMENTS_CV_MEMORY_MB"
CACHE_ENV = "EXPERIMENTS_IO_CACHE_MB"
KEY_ENV = "EXPERIMENTS_VALUES_KEY"
LOG_LEVEL_ENV = "EXPERIMENTS_LOG_LEVEL"
SENSOR_ENV = "EXPERIMENTS_SENSOR"
MLFLOW_UI_ENV = "EXPERIMENTS_MLFLOW_UI_URL"
PROFILE_ENV = "EXPERIMENTS_PROFILE"
S3_URL_ENV = "EXPERIMENTS_S3_URL"
DAGSTER_URL_ENV = "EXPERIMENTS_DAGSTER_URL"
PG_URL_ENV = "EXPERIMENTS_DAGSTER_PG_URL"
EXECUTOR_ENV = "EXPERIMENTS_EXECUTOR"
BROKER_ENV = "EXPERIMENTS_CELERY_BROKER_URL"
BACKEND_ENV = "EXPERIMENTS_CELERY_BACKEND_URL"
LOCK_URL_ENV = "EXPERIMENTS_LOCK_URL"
OPTUNA_STORAGE_ENV = "EXPERIMENTS_OPTUNA_STORAGE"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"

DEFAULT_CV_MEMORY_MB = 512
# 512 MB holds one large value, not two: on the 1,000,000 x 50 workload raw_data (377 MB pickle)
# is evicted when splits (378 MB) is written, after its two consumers ran, so the cache does not
# raise peak memory (target: peak RSS <= 4 GiB) while splits serves its 6 consumers from memory.
# A budget >= 755 MB would keep raw_data alive for the rest of the run for nothing.
DEFAULT_CACHE_MB = 512
DEFAULT_LOG_LEVEL = "INFO"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        TRACKING_URI_ENV,
        "`sqlite:///<parent of the data dir>/.mlflow/mlflow.db` (artifacts beside it): "
        "`<project>/.mlflow/` by default",
        "Where MLflow runs and models go; on the production profile the tracking server's http(s):// URL.",
    ),
    Setting(
        DAGSTER_HOME_ENV,
        "`<project>/dagster_home` (for `make` targets and `experiments-dagster run`)",
        "Dagster's instance folder (its `dagster.yaml`); on the production profile the PostgreSQL instance's.",
    ),
    Setting(DATA_DIR_ENV, "`<project>/data`", "The folder holding `<dataset>/<version>.csv|.parquet`."),
    Setting(
        CPUS_ENV,
        "unset: every CPU the process may run on (its affinity mask, which `taskset` and cpusets such "
        "as `docker --cpuset-cpus` narrow; a CPU quota such as `docker --cpus` does not, so set this "
        "beside one)",
        "At most this many CPUs for one run's fits and folds at once; set it when several runs share "
        "a machine (see below).",
    ),
    Setting(
        CV_WORKERS_ENV,
        f"unset: one per usable CPU, at most the number of folds, within `{CV_MEMORY_ENV}`",
        "How many CV folds train at once, in threads of the run's process; `1` trains them one after "
        "another. Each fold's fit gets its share of the usable CPUs as `n_jobs`, and the last, partial "
        "round shares all of them (each fold run logs its own `n_jobs` and `cv.workers`). The final "
        "model's fit on the whole train split is one more job of the same pool (as "
        "`GridSearchCV(refit=True)` refits), so on two CPUs it trains beside the fifth fold instead "
        "of after it; its `n_jobs` is then set back to a lone fit's share, the `n_jobs` it logs and "
        "predicts with, and its trees are the same either way. `fit_time_seconds` on the parent is "
        "that fit's own time; `training_wall_seconds` the whole pool's. Fold results do not depend "
        "on it beyond XGBoost's thread-count float rounding (`hist` is deterministic for a fixed `n_jobs`).",
    ),
    Setting(
        CV_MEMORY_ENV,
        f"`{DEFAULT_CV_MEMORY_MB}`",
        "Memory the folds trained beside the first may use, estimated at 4x a fold's share of the "
        "train frame; big data trains its folds one at a time with all CPUs per fit (`0` = always "
        "one at a time).",
    ),
    Setting(
        CACHE_ENV,
        f"`{DEFAULT_CACHE_MB}`",
        "Asset values a run's steps share in memory instead of unpickling each time (LRU; `0` turns "
        "it off; a value is reused only while its stored file or object is unchanged). Values are "
        "still written as pickles, atomically, at `fs_io_manager`'s paths (`<base_dir>/<asset "
        "key>/<partition key>`) by `ExperimentIOManager`, a Dagster `UPathIOManager`: `base_dir` "
        "defaults to `$DAGSTER_HOME/storage`, and an `s3://bucket/prefix` URL (needs `s3fs`) stores "
        "them in an object store instead, with credentials and endpoint from `AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` or the resource's `storage_options`.",
    ),
    Setting(
        KEY_ENV,
        "unset: `$DAGSTER_HOME/values.key`, generated once with mode 0600 (outside `data/`)",
        "The key that signs every stored asset value (below); at least 32 characters. Required with "
        "an `s3://` `base_dir` (production profile), where every process and worker must share it.",
    ),
    Setting(
        LOG_LEVEL_ENV,
        f"`{DEFAULT_LOG_LEVEL}`",
        "The console logger's level: INFO shows step starts and ends, check results, MLflow links "
        "and warnings; DEBUG every Dagster event.",
    ),
    Setting(
        SENSOR_ENV,
        "`on`",
        "`off` (or `0`, `false`, `stopped`) starts the dataset version sensor stopped in a new "
        "Dagster instance; the UI's toggle still turns it on.",
    ),
    Setting(
        MLFLOW_UI_ENV,
        "unset: `http://127.0.0.1:5000` (`make mlflow-ui`'s port)",
        "Base URL of the MLflow UI that run links point at, for a local store; a tracking server's "
        "links point at the server.",
    ),
    Setting(
        PROFILE_ENV,
        "`embedded`",
        "`embedded` (SQLite stores beside the data) or `production` (the shared services named by "
        "the variables below; see the production profile).",
    ),
    Setting(S3_URL_ENV, "unset", "Production: `s3://<bucket>/<prefix>` for asset values, through s3fs."),
    Setting(
        DAGSTER_URL_ENV,
        "unset",
        "The Dagster webserver's URL; MLflow runs then carry a `dagster.run_url` tag.",
    ),
    Setting(
        PG_URL_ENV,
        "unset",
        "Production: the `postgresql+psycopg2://` URL `deploy/dagster.yaml` reads; also the default "
        f"of `{LOCK_URL_ENV}`.",
    ),
    Setting(
        EXECUTOR_ENV,
        "`in_process`",
        f"`in_process` (every step in the run's process) or `celery` (production): steps go to "
        f"Celery workers through `{BROKER_ENV}`.",
    ),
    Setting(BROKER_ENV, "unset", "Production with Celery: the broker's `redis://` URL."),
    Setting(BACKEND_ENV, f"unset: `{BROKER_ENV}`", "Production with Celery: where task results go."),
    Setting(
        LOCK_URL_ENV,
        f"unset: `{PG_URL_ENV}`",
        "PostgreSQL URL for the locks that keep promotions apart across workers; the Celery "
        "executor needs one of the two.",
    ),
    Setting(
        OPTUNA_STORAGE_ENV,
        "unset: in-memory studies",
        "SQLAlchemy URL of the Optuna storage that searches with `search.workers` > 1 share.",
    ),
    Setting(USERNAME_ENV, "unset", "MLflow's own: the user of the tracking server's basic-auth app."),
    Setting(PASSWORD_ENV, "unset", "MLflow's own: that user's password."),
    Setting(
        RETRIES_ENV,
        "`1` with an http(s) tracking URI (`0` for CLI commands that only read)",
        "MLflow's own: retries per HTTP request; set it to raise the bound.",
    ),
    Setting(
        TIMEOUT_ENV,
        "`10` with an http(s) tracking URI",
        "MLflow's own: seconds per HTTP request; set it to raise the bound.",
    ),
)
DECLARED = frozenset(s.name for s in SETTINGS)


def declared(name: str) -> str:
    """``name``, if ``SETTINGS`` declares it (a typo or an undocumented variable fails loudly)."""
    if name not in DECLARED:
        raise KeyError(f"{name} is not declared in experiments_dagster.core.settings.SETTINGS")
    return name


def raw(name: str) -> str | None:
    """The variable's value as set (None when unset): the one read of ``os.environ``."""
    return os.environ.get(declared(name))


def text(name: str) -> str:
    """The value stripped of surrounding blanks; ``""`` when unset."""
    return (raw(name) or "").strip()


def is_set(name: str) -> bool:
    """Whether the variable has a non-blank value."""
    return bool(text(name))


def integer(name: str, default: int, minimum: int, what: str, fix: str) -> int:
    """An integer setting (unset or blank: ``default``); a bad value names the fix."""
    value_text = text(name)
    if not value_text:
        return default
    try:
        value = int(value_text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ExperimentInputError(f"${name}={value_text!r} is not valid: use {what}; {fix}")
    return value


def set_default(name: str, value: str) -> None:
    """Give a library's variable (MLflow reads its own) a value unless the environment has one."""
    os.environ.setdefault(declared(name), value)


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``overrides``, for a child process."""
    return {**os.environ, **overrides}


# --- typed accessors ---------------------------------------------------------------------------


def io_cache_mb() -> int:
    """``$EXPERIMENTS_IO_CACHE_MB``: the IO manager's value cache budget in MB."""
    what = "a whole number of MB >= 0"
    fix = f"e.g. {DEFAULT_CACHE_MB} (0 disables the IO manager's value cache)."
    return integer(CACHE_ENV, DEFAULT_CACHE_MB, 0, what, fix)


def log_level() -> str:
    """``$EXPERIMENTS_LOG_LEVEL`` as set, else INFO (the console logger judges the value)."""
    value = raw(LOG_LEVEL_ENV)
    return DEFAULT_LOG_LEVEL if value is None else value


def sensor_stopped() -> bool:
    """Whether ``$EXPERIMENTS_SENSOR`` asks for the dataset sensor to start stopped."""
    return (raw(SENSOR_ENV) or "on").lower() in {"off", "0", "false", "stopped"}


def dagster_url() -> str | None:
    """The Dagster webserver's base URL (no trailing slash), or None."""
    return text(DAGSTER_URL_ENV).rstrip("/") or None


def tracking_username() -> str | None:
    """MLflow's ``MLFLOW_TRACKING_USERNAME`` as set (for messages naming the user)."""
    return raw(USERNAME_ENV)


def http_waits() -> tuple[str, str]:
    """MLflow's HTTP retries and timeout as set, for messages (``MLflow's default`` when unset)."""
    retries, timeout = raw(RETRIES_ENV), raw(TIMEOUT_ENV)
    default = "MLflow's default"
    return (default if retries is None else retries), (default if timeout is None else timeout)
