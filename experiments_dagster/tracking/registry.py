"""Model Registry: register each final model as `challenger`; promote to `champion` on evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from experiments_dagster.ml.metrics import Predictions, task_metrics
from experiments_dagster.spec import DEFAULT_SEARCH_METRIC, LOWER_IS_BETTER
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster.tracking.store import Tracker, using_tracking_uri
from experiments_dagster.values import Splits

CHALLENGER, CHAMPION = "challenger", "champion"
PROMOTED_STAGE, ARCHIVED_STAGE = "production", "archived"


def register_challenger(tracker: Tracker, name: str, model_id: str, run_id: str, tags: dict[str, str]) -> str:
    """A new version of ``name`` from the logged model, aliased `challenger`; returns the version."""
    client = tracker.client
    try:
        client.create_registered_model(name, description="Registered by experiments_dagster.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with using_tracking_uri(tracker.tracking_uri):
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags,
                                              model_id=model_id)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


@dataclass(frozen=True)
class Decision:
    """Whether the challenger became champion, and the evidence."""

    promoted: bool
    reason: str
    model_name: str
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_score: float | None = None
    champion_score: float | None = None


def score_model(client: MlflowClient, uri: str, splits: Splits, metric: str) -> float:
    """The registered model's ``metric`` on this dataset version's test split (labels as text).

    The model is loaded only if its files match the sha256 recorded when it was logged."""
    from experiments_dagster.tracking.model_io import load_verified_model  # pyfunc: only when scoring

    # Scoring is the check; MLflow's environment warning scans every installed file (~1 s).
    model = load_verified_model(client, uri, suppress_warnings=True)
    X, y = splits.split.X_test, np.asarray(splits.split.y_test)
    if splits.task == "regression":
        preds = Predictions(np.asarray(model.predict(X), dtype=float), None, None)
        return task_metrics("regression", y, preds, names=(metric,))[metric]
    proba = model.predict(X, params={"predict_method": "predict_proba"})
    classes = np.asarray(proba.columns, dtype=str)
    labels = np.asarray(model.predict(X)).astype(str)
    preds = Predictions(labels, proba.to_numpy(), classes)
    positive = splits.spec.positive_class
    return task_metrics(splits.task, y.astype(str), preds, positive, (metric,))[metric]


def decide_promotion(tracker: Tracker, name: str, version: str, run_id: str, splits: Splits) -> Decision:
    """Promote `challenger` to `champion` only if its run is complete and it beats the champion.

    Both models are scored by the same code on the same test split (this dataset version's).
    The first complete model of a registered name becomes champion.
    """
    client = tracker.client
    metric = splits.spec.promotion_metric or DEFAULT_SEARCH_METRIC[splits.task]
    audit = Auditor(client, load_models=False).audit(run_id)
    if not audit.complete:
        missing = ", ".join(f"{f.kind} {f.name}" for f in audit.problems[:10])
        return Decision(False, f"challenger run is incomplete ({missing})", name, version, None, metric)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    with using_tracking_uri(tracker.tracking_uri):
        challenger_score = score_model(client, f"models:/{name}/{version}", splits, metric)
        if champion is None:
            return Decision(True, f"first complete model of {name}", name, version, None, metric, challenger_score)
        if str(champion.version) == version:
            return Decision(False, "already the champion", name, version, version, metric, challenger_score,
                            challenger_score)
        try:
            champion_score = score_model(client, f"models:/{name}/{champion.version}", splits, metric)
        except Exception as exc:  # e.g. the champion expects other columns
            return Decision(False, f"champion v{champion.version} cannot score this test split: {exc}"[:500],
                            name, version, str(champion.version), metric, challenger_score)
    lower = metric in LOWER_IS_BETTER
    better = challenger_score < champion_score if lower else challenger_score > champion_score
    verdict = "beats" if better else "does not beat"
    reason = (f"challenger {metric}={challenger_score:.6g} {verdict} champion v{champion.version} "
              f"{metric}={champion_score:.6g} on {splits.fingerprint.dataset}@{splits.fingerprint.version} test split")
    return Decision(better, reason, name, version, str(champion.version), metric, challenger_score, champion_score)


def apply_decision(tracker: Tracker, decision: Decision, run_id: str) -> None:
    """Record the decision on the version; on promotion move the alias and the `stage` tags."""
    client = tracker.client
    tags: dict[str, Any] = {"promotion.decision": "promoted" if decision.promoted else "not promoted",
                            "promotion.reason": decision.reason, "promotion.metric": decision.metric}
    for key, value in tags.items():
        client.set_model_version_tag(decision.model_name, decision.challenger_version, key, str(value))
    if not decision.promoted:
        return
    if decision.champion_version:
        client.set_model_version_tag(decision.model_name, decision.champion_version, "stage", ARCHIVED_STAGE)
    client.set_registered_model_alias(decision.model_name, CHAMPION, decision.challenger_version)
    client.set_model_version_tag(decision.model_name, decision.challenger_version, "stage", PROMOTED_STAGE)
    tracker.set_tags(run_id, {"stage": PROMOTED_STAGE, "registry.alias": CHAMPION})
