"""The retrain sensor: a new version file becomes a partition and a run of the experiment job."""

import hashlib
import json
from typing import Any

import dagster as dg

from experiments_dagster.core import settings
from experiments_dagster.core.bounded_yaml import read_bounded
from experiments_dagster.core.catalog import FileState, scan_versions
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import SPEC_FILE, resolve_spec
from experiments_dagster.core.versioning import config_hash
from experiments_dagster.defs.console import CONSOLE_RUN_CONFIG
from experiments_dagster.defs.jobs import experiment_job
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.defs.resources import ExperimentData

CURSOR_VERSION = 1


def _load_cursor(raw: str | None) -> dict[str, Any]:
    state = json.loads(raw) if raw else {}
    if state.get("v") != CURSOR_VERSION:
        state = {"v": CURSOR_VERSION}
    for key in ("pending", "trained", "changed", "rejected", "specs"):
        state.setdefault(key, {})
    return state


def _content_sha(context: dg.SensorEvaluationContext, path) -> str | None:
    """sha256[:12] of the file's text, read within experiment.yaml's bound (None, said, if not)."""
    try:
        return hashlib.sha256(read_bounded(path).encode()).hexdigest()[:12]
    except ExperimentInputError as exc:  # it grew past the bound since it was resolved
        context.log.error(f"{path} changed but cannot be read: {exc}")
        return None


def _spec_changes(
    context: dg.SensorEvaluationContext, state: dict[str, Any], files: list[FileState], retrain_all: bool
) -> tuple[list[dg.RunRequest], list[dg.AssetObservation]]:
    """Report the trained versions of each dataset whose experiment.yaml changed what trains (its
    resolved config); request their retraining only when ``retrain_all`` (the resource's option)
    or the file's ``retrain_on_change``.

    The file is stat'ed each tick and read only when its size or mtime moved; a dataset seen for
    the first time is remembered, not reported. A retrain's run key is ``<partition>@spec-<sha>``,
    so each content of the file trains each version at most once.
    """
    requests, events = [], []
    for folder in sorted({f.version.path.parent for f in files}):
        dataset, path = folder.name, folder / SPEC_FILE
        try:
            st = path.stat()
        except OSError:
            continue
        known = state["specs"].get(dataset)
        stamp = [st.st_size, st.st_mtime_ns]
        if known is not None and known["stamp"] == stamp:
            continue
        # What trains is the resolved config (the experiment key's config hash): a comment, the
        # order of keys or `retrain_on_change` itself leave the trained versions up to date.
        try:
            spec = resolve_spec(dataset, folder, {})
        except ExperimentInputError as exc:
            # Keep the last good config: a fixed file is compared with it, not with this one.
            state["specs"][dataset] = {"stamp": stamp, "config": known and known.get("config")}
            if known is not None:
                context.log.error(f"{path} changed but cannot be read: {exc}")
            continue
        config = config_hash(spec.model_dump(mode="json"))
        state["specs"][dataset] = {"stamp": stamp, "config": config}
        if known is None or known.get("config") in (None, config):
            continue  # first sight, or no change to what trains
        stale = sorted(k for k in state["trained"] if k.split("/", 1)[0] == dataset)
        if not stale:
            continue
        retrain = retrain_all or spec.retrain_on_change
        # The run key names the file's content, so each content trains each version at most once.
        sha = _content_sha(context, path)
        if sha is None:
            continue
        what = (
            "retraining them"
            if retrain
            else "not retraining them (set `retrain_on_change: true` in the file or on the sensor's "
            "`data` resource, or run `experiments-dagster run --dataset " + dataset + "`)"
        )
        message = f"{path} changed: versions {', '.join(stale)} are out of date; {what}."
        context.log.warning(message)
        for key in stale:
            events.append(
                dg.AssetObservation(asset_key="splits", partition=key, metadata={"out_of_date": message})
            )
            if retrain:
                requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}@spec-{sha}"))
    return requests, events


def evaluate_versions(
    context: dg.SensorEvaluationContext, data_dir, retrain_on_change: bool = False
) -> dg.SensorResult:
    """One tick: stat files (never read or hash them), compare with the cursor, request runs.

    - new file: remembered; requested on the next tick if its size and mtime did not change
      (a half-written file is still changing);
    - known version (in the cursor or already a partition): never requested again; if its
      size/mtime differ from when it was trained it is reported once as out of date (the
      sensor's run key per version stays: `experiments-dagster run` trains a new attempt);
    - unsafe names or paths escaping the data directory: skipped with a warning, once;
    - a changed experiment.yaml: see ``_spec_changes``.
    """
    state = _load_cursor(context.cursor)
    scan = scan_versions(data_dir)
    for refusal in scan.refused:
        if str(refusal.path) not in state["rejected"]:
            context.log.warning(refusal.reason)
    state["rejected"] = {str(refusal.path): 1 for refusal in scan.refused}
    files = [f for f in scan.files if f.size > 0]  # an empty file is still being created
    registered = set(context.instance.get_dynamic_partitions(DATASET_VERSIONS))
    requests, new_keys, events = _version_changes(context, state, files, registered)
    retrains, spec_events = _spec_changes(context, state, files, retrain_on_change)
    requests += [r for r in retrains if r.partition_key not in new_keys]
    events += spec_events
    partitions = [dg.AddDynamicPartitionsRequest(DATASET_VERSIONS, new_keys)] if new_keys else []
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partitions,
        asset_events=events,
        cursor=json.dumps(state, sort_keys=True),
    )


def _version_changes(
    context: dg.SensorEvaluationContext, state: dict[str, Any], files: list[FileState], registered: set[str]
) -> tuple[list[dg.RunRequest], list[str], list[dg.AssetObservation]]:
    """Runs of the new versions whose file stood still since the last tick (and their partition
    keys); reports of trained versions whose file changed. Updates the cursor's ``state``."""
    requests, new_keys, events = [], [], []
    pending: dict[str, list[int]] = {}
    for f in files:
        key = f.version.partition_key
        trained = state["trained"].get(key)
        if trained is None and key in registered:
            state["trained"][key] = trained = f.stamp  # trained before this sensor saw it
        if trained is not None:
            events += _changed_after_training(context, state, f, trained)
            continue
        if state["pending"].get(key) == f.stamp:
            requests.append(dg.RunRequest(partition_key=key, run_key=key, run_config=CONSOLE_RUN_CONFIG))
            new_keys.append(key)
            state["trained"][key] = f.stamp
        else:
            pending[key] = f.stamp  # first sight, or still being written
    state["pending"] = pending
    return requests, new_keys, events


def _changed_after_training(
    context: dg.SensorEvaluationContext, state: dict[str, Any], f: FileState, trained: list[int]
) -> list[dg.AssetObservation]:
    """A trained version whose file's size/mtime moved is reported once (an observation of
    ``raw_data``); back to its trained stamp, it may be reported again."""
    key = f.version.partition_key
    if trained == f.stamp:
        state["changed"].pop(key, None)
        return []
    if key in state["changed"]:
        return []
    message = (
        f"{f.version.path} changed after version {key} was trained (size/mtime "
        f"{trained} -> {f.stamp}): that version is out of date. The sensor does not "
        "retrain it under the same name: `experiments-dagster run` trains a new attempt "
        "of it, or save the new data as a new version file."
    )
    context.log.error(message)
    state["changed"][key] = f.stamp
    return [
        dg.AssetObservation(asset_key="raw_data", partition=key, metadata={"changed_after_training": message})
    ]


@dg.sensor(
    job=experiment_job,
    minimum_interval_seconds=30,
    # `EXPERIMENTS_SENSOR=off`: the retrain sensor starts stopped (it trains every version it finds
    # on its first ticks otherwise). Only its default: a status set in the UI is kept by the instance.
    default_status=(
        dg.DefaultSensorStatus.STOPPED if settings.sensor_stopped() else dg.DefaultSensorStatus.RUNNING
    ),
    description="Adds a partition and runs the experiment job for each new, fully written version file.",
)
def dataset_version_sensor(context: dg.SensorEvaluationContext, data: ExperimentData) -> dg.SensorResult:
    """Retrain on new data: one run per new dataset version file; report (or retrain) versions
    whose experiment.yaml changed."""
    return evaluate_versions(context, data.path(), data.retrain_on_change)
