"""The Definitions object of the code location."""

import dagster as dg

from experiments_dagster.defs import data_assets, registry_assets, report_assets, training_assets
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.io_manager import ExperimentIOManager
from experiments_dagster.defs.jobs import experiment_job
from experiments_dagster.defs.lifecycle import failed_run_cleanup_job, mlflow_run_reconciler
from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.defs.sensors import dataset_version_sensor

ASSETS = [
    *dg.load_assets_from_modules([data_assets, training_assets, report_assets, registry_assets]),
]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[*LOGGING_CHECKS, registry_assets.champion_alias_matches_decision],
    jobs=[experiment_job, failed_run_cleanup_job],
    sensors=[dataset_version_sensor, mlflow_run_reconciler],
    resources={"mlflow": MlflowTracking(), "data": ExperimentData(), "io_manager": ExperimentIOManager()},
    # One process per run: a spawned process per step would re-import for seconds each.
    executor=dg.in_process_executor,
)
