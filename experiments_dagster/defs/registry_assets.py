"""Champion/challenger promotion in the MLflow Model Registry."""

import time
import warnings
from typing import Any

import dagster as dg

from experiments_dagster.defs.partitions import CODE_VERSION, GROUP, dataset_versions
from experiments_dagster.defs.resources import Coordination, MlflowTracking
from experiments_dagster.experiment.registry import (
    BLOCKED,
    CHAMPION,
    PROMOTION_TAG,
    RECOVERY,
    Decision,
    apply_decision,
    decide_promotion,
    decision_label,
)
from experiments_dagster.experiment.values import FinalModel, Splits
from experiments_dagster.tracking.liveness import worker_id


# One promotion of a registered model at a time, so no two decide from the same champion:
# - in process: Dagster's `model_registry` pool (limit 1 in dagster.yaml) queues the steps;
# - on Celery, which ignores pools (open PRs dagster #30256, #32411): a PostgreSQL advisory
#   lock per registered model (locks.py) around reading the champion and moving the alias.
@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=dataset_versions,
    group_name=GROUP,
    kinds={"mlflow"},
    pool="model_registry",
)
def model_promotion(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    coordination: Coordination,
    final_model: FinalModel,
    splits: Splits,
    repro_manifest: dict[str, Any],
) -> dg.Output[Decision]:
    """Promote the challenger to `champion` if its log is complete and it beats the champion."""
    tracker = mlflow.tracker()
    lock = coordination.lock(f"promotion:{final_model.registered_name}")
    waited = lock.acquire()
    try:
        locked_at = time.time()
        decision = decide_promotion(
            tracker,
            final_model.registered_name,
            final_model.registered_version,
            final_model.run.run_id,
            splits,
        )
        apply_decision(tracker, decision, final_model.run.run_id)
        unlocked_at = time.time()
    finally:
        lock.release()
    label = decision_label(decision)
    line = f"{decision.model_name} v{decision.challenger_version}: {label}: {decision.reason}"
    if decision.blocked:
        # Visible on the run itself (its tags), not only in this step's log and the check below.
        context.instance.add_run_tags(context.run_id, {PROMOTION_TAG: BLOCKED})
        context.log.error(f"{line} {RECOVERY}")
    else:
        context.log.info(line)
    return dg.Output(
        decision,
        metadata={
            "decision": label,
            "worker": worker_id(),
            # The critical section, for anyone checking that promotions never overlapped.
            "lock": f"promotion:{final_model.registered_name}",
            "lock_wait_seconds": round(waited, 3),
            "lock_held_from": locked_at,
            "lock_held_until": unlocked_at,
            "reason": decision.reason,
            "registered_model": decision.model_name,
            "challenger_version": decision.challenger_version,
            "previous_champion_version": decision.champion_version or "none",
            "metric": decision.metric,
            "challenger_score": decision.challenger_score
            if decision.challenger_score is not None
            else float("nan"),
            "champion_score": decision.champion_score
            if decision.champion_score is not None
            else float("nan"),
            "baseline_score": decision.baseline_score
            if decision.baseline_score is not None
            else float("nan"),
            "mlflow_run_url": dg.MetadataValue.url(final_model.run.url),
        },
    )


def _promotion_check(fn, **kwargs: Any) -> dg.AssetChecksDefinition:
    """``fn`` as a check of each partition of ``model_promotion``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are "preview" in 1.13
        return dg.asset_check(asset=model_promotion, partitions_def=dataset_versions, **kwargs)(fn)


def champion_alias_matches_decision(mlflow: MlflowTracking, model_promotion: Decision) -> dg.AssetCheckResult:
    """Promoted: `champion` points at this version (or at a later version promoted since).
    Not promoted: it does not point at this version."""
    client = mlflow.tracker().client
    d = model_promotion
    try:
        current = client.get_model_version_by_alias(d.model_name, CHAMPION)
        champion = str(current.version)
    except Exception:  # no champion yet
        current, champion = None, None
    is_this = champion == d.challenger_version
    later = (
        current is not None
        and int(current.version) > int(d.challenger_version)
        and current.tags.get("promotion.decision") == "promoted"
    )
    ok = (is_this or later) if d.promoted else (not is_this or d.reason == "already the champion")
    return dg.AssetCheckResult(
        passed=ok,
        metadata={
            "champion_version": champion or "none",
            "challenger_version": model_promotion.challenger_version,
            "reason": model_promotion.reason,
        },
    )


champion_alias_matches_decision = _promotion_check(
    champion_alias_matches_decision,
    blocking=True,
    description="The champion alias agrees with the decision.",
)


def promotion_not_blocked(model_promotion: Decision) -> dg.AssetCheckResult:
    """Fails (ERROR) when the champion could not be loaded or scored: the challenger was
    never compared, and no later version can be promoted until the champion is repaired."""
    d = model_promotion
    return dg.AssetCheckResult(
        passed=not d.blocked,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{d.reason} {RECOVERY}" if d.blocked else None,
        metadata={
            "registered_model": d.model_name,
            "champion_version": d.champion_version or "none",
            "challenger_version": d.challenger_version,
            "reason": d.reason,
        },
    )


promotion_not_blocked = _promotion_check(
    promotion_not_blocked,
    description="The champion could be loaded and scored, so promotion was decided on scores.",
)
