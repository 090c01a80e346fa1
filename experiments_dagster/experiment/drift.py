"""Drift of a dataset version against the training data of its registered model's champion,
and the champion's metrics on this version's test split, logged on the version's parent run."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from experiments_dagster.core.catalog import partition_key, version_file
from experiments_dagster.core.dataset import drop_missing_target, hash_file, load_table
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.experiment.registry import CHAMPION, Decision, model_metrics
from experiments_dagster.experiment.values import FinalModel, RunRef, Splits
from experiments_dagster.ml import drift
from experiments_dagster.ml.training import split_dataset
from experiments_dagster.tracking.standard import metric_names
from experiments_dagster.tracking.store import Tracker

COMPARED, NO_CHAMPION, UNAVAILABLE = "compared", "no_champion", "champion_data_unavailable"
TABLE_ARTIFACT = "data_drift.csv"
SCHEMA_ARTIFACT = "data_drift_schema.json"
PLOT_ARTIFACT = "data_drift_top_features.png"
COMPARISON_ARTIFACT = "champion_comparison.csv"
MAX_METRIC_NAME = 250  # MLflow's limit on a metric name's length


@dataclass(frozen=True)
class Champion:
    """The registered model version aliased `champion`, and the data it was trained on."""

    model_name: str
    version: str
    run_id: str
    dataset: str
    dataset_version: str
    data_hash: str


@dataclass(frozen=True)
class DataDrift:
    """This version against the champion's training data (``status`` says whether it could be)."""

    run: RunRef
    status: str
    reason: str
    threshold: float
    champion: Champion | None = None
    schema: dict[str, list] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=drift.DRIFT_COLUMNS))
    target: dict[str, Any] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None
    champion_error: str = ""

    @property
    def above_threshold(self) -> list[str]:
        """Features whose PSI passes the threshold, most drifted first."""
        return [str(f) for f in self.table.loc[self.table["psi"] > self.threshold, "feature"]]


def metric_keys(features: list[str]) -> dict[str, str]:
    """``drift.<feature>.psi`` per feature: characters MLflow refuses in metric names become ``_``;
    a name that is too long or collides after that gets a short sha1 of the feature's name."""
    keys: dict[str, str] = {}
    for feature in features:
        key = "drift." + re.sub(r"[^\w.\- /]", "_", str(feature)) + ".psi"
        if len(key) > MAX_METRIC_NAME or key in keys.values():
            digest = hashlib.sha1(str(feature).encode()).hexdigest()[:8]
            key = f"drift.{key[6 : MAX_METRIC_NAME - 20]}_{digest}.psi"
        keys[feature] = key
    return keys


def champion_version(client: MlflowClient, model_name: str, version: str) -> Champion:
    """A registry version with its run's dataset and the data hash recorded in the registry."""
    found = client.get_model_version(model_name, version)
    dataset = client.get_run(found.run_id).data.params.get("dataset.name") if found.run_id else None
    facts = {"dataset.name": dataset, **{k: found.tags.get(k) for k in ("dataset.version", "data.hash")}}
    missing = [k for k, v in facts.items() if not v]
    if missing:
        raise ExperimentInputError(
            f"{model_name} v{version} does not record {', '.join(missing)} (registry tags and its run's "
            "params): its training data cannot be named, so there is nothing to compare against."
        )
    return Champion(
        model_name, str(found.version), found.run_id, dataset, facts["dataset.version"], facts["data.hash"]
    )


def champion_before(client: MlflowClient, decision: Decision) -> Champion | None:
    """The champion when this version landed: the one it was judged against if it was promoted
    (its decision names it), else the `champion` alias, which the decision left where it was."""
    if decision.promoted:
        previous = decision.champion_version
        return None if previous is None else champion_version(client, decision.model_name, previous)
    try:
        current = client.get_model_version_by_alias(decision.model_name, CHAMPION)
    except MlflowException:
        return None
    return champion_version(client, decision.model_name, str(current.version))


def champion_training_data(client: MlflowClient, champion: Champion, data_dir: Path) -> pd.DataFrame:
    """The champion's train split, target included: its version's file (only if its sha256 is the
    one the registry recorded) split again with the seed and test size its run logged."""
    path = version_file(data_dir, partition_key(champion.dataset, champion.dataset_version)).path
    actual = hash_file(path).sha256
    if actual != champion.data_hash:
        raise ExperimentInputError(
            f"{path} has sha256 {actual[:12]}…, not the {champion.data_hash[:12]}… the champion "
            f"v{champion.version} was trained on: restore that file to compare against it."
        )
    params = client.get_run(champion.run_id).data.params
    clean, _ = drop_missing_target(load_table(path), params["target"], path)
    split = split_dataset(
        clean, params["target"], params["task"], float(params["split.test_size"]), int(params["seed.split"])
    )
    return split.X_train.assign(**{params["target"]: split.y_train.to_numpy()})


def champion_metrics(champion: Champion, client: MlflowClient, splits: Splits, columns: list[str]) -> dict:
    """The champion's test metrics on this version's test split; columns it was trained on and
    this version lacks are given to it as missing values (its imputer's business)."""
    uri = f"models:/{champion.model_name}/{champion.version}"
    return model_metrics(client, uri, splits, metric_names(splits.task), columns)


def measure_drift(
    tracker: Tracker, splits: Splits, final: FinalModel, decision: Decision, data_dir: Path, threshold: float
) -> DataDrift:
    """Compare this version with its champion's training data; say so when there is none."""
    client, name = tracker.client, final.registered_name
    try:
        champion = champion_before(client, decision)
    except ExperimentInputError as exc:
        return DataDrift(final.run, UNAVAILABLE, str(exc), threshold)
    if champion is None:
        return DataDrift(
            final.run, NO_CHAMPION, f"{name} has no champion yet: nothing to compare against", threshold
        )
    if champion.version == final.registered_version:
        reason = f"this version is {name}'s champion v{champion.version}: nothing else to compare against"
        return DataDrift(final.run, NO_CHAMPION, reason, threshold, champion)
    try:
        reference = champion_training_data(client, champion, data_dir)
    except ExperimentInputError as exc:
        return DataDrift(final.run, UNAVAILABLE, str(exc), threshold, champion)
    s, target = splits.split, splits.spec.target
    current = pd.concat([s.X_train, s.X_test], ignore_index=True)
    y_current = pd.concat([s.y_train, s.y_test], ignore_index=True)
    ref_X = reference.drop(columns=[target]) if target in reference.columns else reference
    kind = "numeric" if splits.task == "regression" else "categorical"
    target_drift = {"column": target}
    if target in reference.columns:
        target_drift |= drift.column_drift(reference[target], y_current, kind)
    comparison, error = None, ""
    try:
        theirs = champion_metrics(champion, client, splits, list(ref_X.columns))
        comparison = pd.DataFrame(
            {"champion": theirs, "challenger": {k: final.metrics.get(k, np.nan) for k in theirs}}
        ).rename_axis("metric")
    except Exception as exc:  # a champion that cannot score this data: recorded, not fatal
        error = f"champion v{champion.version} cannot score this test split: {type(exc).__name__}: {exc}"[
            :500
        ]
    where = f"{champion.dataset}@{champion.dataset_version} (sha256 {champion.data_hash[:12]}…)"
    return DataDrift(
        final.run,
        COMPARED,
        f"compared with the training data of {name} champion v{champion.version}: {where}",
        threshold,
        champion,
        drift.schema_changes(ref_X, current),
        drift.feature_drift(ref_X, current),
        target_drift,
        comparison,
        error,
    )


def log_drift(tracker: Tracker, value: DataDrift) -> dict[str, bytes]:
    """Tags always; when compared, the table, schema, metrics, plot and champion comparison."""
    run_id, champion = value.run.run_id, value.champion
    tags = {"drift.status": value.status, "drift.reason": value.reason[:5000]}
    if champion is not None:
        tags |= {
            "drift.champion_version": champion.version,
            "drift.champion_dataset_version": champion.dataset_version,
            "drift.champion_data_hash": champion.data_hash,
        }
    tracker.set_tags(run_id, tags)
    if value.status != COMPARED:
        return {}
    tracker.log_bytes(run_id, TABLE_ARTIFACT, value.table.to_csv(index=False).encode())
    tracker.log_json(run_id, SCHEMA_ARTIFACT, {"schema": value.schema, "target": value.target})
    keys = metric_keys(list(value.table["feature"]))
    metrics = {keys[f]: float(p) for f, p in zip(value.table["feature"], value.table["psi"], strict=True)}
    metrics["drift.psi_threshold"] = value.threshold
    metrics["drift.features_above_threshold"] = float(len(value.above_threshold))
    if "psi" in value.target:
        metrics["drift_target.psi"] = value.target["psi"]
        metrics["drift_target.p_value"] = value.target["p_value"]
    if value.comparison is not None:
        metrics |= {f"champion.{m}": float(v) for m, v in value.comparison["champion"].items()}
        tracker.log_bytes(run_id, COMPARISON_ARTIFACT, value.comparison.to_csv().encode())
    elif value.champion_error:
        tracker.set_tags(run_id, {"drift.champion_error": value.champion_error})
    tracker.log_metrics(run_id, metrics)
    return {
        PLOT_ARTIFACT: tracker.log_figure(
            run_id, drift.plot_top_drift(value.table, value.threshold), PLOT_ARTIFACT
        )
    }
