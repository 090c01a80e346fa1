"""Find the MLflow run a Dagster run logged to, from the tags its logging left."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from experiments_dagster.tracking import tags

if TYPE_CHECKING:
    from experiments_dagster.tracking.store import Tracker

# dagster-mlflow's `mlflow_tracking` resource tags each run it opens with this (its name, not ours).
DAGSTER_MLFLOW_RUN_TAG = "dagster_run_id"


def _experiment_ids(client: MlflowClient) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def runs_of_dagster_run(client: MlflowClient, dagster_run_id: str) -> list[Run]:
    """Every active MLflow run tagged with the Dagster run id, by dagster-mlflow or by us."""
    found: dict[str, Run] = {}
    ids = _experiment_ids(client)
    for tag in (DAGSTER_MLFLOW_RUN_TAG, tags.DAGSTER_RUN_ID):
        for run in client.search_runs(ids, f"tags.`{tag}` = '{dagster_run_id}'", max_results=1000):
            found[run.info.run_id] = run
    return list(found.values())


def pick_run(runs: Iterable[Run], asset_key: str) -> Run | None:
    """The run of ``asset_key`` among one Dagster run's MLflow runs.

    Ours name their asset (``dagster.asset_key``); otherwise the top-level runs are candidates
    (nested runs are folds or trials of one of them), the latest started first.
    """
    runs = list(runs)
    named = [r for r in runs if r.data.tags.get(tags.DAGSTER_ASSET_KEY) == asset_key]
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    candidates = named or top or runs
    return max(candidates, key=lambda r: r.info.start_time or 0, default=None)


def runs_left_running(tracker: Tracker, dagster_run_id: str | None = None) -> list[Run]:
    """MLflow runs made by Dagster (of ``dagster_run_id`` if given) whose status is still RUNNING."""
    query = "attributes.status = 'RUNNING'"
    if dagster_run_id is not None:
        query += f" and tags.`{tags.DAGSTER_RUN_ID}` = '{dagster_run_id}'"
    return [r for r in runs_matching(tracker, query) if tags.DAGSTER_RUN_ID in r.data.tags]


def runs_matching(tracker: Tracker, filter_string: str) -> list[Run]:
    """MLflow runs of every active experiment that match ``filter_string``."""
    ids = [e.experiment_id for e in tracker.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    return tracker.client.search_runs(ids, filter_string, max_results=50_000) if ids else []
