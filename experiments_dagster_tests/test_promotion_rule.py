"""The promotion rule on plain numbers (no MLflow store): beats, does not beat, no champion,
blocked, ties, already the champion, and an incomplete run."""

from __future__ import annotations

import pytest

from experiments_dagster.experiment.promotion import (
    Decision,
    Evidence,
    champion_needed,
    incomplete_decision,
    promotion_rule,
)

WHERE = "on iris@v1 test split"


def evidence(**changes: object) -> Evidence:
    values: dict = dict(
        model_name="iris_model",
        challenger_version="3",
        metric="roc_auc",
        where=WHERE,
        challenger_score=0.9,
        baseline_score=0.5,
        baseline_name="DummyClassifier(strategy='prior')",
        champion_version="1",
        champion_score=0.8,
    )
    return Evidence(**{**values, **changes})


def test_a_challenger_that_beats_the_champion_is_promoted() -> None:
    e = evidence()
    assert champion_needed(e)
    assert promotion_rule(e) == Decision(
        promoted=True,
        reason=f"challenger roc_auc=0.9 beats champion v1 roc_auc=0.8 {WHERE}",
        model_name="iris_model",
        challenger_version="3",
        champion_version="1",
        metric="roc_auc",
        challenger_score=0.9,
        champion_score=0.8,
        baseline_score=0.5,
    )


def test_a_challenger_that_does_not_beat_the_champion_is_not_promoted() -> None:
    d = promotion_rule(evidence(challenger_score=0.7))
    assert not d.promoted and not d.blocked
    assert d.reason == f"challenger roc_auc=0.7 does not beat champion v1 roc_auc=0.8 {WHERE}"
    assert (d.champion_version, d.challenger_score, d.champion_score, d.baseline_score) == (
        "1",
        0.7,
        0.8,
        0.5,
    )


def test_a_tie_with_the_champion_does_not_beat_it() -> None:
    d = promotion_rule(evidence(challenger_score=0.8))
    assert not d.promoted
    assert d.reason == f"challenger roc_auc=0.8 does not beat champion v1 roc_auc=0.8 {WHERE}"


@pytest.mark.parametrize(("challenger", "promoted"), [(1.0, True), (2.0, False), (3.0, False)])
def test_lower_is_better_for_errors_and_a_tie_is_not_better(challenger: float, promoted: bool) -> None:
    e = evidence(metric="rmse", challenger_score=challenger, baseline_score=10.0, champion_score=2.0)
    assert promotion_rule(e).promoted is promoted


def test_without_a_champion_the_first_model_that_beats_the_baseline_is_promoted() -> None:
    e = evidence(champion_version=None, champion_score=None)
    assert not champion_needed(e)
    assert promotion_rule(e) == Decision(
        promoted=True,
        reason="first complete model of iris_model",
        model_name="iris_model",
        challenger_version="3",
        champion_version=None,
        metric="roc_auc",
        challenger_score=0.9,
        baseline_score=0.5,
    )


@pytest.mark.parametrize("champion", [None, "1"])
@pytest.mark.parametrize("score", [0.4, 0.5])  # below the baseline, and a tie with it
def test_a_challenger_that_does_not_beat_the_baseline_is_not_promoted(
    champion: str | None, score: float
) -> None:
    e = evidence(challenger_score=score, champion_version=champion, champion_score=None)
    assert not champion_needed(e)  # the champion is not even scored
    d = promotion_rule(e)
    assert not d.promoted and not d.blocked and d.champion_score is None
    assert d.champion_version == champion
    assert d.reason == (
        f"challenger roc_auc={score:.6g} does not beat the baseline DummyClassifier(strategy='prior') "
        f"roc_auc=0.5 {WHERE}"
    )


def test_a_champion_that_cannot_be_scored_blocks_promotion() -> None:
    e = evidence(champion_score=None, champion_error="sha256 mismatch " + "x" * 500)
    d = promotion_rule(e)
    assert not d.promoted and d.blocked
    assert d.reason == (
        "promotion blocked: champion v1 of iris_model cannot be loaded or score this test split: "
        + ("sha256 mismatch " + "x" * 500)[:400]
    )
    assert (d.champion_version, d.challenger_score, d.champion_score, d.baseline_score) == (
        "1",
        0.9,
        None,
        0.5,
    )


def test_the_champion_itself_is_not_promoted_again() -> None:
    e = evidence(challenger_version="1", champion_score=None)
    assert not champion_needed(e)
    d = promotion_rule(e)
    assert not d.promoted and d.reason == "already the champion"
    assert (d.champion_version, d.challenger_score, d.champion_score, d.baseline_score) == (
        "1",
        0.9,
        0.9,
        0.5,
    )


def test_an_incomplete_run_is_never_promoted() -> None:
    d = incomplete_decision("iris_model", "2", "roc_auc", "artifact manifest.json")
    assert d == Decision(
        promoted=False,
        reason="challenger run is incomplete (artifact manifest.json)",
        model_name="iris_model",
        challenger_version="2",
        champion_version=None,
        metric="roc_auc",
    )
