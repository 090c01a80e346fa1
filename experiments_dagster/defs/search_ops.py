"""The ops of the graph-backed ``search_trials`` asset: plan, one worker step per slot, collect.

In a run they are the steps ``search_trials.plan_search``, ``search_trials.search_worker[<slot>]``
and ``search_trials.collect_search``; on the Celery executor the worker steps run at once, on
the in-process executor one after another (the first then runs every trial, the others find the
count reached). Each logs through ``MlflowTracking``; the failure hook closes what a step left.
"""

from collections.abc import Iterator

import dagster as dg

from experiments_dagster.defs.metadata import png_markdown, run_end, run_metadata, tags_for
from experiments_dagster.defs.resources import Coordination, MlflowTracking
from experiments_dagster.experiment import search as search_log
from experiments_dagster.experiment.values import SearchResult, SearchSlot, Splits, WorkerTrials

ASSET = "search_trials"
COLLECT_STEP = f"{ASSET}.collect_search"  # the op that ends the asset (and decides the parent's end)


@dg.op(out=dg.DynamicOut(SearchSlot))
def plan_search(
    context: dg.OpExecutionContext, mlflow: MlflowTracking, coordination: Coordination, splits: Splits
) -> Iterator[dg.DynamicOutput[SearchSlot]]:
    """Logs the search's settings on the parent run and creates its Optuna study; one output per
    worker slot (one when search is off, so the asset always materializes)."""
    tracker = mlflow.tracker()
    with tracker.activity(splits.run.run_id, ASSET, **run_end(context, ASSET, last_step=COLLECT_STEP)):
        plan = search_log.plan_search(tracker, splits, coordination.study_storage(), context.run_id)
    if plan.workers > 1 and coordination.lock_url is None:
        context.log.warning(
            "No PostgreSQL lock URL (EXPERIMENTS_LOCK_URL or EXPERIMENTS_DAGSTER_PG_URL): the search's "
            "trial count is exact only among worker steps of one process."
        )
    context.log.info(
        f"search {'on' if plan.enabled else 'off'}: study {plan.study_name or '-'}, {plan.workers} worker(s)"
    )
    for slot in range(plan.workers if plan.enabled else 1):
        yield dg.DynamicOutput(SearchSlot(plan, slot), mapping_key=str(slot))


@dg.op
def search_worker(
    context: dg.OpExecutionContext,
    mlflow: MlflowTracking,
    coordination: Coordination,
    splits: Splits,
    slot: SearchSlot,
) -> dg.Output[WorkerTrials]:
    """Runs trials into the shared study until it holds `n_trials` finished ones; each finished
    trial a nested MLflow run under the parent."""
    tracker = mlflow.tracker()
    lock = coordination.lock(f"search:{slot.plan.study_name}")
    # Not ``activity``: worker steps run beside each other and never decide the parent's end.
    with tracker.failures_recorded(splits.run.run_id, ASSET):
        value = search_log.run_search_worker(
            tracker, splits, slot, tags_for(context, ASSET), coordination.study_storage(), lock
        )
    return dg.Output(
        value,
        metadata={
            **run_metadata(splits.run),
            "slot": slot.slot,
            "trials": len(value.trials),
            "trial_numbers": dg.MetadataValue.json([t.number for t in value.trials]),
        },
    )


@dg.op
def collect_search(
    context: dg.OpExecutionContext,
    mlflow: MlflowTracking,
    coordination: Coordination,
    splits: Splits,
    results: list[WorkerTrials],
) -> dg.Output[SearchResult]:
    """Reads the study: best params and score, trials table and optimization history on the parent."""
    tracker = mlflow.tracker()
    with tracker.activity(splits.run.run_id, ASSET, **run_end(context, ASSET)):
        value = search_log.collect_search(
            tracker, splits, results, coordination.study_storage(), tags_for(context, ASSET)
        )
    plan = results[0].slot.plan
    metadata: dict = {**run_metadata(splits.run), "enabled": value.enabled}
    if value.enabled:
        metadata |= {
            "trials": len(value.trials),
            "workers": plan.workers,
            "study": plan.study_name,
            "best_score": value.best_score,
            "metric": value.metric,
            "best_params": dg.MetadataValue.json(value.best_params),
            "optimization_history": png_markdown(value.history_png, "optimization history"),
        }
    return dg.Output(value, metadata=metadata)
