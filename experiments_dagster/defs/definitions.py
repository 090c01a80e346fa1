"""The Definitions object of the code location."""

import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg

from experiments_dagster.core import settings
from experiments_dagster.core.profile import (
    BACKEND_ENV,
    BROKER_ENV,
    CELERY,
    EMBEDDED,
    PRODUCTION,
    Profile,
    load_profile,
    lock_url_env,
)
from experiments_dagster.core.settings import MLFLOW_UI_ENV, OPTUNA_STORAGE_ENV, S3_URL_ENV, TRACKING_URI_ENV
from experiments_dagster.defs import (
    data_assets,
    drift_assets,
    registry_assets,
    report_assets,
    training_assets,
)
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.cleanup_job import failed_run_cleanup_job
from experiments_dagster.defs.console import experiment_console_logger
from experiments_dagster.defs.io_manager import ExperimentIOManager
from experiments_dagster.defs.jobs import experiment_job
from experiments_dagster.defs.outcomes import mlflow_parent_outcome
from experiments_dagster.defs.reconciler_sensor import mlflow_run_reconciler
from experiments_dagster.defs.reproduce_job import build_reproduce_job
from experiments_dagster.defs.resources import Coordination, ExperimentData, MlflowTracking
from experiments_dagster.defs.sensors import dataset_version_sensor

ASSETS = [
    *dg.load_assets_from_modules(
        [data_assets, training_assets, report_assets, registry_assets, drift_assets]
    ),
]


def executor_for(profile: Profile) -> dg.ExecutorDefinition:
    """The in-process executor, or (``EXPERIMENTS_EXECUTOR=celery``) dagster-celery's, whose
    broker and backend come from the environment, as the workers' ``deploy/celery.yaml`` does.

    The run launcher stays Dagster's default: the run's own process orchestrates and its steps
    go to the workers (``CeleryRunLauncher`` with ``celery_executor`` deadlocks on
    ``result.get()`` inside a task: dagster #29660, #32915).
    """
    if profile.executor != CELERY:
        # One process per run: a spawned process per step would re-import for seconds each.
        return dg.in_process_executor
    from celery.exceptions import DuplicateTaskNameWarning
    from dagster_celery import celery_executor

    # dagster-celery 0.29.27 registers its `execute_plan` task again for every step it submits
    # (executor._submit_task calls tasks.create_task), which Celery 5.7 reports once per step
    # with this warning. The first registration is the one used, so nothing is wrong: only this
    # message, only in this category, is silenced.
    warnings.filterwarnings(
        "ignore", message="Task name 'execute_plan' is already registered", category=DuplicateTaskNameWarning
    )
    return celery_executor.configured(
        {
            "broker": {"env": BROKER_ENV},
            "backend": {"env": BACKEND_ENV if settings.raw(BACKEND_ENV) else BROKER_ENV},
            # As deploy/celery.yaml (the workers' side): see its comments.
            "config_source": {
                "worker_prefetch_multiplier": 1,
                "task_acks_late": True,
                "task_reject_on_worker_lost": False,
            },
        },
        name="celery_executor",
    )


def env_or_none(name: str | None) -> dg.EnvVar | None:
    """``dg.EnvVar(name)`` when the variable is set here, else None (the field's default): Dagster
    fails a run whose config names an unset variable, so optional settings name only set ones."""
    return dg.EnvVar(name) if name and settings.is_set(name) else None


def embedded_resources() -> dict[str, Any]:
    """The embedded profile: local stores at their defaults (paths.py), locks within one process."""
    return {
        # EXPERIMENTS_MLFLOW_UI_URL: where run links point for a local store (default: make mlflow-ui's port).
        "mlflow": MlflowTracking(ui_url=env_or_none(MLFLOW_UI_ENV)),
        "data": ExperimentData(),
        "io_manager": ExperimentIOManager(),
        "coordination": Coordination(),
    }


def production_resources() -> dict[str, Any]:
    """The production profile: the shared services' URLs and secrets as ``dg.EnvVar`` fields, read
    from the environment of the process that runs each run or step (load_profile checked them)."""
    return {
        "mlflow": MlflowTracking(tracking_uri=dg.EnvVar(TRACKING_URI_ENV), ui_url=env_or_none(MLFLOW_UI_ENV)),
        "data": ExperimentData(),
        "io_manager": ExperimentIOManager(base_dir=dg.EnvVar(S3_URL_ENV)),
        "coordination": Coordination(
            lock_url=env_or_none(lock_url_env()), optuna_storage=env_or_none(OPTUNA_STORAGE_ENV)
        ),
    }


# One dict of resources per profile, chosen once (as Dagster's project_fully_featured example
# chooses one per deployment).
RESOURCES_BY_PROFILE: dict[str, Callable[[], dict[str, Any]]] = {
    EMBEDDED: embedded_resources,
    PRODUCTION: production_resources,
}

# EXPERIMENTS_PROFILE (profile.py): embedded (default) or production; same assets either way.
PROFILE = load_profile()

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[
        *LOGGING_CHECKS,
        registry_assets.champion_alias_matches_decision,
        registry_assets.promotion_not_blocked,
        drift_assets.data_drift_below_threshold,
    ],
    jobs=[
        experiment_job,
        failed_run_cleanup_job,
        # Its reruns execute this location's experiment_job, bound to the resources below.
        build_reproduce_job(lambda: defs.resolve_job_def("experiment_job")),
    ],
    sensors=[dataset_version_sensor, mlflow_run_reconciler, mlflow_parent_outcome],
    resources=RESOURCES_BY_PROFILE[PROFILE.name](),
    executor=executor_for(PROFILE),
    # Every job, the UI's asset job too: step starts/ends, checks, INFO; EXPERIMENTS_LOG_LEVEL=DEBUG for all.
    loggers={"console": experiment_console_logger},
)


def experiment_job_on_workers() -> dg.JobDefinition:
    """``experiment_job`` bound to this location's resources and executor: the target of
    ``dg.reconstructable`` for runs whose steps go to Celery workers, which rebuild the job by
    importing this module-level function."""
    return defs.resolve_job_def("experiment_job")
