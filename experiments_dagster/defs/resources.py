"""Resources: the MLflow tracking store, the data directory, locks and shared study storage."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from experiments_dagster.core.locks import NamedLock
from experiments_dagster.core.paths import data_dir, default_tracking_uri
from experiments_dagster.tracking.server import check_server, is_server
from experiments_dagster.tracking.store import Tracker


class MlflowTracking(dg.ConfigurableResource):
    """MLflow through ``MlflowClient`` with explicit run ids; the URI defaults to the embedded store."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; unset means $MLFLOW_TRACKING_URI, else SQLite under the data dir.",
    )
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the MLflow UI used in run links (default http://127.0.0.1:5000).",
    )

    def tracker(self) -> Tracker:
        """A tracker bound to this store."""
        return Tracker(self.tracking_uri, self.ui_url)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start, one request to a tracking server: a wrong URL or password fails the run
        here, with one line naming the URL and the user, before any step logs."""
        # Local stores are opened (and created) only when a step logs, not here.
        if is_server(self.tracking_uri or default_tracking_uri()):
            check_server(self.tracker().client)


class ExperimentData(dg.ConfigurableResource):
    """Where dataset folders live; unset means $EXPERIMENTS_DATA_DIR, else ``data/``."""

    data_dir: str | None = Field(default=None, description="Folder holding <dataset>/<version>.csv|.parquet.")
    retrain_on_change: bool = Field(
        default=False,
        description="Sensor: retrain the versions of a dataset whose experiment.yaml changed "
        "(else it only reports them; experiment.yaml's own `retrain_on_change` does it per dataset).",
    )

    def path(self) -> Path:
        """The data directory, absolute."""
        return Path(self.data_dir).resolve() if self.data_dir else data_dir()


class Coordination(dg.ConfigurableResource):
    """What steps on different workers share beyond MLflow: named locks (PostgreSQL advisory
    locks on the production profile) and the Optuna storage of searches spread over workers.

    The URLs hold passwords. On the production profile definitions.py sets them with
    ``dg.EnvVar`` (``$EXPERIMENTS_LOCK_URL`` or ``$EXPERIMENTS_DAGSTER_PG_URL``, and
    ``$EXPERIMENTS_OPTUNA_STORAGE``): the resource's config then holds only the variables' names,
    which is what Dagster's UI shows for it, and each run's (or Celery step's) process reads the
    values from its own environment when it initializes the resource. Unset, locks hold within
    one process and studies live in memory.
    """

    lock_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the named locks (an EnvVar); unset: locks within one process.",
    )
    optuna_storage: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the shared Optuna storage (an EnvVar); unset: in-memory studies.",
    )
    lock_timeout_seconds: float = Field(
        default=600.0, description="How long a step waits for a lock another worker holds before failing."
    )

    def lock(self, name: str) -> NamedLock:
        """A lock shared by every worker of the deployment (one process's on the embedded default)."""
        return NamedLock(self.lock_url, name, timeout_s=self.lock_timeout_seconds)

    def study_storage(self) -> str | None:
        """The shared Optuna storage URL, or None (in-memory studies, one search step)."""
        return self.optuna_storage
