"""The reconciler sensor: fails Dagster runs whose worker is dead and closes the MLflow runs that
ended or dead Dagster runs left RUNNING (reconciliation.py), every 30 s on the daemon."""

import dagster as dg

from experiments_dagster.defs.reconciliation import reconcile_runs
from experiments_dagster.defs.resources import MlflowTracking


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails Dagster runs whose run worker is dead and closes the MLflow runs left RUNNING "
    "by canceled, failed or dead Dagster runs.",
)
def mlflow_run_reconciler(context: dg.SensorEvaluationContext, mlflow: MlflowTracking) -> dg.SkipReason:
    """Keeps MLflow run status truthful when a Dagster run ends without closing its runs."""
    done = reconcile_runs(mlflow.tracker(), context.instance)
    for r in done:
        context.log.warning(
            f"MLflow run {r.mlflow_run_id} -> {r.status}: {r.reason} (Dagster run {r.dagster_run_id})"
        )
    return dg.SkipReason(
        f"Closed {len(done)} MLflow runs left RUNNING." if done else "No MLflow run left RUNNING."
    )
