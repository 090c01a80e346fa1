"""The Definitions object of the code location."""

import dagster as dg

from experiments_dagster.defs import data_assets, registry_assets, report_assets, training_assets
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.io_manager import ExperimentIOManager
from experiments_dagster.defs.jobs import experiment_job
from experiments_dagster.defs.lifecycle import failed_run_cleanup_job, mlflow_run_reconciler
from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.defs.sensors import dataset_version_sensor
from experiments_dagster.profile import load_profile

ASSETS = [
    *dg.load_assets_from_modules([data_assets, training_assets, report_assets, registry_assets]),
]

# EXPERIMENTS_PROFILE (profile.py): embedded (default) or production; same assets either way.
PROFILE = load_profile()

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[*LOGGING_CHECKS, registry_assets.champion_alias_matches_decision],
    jobs=[experiment_job, failed_run_cleanup_job],
    sensors=[dataset_version_sensor, mlflow_run_reconciler],
    resources={
        "mlflow": MlflowTracking(tracking_uri=PROFILE.tracking_uri),
        "data": ExperimentData(),
        "io_manager": ExperimentIOManager(base_dir=PROFILE.values_url),
    },
    # One process per run: a spawned process per step would re-import for seconds each.
    executor=dg.in_process_executor,
)
