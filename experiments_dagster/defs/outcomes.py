"""One outcome in both records: a Dagster run that failed never leaves its MLflow parent FINISHED.

``repro_manifest`` ends the parent FINISHED when the experiment has logged; a step after it, or
the run's orchestration itself (a Celery broker lost while the last result was on its way), can
still fail the Dagster run. The parent is then ended FAILED, with the run's failure as its error
and ``reconciled.reason``: by the run-failure sensor below for every failed run of the instance,
and by `experiments-dagster run` right after a failed attempt (``reconcile_runs``).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from experiments_dagster.defs.reconciliation import Reconciled, reconcile_runs, step_failure
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.run_lookup import runs_matching
from experiments_dagster.tracking.store import Tracker


def fail_finished_parents(
    tracker: Tracker, instance: dg.DagsterInstance, dagster_run_id: str
) -> list[Reconciled]:
    """End FAILED the FINISHED parent runs that the failed Dagster run ``dagster_run_id`` logged
    into last (their ``dagster.run_id``); nothing if the run did not fail."""
    run = instance.get_run_by_id(dagster_run_id)
    if run is None or run.status != dg.DagsterRunStatus.FAILURE:
        return []
    query = f"attributes.status = 'FINISHED' and tags.`{tags.DAGSTER_RUN_ID}` = '{dagster_run_id}'"
    parents = [r for r in runs_matching(tracker, query) if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    if not parents:
        return []
    failed = step_failure(instance, dagster_run_id)
    reason = "its Dagster run failed after this run was finished" + (
        f": step {failed[0]} failed: {failed[1]}" if failed else ""
    )
    done = []
    for parent in parents:
        tracker.set_tags(
            parent.info.run_id,
            {
                tags.RECONCILED_REASON: reason,
                tags.ERROR_ASSET: failed[0] if failed else "dagster",
                tags.ERROR_TYPE: "DagsterRunFailed",
                tags.ERROR_MESSAGE: reason,
            },
        )
        tracker.end_run(parent.info.run_id, "FAILED")
        done.append(Reconciled(parent.info.run_id, dagster_run_id, "FAILED", reason))
    return done


def fail_parents_of_recent_failures(
    tracker: Tracker, instance: dg.DagsterInstance, within: timedelta = timedelta(days=1)
) -> list[Reconciled]:
    """``fail_finished_parents`` for the Dagster runs that failed within ``within`` and logged a
    parent that ended FINISHED in that time (the sweep of `run` and `audit`, for deployments
    without the daemon's sensor): one query of each store."""
    since = datetime.now(UTC) - within
    failed = {
        record.dagster_run.run_id
        for record in instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since)
        )
    }
    if not failed:
        return []
    query = f"attributes.status = 'FINISHED' and attributes.end_time >= {int(since.timestamp() * 1000)}"
    finished = runs_matching(tracker, query)
    logged_by = {
        r.data.tags.get(tags.DAGSTER_RUN_ID) for r in finished if MLFLOW_PARENT_RUN_ID not in r.data.tags
    }
    return [
        r for run_id in sorted(logged_by & failed) for r in fail_finished_parents(tracker, instance, run_id)
    ]


def sweep(
    tracker: Tracker, instance: dg.DagsterInstance, dagster_run_id: str | None = None
) -> list[Reconciled]:
    """What `run` and `audit` do without the daemon: ``reconcile_runs``, then the FINISHED parents
    of ``dagster_run_id`` if it failed (of the last day's failed runs if no id is given)."""
    done = reconcile_runs(tracker, instance, dagster_run_id)
    if dagster_run_id is not None:
        return done + fail_finished_parents(tracker, instance, dagster_run_id)
    return done + fail_parents_of_recent_failures(tracker, instance)


@dg.run_failure_sensor(
    name="mlflow_parent_outcome",
    monitor_all_code_locations=True,  # runs of `experiments-dagster run` have no code location origin
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Ends FAILED the MLflow parent runs left FINISHED by a Dagster run that then failed.",
)
def mlflow_parent_outcome(context: dg.RunFailureSensorContext, mlflow: MlflowTracking) -> None:
    """Keeps the MLflow parent's status in step with its Dagster run's failure."""
    for r in fail_finished_parents(mlflow.tracker(), context.instance, context.dagster_run.run_id):
        context.log.warning(
            f"MLflow run {r.mlflow_run_id} -> FAILED: {r.reason} (Dagster run {r.dagster_run_id})"
        )
