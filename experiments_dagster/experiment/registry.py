"""Model Registry: register each final model as `challenger`; promote to `champion` on evidence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.dummy import DummyClassifier, DummyRegressor

from experiments_dagster.core.spec import DEFAULT_SEARCH_METRIC
from experiments_dagster.experiment.promotion import (
    Decision,
    Evidence,
    champion_needed,
    incomplete_decision,
    promotion_rule,
)
from experiments_dagster.experiment.values import Splits
from experiments_dagster.ml.metrics import Predictions, task_metrics
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster.tracking.store import Tracker
from experiments_dagster.tracking.tags import MODEL_ID

CHALLENGER, CHAMPION = "challenger", "champion"
PROMOTED_STAGE, ARCHIVED_STAGE = "production", "archived"
# The Dagster run tag set when the champion could not be scored (`experiments-dagster run` reads it).
PROMOTION_TAG, BLOCKED = "experiments/promotion", "blocked"


def register_challenger(tracker: Tracker, name: str, model_id: str, run_id: str, tags: dict[str, str]) -> str:
    """A new version of ``name`` from the logged model, aliased `challenger`; returns the version."""
    client = tracker.client
    try:
        client.create_registered_model(name, description="Registered by experiments_dagster.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The logged model's own location as source, and run_id given: MLflow's registry store would
    # otherwise resolve ``models:/<id>`` through the process-global tracking URI, not this client's.
    source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(
        name, source=source, run_id=run_id, model_id=model_id, tags={**tags, MODEL_ID: model_id}
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


RECOVERY = (
    "Promotion stays blocked until the champion can be scored. Check it with `experiments-dagster "
    "audit`; if its files were changed, re-materialize final_model of its version (a new "
    "registered version) or move the `champion` alias by hand to a version that loads "
    "(MlflowClient().set_registered_model_alias(name, 'champion', version)); see the "
    "documentation's 'Model Registry and promotion'."
)


def score_model(client: MlflowClient, uri: str, splits: Splits, metric: str) -> float:
    """The registered model's ``metric`` on this dataset version's test split (labels as text)."""
    return model_metrics(client, uri, splits, (metric,))[metric]


def model_metrics(
    client: MlflowClient,
    uri: str,
    splits: Splits,
    names: tuple[str, ...],
    columns: list[str] | None = None,
) -> dict[str, float]:
    """A logged model's ``names`` metrics on this dataset version's test split (labels as text).

    ``columns``: the frame the model gets (columns this version lacks are missing values, its
    imputer's business). The model is loaded only if its files match the sha256 recorded when
    it was logged and its loader is one of ``model_gate``'s fixed table (a champion is a record:
    whoever can register a version chose what loading it runs)."""
    import tempfile

    from experiments_dagster.tracking.model_gate import load_gated_model

    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_gated_model(client, uri, Path(tmp) / "model", ours=True)
    X, y = splits.split.X_test, np.asarray(splits.split.y_test)
    if columns is not None:
        X = X.reindex(columns=columns)
    if splits.task == "regression":
        preds = Predictions(np.asarray(model.predict(X), dtype=float), None, None)
        return task_metrics("regression", y, preds, names=names)
    proba = model.predict(X, params={"predict_method": "predict_proba"})
    classes = np.asarray(proba.columns, dtype=str)
    labels = np.asarray(model.predict(X)).astype(str)
    preds = Predictions(labels, proba.to_numpy(), classes)
    return task_metrics(splits.task, y.astype(str), preds, splits.spec.positive_class, names)


def baseline_score(splits: Splits, metric: str) -> tuple[float, str]:
    """(``metric`` of a trivial model fitted on the train split and scored on the test split, its name).

    DummyClassifier(strategy="prior") answers the most frequent class with the class shares as
    probabilities (ROC AUC 0.5); DummyRegressor(strategy="mean") answers the train mean.
    """
    s = splits.split
    if splits.task == "regression":
        model = DummyRegressor(strategy="mean").fit(s.X_train, np.asarray(s.y_train, dtype=float))
        preds = Predictions(np.asarray(model.predict(s.X_test), dtype=float), None, None)
        score = task_metrics("regression", np.asarray(s.y_test), preds, names=(metric,))[metric]
        return score, "DummyRegressor(strategy='mean')"
    model = DummyClassifier(strategy="prior").fit(s.X_train, np.asarray(s.y_train).astype(str))
    preds = Predictions(model.predict(s.X_test), model.predict_proba(s.X_test), model.classes_)
    y = np.asarray(s.y_test).astype(str)
    score = task_metrics(splits.task, y, preds, splits.spec.positive_class, (metric,))[metric]
    return score, "DummyClassifier(strategy='prior')"


def decide_promotion(tracker: Tracker, name: str, version: str, run_id: str, splits: Splits) -> Decision:
    """Promote `challenger` to `champion` only if its run is complete and it beats both a trivial
    baseline and the champion (the rule: ``promotion.promotion_rule``).

    All are scored by the same code on the same test split (this dataset version's); the
    baseline's score is logged on the run as ``baseline_<metric>``. The first complete model of a
    registered name that beats the baseline becomes champion.
    """
    client = tracker.client
    metric = splits.spec.promotion_metric or DEFAULT_SEARCH_METRIC[splits.task]
    audit = Auditor(client, load_models=False).audit(run_id)
    if not audit.complete:
        missing = ", ".join(f"{f.kind} {f.name}" for f in audit.problems[:10])
        return incomplete_decision(name, version, metric, missing)
    evidence = gather_evidence(tracker, name, version, run_id, splits, metric)
    if champion_needed(evidence):
        evidence = score_champion(client, evidence, splits)
    return promotion_rule(evidence)


def gather_evidence(
    tracker: Tracker, name: str, version: str, run_id: str, splits: Splits, metric: str
) -> Evidence:
    """The champion's version, the baseline's score (logged on the run) and the challenger's."""
    client = tracker.client
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    where = f"on {splits.fingerprint.dataset}@{splits.fingerprint.version} test split"
    baseline, baseline_name = baseline_score(splits, metric)
    tracker.log_metrics(run_id, {f"baseline_{metric}": baseline})
    return Evidence(
        model_name=name,
        challenger_version=version,
        metric=metric,
        where=where,
        challenger_score=score_model(client, f"models:/{name}/{version}", splits, metric),
        baseline_score=baseline,
        baseline_name=baseline_name,
        champion_version=None if champion is None else str(champion.version),
    )


def score_champion(client: MlflowClient, evidence: Evidence, splits: Splits) -> Evidence:
    """The evidence with the champion's score, or with why it could not be loaded or scored."""
    uri = f"models:/{evidence.model_name}/{evidence.champion_version}"
    try:
        return replace(evidence, champion_score=score_model(client, uri, splits, evidence.metric))
    except Exception as exc:  # files changed or missing, other columns: promotion is blocked
        return replace(evidence, champion_error=str(exc))


def decision_label(decision: Decision) -> str:
    """``promoted``, ``not promoted`` or ``blocked`` (the champion could not be scored)."""
    return "promoted" if decision.promoted else "blocked" if decision.blocked else "not promoted"


def apply_decision(tracker: Tracker, decision: Decision, run_id: str) -> None:
    """Record the decision on the version; on promotion move the alias and the `stage` tags."""
    client = tracker.client
    tags: dict[str, Any] = {
        "promotion.decision": decision_label(decision),
        "promotion.reason": decision.reason,
        "promotion.metric": decision.metric,
    }
    if decision.baseline_score is not None:
        tags["promotion.baseline_score"] = f"{decision.baseline_score:.6g}"
    for key, value in tags.items():
        client.set_model_version_tag(decision.model_name, decision.challenger_version, key, str(value))
    if not decision.promoted:
        return
    if decision.champion_version:
        client.set_model_version_tag(decision.model_name, decision.champion_version, "stage", ARCHIVED_STAGE)
    client.set_registered_model_alias(decision.model_name, CHAMPION, decision.challenger_version)
    client.set_model_version_tag(decision.model_name, decision.challenger_version, "stage", PROMOTED_STAGE)
    tracker.set_tags(run_id, {"stage": PROMOTED_STAGE, "registry.alias": CHAMPION})
