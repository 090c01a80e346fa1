"""Helpers shared by asset bodies: run lifecycle decisions and Dagster metadata."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import dagster as dg

from experiments_dagster.experiment.run_facts import dagster_tags
from experiments_dagster.experiment.values import RunRef
from experiments_dagster.tracking.liveness import worker_id

# An asset's body, or an op of a graph-backed asset.
StepContext = dg.AssetExecutionContext | dg.OpExecutionContext

# Assets that log into the parent run, in dependency order.
LOGGING_ORDER = (
    "splits",
    "search_trials",
    "fold_models",
    "cv_metrics",
    "final_model",
    "evaluation_plots",
    "repro_manifest",
)


def planned_assets(context: StepContext) -> set[str]:
    """The logging assets this Dagster run executes a step of.

    The steps come from the run's own plan (``step_keys_to_execute``, set for every run, in
    process or not), not from ``asset_selection``, which is empty under ``execute_in_process``.
    A graph-backed asset's steps are ``<asset>.<op>`` (``search_trials.search_worker[0]``): any
    of them counts as planning the asset.
    """
    steps = context.run.step_keys_to_execute
    if steps is None:
        return set(LOGGING_ORDER)
    return {step.split(".", 1)[0] for step in steps}


def run_end(context: StepContext, asset: str, last_step: str | None = None) -> dict[str, Any]:
    """How ``asset``'s logging ends the parent run, as ``Tracker.activity`` keywords.

    - ``finish``: ``asset`` is the experiment's last logging asset (``repro_manifest``): the
      run is complete and ends FINISHED.
    - ``unfinished``: no logging asset after ``asset`` is a step of this Dagster run (a partial
      materialization or re-execution): the later ones, which this attempt leaves out, so the
      run does not stay RUNNING nor claim to be complete.

    ``last_step``: for an op of a graph-backed asset before its last one, the step key of that
    last op (``search_trials.collect_search``). When this Dagster run executes it, it decides;
    otherwise (a re-execution of selected steps) the asset itself is left out too.
    """
    later = LOGGING_ORDER[LOGGING_ORDER.index(asset) + 1 :]
    planned = planned_assets(context)
    this_run = {"dagster_run_id": context.run.run_id}
    if last_step is not None:
        steps = context.run.step_keys_to_execute
        if steps is None or last_step in steps or any(name in planned for name in later):
            return {"finish": False, "unfinished": (), **this_run}
        return {"finish": False, "unfinished": (asset, *later), **this_run}
    unfinished = () if any(name in planned for name in later) else later
    return {"finish": not later, "unfinished": unfinished, **this_run}


def tags_for(context: StepContext, asset: str) -> dict[str, str]:
    """``dagster.run_id``/``partition_key``/``asset_key`` for runs opened by ``asset``."""
    return dagster_tags(context.run_id, context.partition_key, asset)


def run_metadata(ref: RunRef) -> dict[str, dg.MetadataValue]:
    """The MLflow run's link and id, and the worker that ran the step (``<hostname>:<pid>``)."""
    return {
        "mlflow_run_url": dg.MetadataValue.url(ref.url),
        "mlflow_run_id": ref.run_id,
        "worker": worker_id(),
    }


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG as a markdown image (Dagster's UI opens markdown over 1,000 characters in a modal)."""
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def plots_markdown(pngs: Mapping[str, bytes]) -> dg.MetadataValue:
    """Every plot in one markdown entry: one click in Dagster's UI shows them all, titled."""
    sections = (
        f"**{name.removesuffix('.png')}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        for name, png in pngs.items()
    )
    return dg.MetadataValue.md("\n\n".join(sections))


def metrics_metadata(metrics: Mapping[str, float]) -> dict[str, dg.MetadataValue]:
    """Each metric once, as a float (Dagster plots it across materializations), sorted by name."""
    return {k: dg.MetadataValue.float(float(metrics[k])) for k in sorted(metrics)}


def frame_markdown(frame) -> dg.MetadataValue:
    """A small DataFrame (index included) as a markdown table."""
    frame = frame.reset_index()
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * frame.shape[1]
    body = "\n".join(
        "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    )
    return dg.MetadataValue.md(f"{head}\n{body}")


def table_metadata(frame) -> dg.MetadataValue:
    """A small DataFrame (index included) as a Dagster table, with typed columns."""
    frame = frame.reset_index()
    kinds = {"i": "int", "u": "int", "f": "float", "b": "bool"}
    schema = dg.TableSchema(
        columns=[dg.TableColumn(str(c), kinds.get(frame[c].dtype.kind, "string")) for c in frame.columns]
    )
    records = [
        dg.TableRecord({str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
        for row in frame.to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records, schema=schema)
