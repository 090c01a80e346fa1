"""Where things live: project root, data directory, embedded MLflow and Dagster stores.

Every default can be overridden by an environment variable:
``EXPERIMENTS_DATA_DIR``, ``MLFLOW_TRACKING_URI`` and ``DAGSTER_HOME``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from experiments_dagster.core import settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # experiments_dagster/core/paths.py


def data_dir() -> Path:
    """The data directory: ``$EXPERIMENTS_DATA_DIR`` or ``<project>/data``, absolute."""
    raw = settings.raw(settings.DATA_DIR_ENV)
    return Path(raw).expanduser().resolve() if raw else PROJECT_ROOT / "data"


def embedded_store_dir() -> Path:
    """The folder of the embedded MLflow database and artifacts: ``.mlflow`` beside the data
    directory (``<project>/.mlflow`` by default), never inside it.

    Loading a model runs code stored with it; whoever may drop files into the data directory
    (a data drop, a sync job) must not be able to reach the store through it.
    """
    return data_dir().parent / ".mlflow"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or SQLite at an absolute path beside the data directory."""
    env = settings.raw(settings.TRACKING_URI_ENV)
    if env:
        return env
    return f"sqlite:///{embedded_store_dir() / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a SQLite URI, absolute, else None.

    As in SQLAlchemy: ``sqlite:///rel/path.db`` is relative to the working directory and
    ``sqlite:////abs/path.db`` absolute.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    rest = unquote(urlparse(tracking_uri).path[1:] if "?" in tracking_uri else tracking_uri[len(prefix) :])
    if not rest or rest == ":memory:":
        return None
    return Path(rest).resolve()


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifact location beside a local SQLite store; None lets a server decide."""
    db = sqlite_path(tracking_uri)
    return (db.parent / "artifacts").as_uri() if db else None


def default_dagster_home() -> Path:
    """``$DAGSTER_HOME`` or the persistent ``<project>/dagster_home``."""
    raw = settings.raw(settings.DAGSTER_HOME_ENV)
    return Path(raw).expanduser().resolve() if raw else PROJECT_ROOT / "dagster_home"
