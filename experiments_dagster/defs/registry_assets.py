"""Champion/challenger promotion in the MLflow Model Registry."""

from typing import Any

import dagster as dg

from experiments_dagster.defs.partitions import dataset_versions
from experiments_dagster.defs.resources import MlflowTracking
from experiments_dagster.tracking.registry import CHAMPION, Decision, apply_decision, decide_promotion
from experiments_dagster.values import FinalModel, Splits

GROUP = "experiment"


@dg.asset(partitions_def=dataset_versions, group_name=GROUP, kinds={"mlflow"})
def model_promotion(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    final_model: FinalModel,
    splits: Splits,
    repro_manifest: dict[str, Any],
) -> dg.Output[Decision]:
    """Promote the challenger to `champion` if its log is complete and it beats the champion."""
    tracker = mlflow.tracker()
    decision = decide_promotion(tracker, final_model.registered_name, final_model.registered_version,
                                final_model.run.run_id, splits)
    apply_decision(tracker, decision, final_model.run.run_id)
    context.log.info(f"{decision.model_name} v{decision.challenger_version}: "
                     f"{'promoted' if decision.promoted else 'not promoted'}: {decision.reason}")
    return dg.Output(decision, metadata={
        "decision": "promoted" if decision.promoted else "not promoted",
        "reason": decision.reason,
        "registered_model": decision.model_name,
        "challenger_version": decision.challenger_version,
        "previous_champion_version": decision.champion_version or "none",
        "metric": decision.metric,
        "challenger_score": decision.challenger_score if decision.challenger_score is not None else float("nan"),
        "champion_score": decision.champion_score if decision.champion_score is not None else float("nan"),
        "mlflow_run_url": dg.MetadataValue.url(final_model.run.url),
    })


@dg.asset_check(asset=model_promotion, blocking=True, description="The champion alias agrees with the decision.")
def champion_alias_matches_decision(mlflow: MlflowTracking, model_promotion: Decision) -> dg.AssetCheckResult:
    """Promoted: `champion` points at this version. Not promoted: it does not."""
    client = mlflow.tracker().client
    try:
        champion = str(client.get_model_version_by_alias(model_promotion.model_name, CHAMPION).version)
    except Exception:  # no champion yet
        champion = None
    is_this = champion == model_promotion.challenger_version
    ok = is_this if model_promotion.promoted else (not is_this or model_promotion.reason == "already the champion")
    return dg.AssetCheckResult(passed=ok, metadata={"champion_version": champion or "none",
                                                    "challenger_version": model_promotion.challenger_version,
                                                    "reason": model_promotion.reason})
