"""Params, metrics and tags of a run, in batches within MLflow's own limits."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from experiments_dagster.core.errors import ExperimentInputError


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RunValues:
    """Logging of params, metrics and tags through ``self.client`` (part of ``Tracker``)."""

    client: MlflowClient

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches; identical re-logs are skipped, conflicting ones refused."""
        existing = self.client.get_run(run_id).data.params
        new: dict[str, str] = {}
        conflicts = []
        for key, value in params.items():
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                text = text[: MAX_PARAM_VAL_LENGTH - 14] + "...[truncated]"
            if key in existing:
                if existing[key] != text:
                    conflicts.append(f"{key}: logged {existing[key]!r}, now {text!r}")
                continue
            new[key] = text
        if conflicts:
            raise ExperimentInputError(
                f"MLflow params are immutable and run {run_id} already has different values "
                f"({'; '.join(conflicts[:5])}). Re-materialize from `splits` to start a new "
                "experiment attempt with the new settings."
            )
        for chunk in chunks(list(new.items()), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics in batches of MLflow's maximum size."""
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for chunk in chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def link_metrics_to_model(
        self, run_id: str, model_id: str, metrics: Mapping[str, float], dataset: tuple[str, str] | None
    ) -> None:
        """Log ``metrics`` on the run and on its LoggedModel (MLflow 3's Models view and
        ``search_logged_models`` read them there), evaluated on ``dataset`` (name, digest).

        A metric the run already has at step 0 with the same value is re-logged with its own
        timestamp, so the run's history gains no second point (MLflow skips the identical row)
        while the model gets the value."""
        name, digest = dataset if dataset is not None else (None, None)
        now = int(time.time() * 1000)
        logged = self.client.get_run(run_id).data.metrics
        items = []
        for key, value in metrics.items():
            history = self.client.get_metric_history(run_id, key) if logged.get(key) == value else []
            stamp = next((m.timestamp for m in history if m.step == 0 and m.value == float(value)), now)
            items.append(Metric(key, float(value), stamp, 0, model_id, name, digest, run_id))
        for chunk in chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags in batches (values truncated to MLflow's limit)."""
        items = [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)
