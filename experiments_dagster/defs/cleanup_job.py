"""Cleaning up old FAILED/KILLED MLflow runs: the function, and the Dagster job (its op and config) around it."""

import time
from typing import Literal

import dagster as dg
from pydantic import Field

from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.run_lookup import runs_matching
from experiments_dagster.tracking.store import Tracker


class CleanupConfig(dg.Config):
    """Which failed runs to clean up, and how."""

    older_than_days: float = Field(default=30.0, ge=0, description="Only runs that ended this long ago.")
    action: Literal["tag", "delete"] = Field(
        default="tag",
        description="'tag' marks them cleanup.status=stale-failure; 'delete' soft-deletes them.",
    )


def tag_or_delete_failed_runs(
    tracker: Tracker, older_than_days: float, action: str, now_ms: int | None = None
) -> list[str]:
    """FAILED/KILLED runs that ended over ``older_than_days`` ago: tag or soft-delete them."""
    cutoff = (now_ms or int(time.time() * 1000)) - int(older_than_days * 86_400_000)
    # MLflow's filter syntax has no OR: one search per status.
    runs = [
        r
        for status in ("FAILED", "KILLED")
        for r in runs_matching(tracker, f"attributes.status = '{status}'")
    ]
    stale = [
        r
        for r in runs
        if (r.info.end_time or r.info.start_time) <= cutoff
        and (action == "delete" or r.data.tags.get(tags.CLEANUP_STATUS) != "stale-failure")
    ]
    for run in stale:
        if action == "delete":
            tracker.client.delete_run(run.info.run_id)
        else:
            tracker.set_tags(run.info.run_id, {tags.CLEANUP_STATUS: "stale-failure"})
    return [r.info.run_id for r in stale]


@dg.op(description="Tag or delete FAILED/KILLED MLflow runs older than the configured age.")
def clean_up_failed_runs(
    context: dg.OpExecutionContext, config: CleanupConfig, mlflow: MlflowTracking
) -> list[str]:
    """Clean up failed runs: tag or delete them."""
    ids = tag_or_delete_failed_runs(mlflow.tracker(), config.older_than_days, config.action)
    context.log.info(f"{config.action}: {len(ids)} failed runs older than {config.older_than_days} days")
    return ids


@dg.job(description="Clean up failed MLflow runs older than a configurable age (tag or delete).")
def failed_run_cleanup_job() -> None:
    clean_up_failed_runs()
