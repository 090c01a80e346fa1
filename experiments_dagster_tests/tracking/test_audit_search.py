"""The audit's search item: one nested run per trial, each with its state and the params it drew."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
from mlflow import MlflowClient

from experiments_dagster.experiment.search import HISTORY_PLOT, TRIALS_TABLE, log_trial
from experiments_dagster.experiment.values import RunRef
from experiments_dagster.ml.search_study import TrialResult
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster.tracking.store import Tracker

SPACE = {"max_depth": {"type": "int", "low": 2, "high": 5}}


def trial(number: int, state: str, params: dict) -> TrialResult:
    score = 0.9 if state == "COMPLETE" else None
    return TrialResult(
        number=number,
        params=params,
        state=state,
        score=score,
        fold_scores=[0.9] if score else [],
        slot=0,
        error="" if state == "COMPLETE" else "stale: no heartbeat from its worker",
        started_ms=1,
        ended_ms=2,
    )


def search_finding(tracker: Tracker, trials: list[TrialResult]) -> tuple[str, str]:
    exp = tracker.experiment_id("audit_search")
    parent_id = tracker.start_run(exp, "parent", {"dagster.run_id": "d1"})
    parent = RunRef(run_id=parent_id, experiment_id=exp, url="")
    for t in trials:
        log_trial(tracker, parent, {"dagster.run_id": "d1"}, "f1_macro", t)
    tracker.log_params(
        parent_id,
        {"search.enabled": "true", "search.space": json.dumps(SPACE), "search.trials_run": len(trials)},
    )
    tracker.log_params(parent_id, {"best.max_depth": 3})
    tracker.log_metrics(parent_id, {"best_score": 0.9})
    tracker.log_bytes(parent_id, TRIALS_TABLE, b"trial\n0\n")
    tracker.log_figure(parent_id, plt.figure(), HISTORY_PLOT)
    audit = Auditor(MlflowClient(tracker.tracking_uri), load_models=False).audit(parent_id, {"search_trials"})
    (found,) = [f for f in audit.findings if f.kind == "search"]
    return found.status, found.detail


def test_a_failed_trial_killed_before_drawing_its_params_is_complete(tracker: Tracker):
    trials = [trial(0, "COMPLETE", {"max_depth": 3}), trial(1, "FAIL", {})]
    assert search_finding(tracker, trials) == ("present", "2 trials")


def test_a_completed_trial_without_its_params_is_reported(tracker: Tracker):
    trials = [trial(0, "COMPLETE", {"max_depth": 3}), trial(1, "COMPLETE", {})]
    status, detail = search_finding(tracker, trials)
    assert status == "missing" and "trial-1 lacks state or params ['max_depth']" in detail
