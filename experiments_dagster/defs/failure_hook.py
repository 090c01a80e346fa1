"""The failure hook of every logging asset: a failed step ends the MLflow runs it left RUNNING FAILED."""

import dagster as dg

from experiments_dagster.tracking.run_lookup import runs_left_running


@dg.failure_hook(required_resource_keys={"mlflow"})
def mlflow_runs_failed(context: dg.HookContext) -> None:
    """A failed step ends the MLflow runs its Dagster run left RUNNING FAILED, with the step's error.

    Errors inside an asset body are recorded by the body's ``Tracker.activity``; this catches
    what happens around it: the IO manager's write of the output, a resource, the step's
    framework code. Attached to every logging asset (``hooks=``), so it runs in every job.
    """
    tracker = context.resources.mlflow.tracker()
    exc = context.op_exception or RuntimeError(f"step {context.step_key} failed")
    for run in runs_left_running(tracker, context.run_id):
        tracker.mark_failed(run.info.run_id, context.step_key, exc)
