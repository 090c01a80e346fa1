"""Params and tags that describe an experiment attempt: dataset, split, seeds, code, machine."""

from __future__ import annotations

import getpass
from typing import Any

from sklearn.base import BaseEstimator

from experiments_dagster.core import settings
from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.core.versioning import code_version, config_hash, experiment_key
from experiments_dagster.experiment.values import DataFingerprint
from experiments_dagster.ml.training import TrainTestSplit
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.environment import git_state, platform_facts
from experiments_dagster.tracking.liveness import process_tags

SOURCE_NAME = "experiments_dagster"


def process_identity(pid: int | None = None) -> dict[str, str]:
    """Host, pid, the pid's start time and the ``worker`` tag (``<hostname>:<pid>``)."""
    return process_tags(pid)


def dagster_tags(run_id: str, partition_key: str, asset: str) -> dict[str, str]:
    """Tags tying an MLflow run to the Dagster run, partition, asset and process that opened it."""
    out = {
        tags.DAGSTER_RUN_ID: run_id,
        tags.DAGSTER_PARTITION_KEY: partition_key,
        tags.DAGSTER_ASSET_KEY: asset,
        **process_identity(),
    }
    webserver = settings.dagster_url()
    if webserver:  # a link back from the MLflow UI to the Dagster run
        out[tags.DAGSTER_RUN_URL] = f"{webserver}/runs/{run_id}"
    return out


def parent_run_tags(spec: ExperimentSpec, task: str, fp: DataFingerprint) -> dict[str, str]:
    """Tags of a parent run: user tags, version/stage, dataset identity, git, Python and OS."""
    git = git_state()
    config = config_hash(spec.model_dump(mode="json"))
    return {
        **spec.tags,
        tags.CODE_VERSION: code_version(),
        tags.CONFIG_HASH: config,
        tags.EXPERIMENT_KEY: experiment_key(fp.sha256, config, code_version()),
        "version": spec.version,
        "stage": spec.stage,
        "task": task,
        "dataset.name": fp.dataset,
        "dataset.version": fp.version,
        "data.hash": fp.sha256,
        "git.commit": git["commit"],
        "git.dirty": git["dirty"],
        "git.branch": git["branch"],
        "mlflow.source.git.commit": git["commit"],
        "mlflow.source.git.branch": git["branch"],
        "mlflow.source.name": SOURCE_NAME,
        "mlflow.source.type": "JOB",
        "mlflow.user": getpass.getuser(),
        **platform_facts(),
    }


def split_params(
    spec: ExperimentSpec, task: str, fp: DataFingerprint, split: TrainTestSplit, rows_dropped: int
) -> dict[str, Any]:
    """Dataset facts, split sizes, seeds and evaluation settings, as params."""
    seeds = spec.resolved_seeds
    params: dict[str, Any] = {
        "dataset.name": fp.dataset,
        "dataset.version": fp.version,
        "data.hash": fp.sha256,
        "dataset.size_bytes": fp.size_bytes,
        "dataset.rows": fp.rows,
        "dataset.columns": fp.columns,
        "dataset.rows_dropped_missing_target": rows_dropped,
        "target": spec.target,
        "task": task,
        "split.test_size": spec.test_size,
        "split.train_rows": len(split.y_train),
        "split.test_rows": len(split.y_test),
        "split.stratified": task != "regression",
        "cv.folds": spec.cv_folds,
        "seed.split": seeds.split,
        "seed.cv": seeds.cv,
        "seed.model": seeds.model,
        "seed.numpy": seeds.numpy,
    }
    if task == "binary":
        params |= {
            "thresholds": ",".join(f"{t:g}" for t in spec.thresholds),
            "positive_class": spec.positive_class
            if spec.positive_class is not None
            else "(last sorted class)",
            **{f"business.{k}_value_usd": v for k, v in spec.business_values.model_dump().items()},
        }
    return params


def hyperparameters(estimator: BaseEstimator) -> dict[str, Any]:
    """Every hyperparameter of the estimator: its full ``get_params``, not only configured ones."""
    return {k: v for k, v in estimator.get_params(deep=True).items() if not isinstance(v, BaseEstimator)}
