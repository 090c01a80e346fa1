"""The promotion rule, as a pure function of the evidence: does the challenger become `champion`?

No MLflow here: ``registry.decide_promotion`` gathers the evidence (the audit, the scores on the
test split, the champion) and applies the rule; the rule can be tested on plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

from experiments_dagster.core.spec import LOWER_IS_BETTER

BLOCKED_ERROR_CHARS = 400  # how much of the champion's scoring error a blocked decision quotes


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
    baseline_score: float | None = None
    # The champion could not be loaded or scored: no decision on scores was possible, and none
    # will be until someone repairs the champion (RECOVERY says how).
    blocked: bool = False


@dataclass(frozen=True)
class Evidence:
    """What the rule decides on: a complete challenger's score, the baseline's and the champion's."""

    model_name: str
    challenger_version: str
    metric: str
    where: str  # "on <dataset>@<version> test split": where every score was measured
    challenger_score: float
    baseline_score: float
    baseline_name: str  # the trivial model that scored ``baseline_score``
    champion_version: str | None = None  # None: the registered model has no champion yet
    champion_score: float | None = None  # set when ``champion_needed``: the champion's score...
    champion_error: str | None = None  # ...or why it could not be loaded or scored


def beats(score: float, other: float, metric: str) -> bool:
    """Strictly better on ``metric`` (lower for errors and losses, higher otherwise)."""
    return score < other if metric in LOWER_IS_BETTER else score > other


def champion_needed(e: Evidence) -> bool:
    """Whether the rule compares with the champion's score: there is a champion, it is another
    version, and the challenger beats the baseline."""
    return (
        e.champion_version is not None
        and e.champion_version != e.challenger_version
        and beats(e.challenger_score, e.baseline_score, e.metric)
    )


def incomplete_decision(name: str, version: str, metric: str, missing: str) -> Decision:
    """A challenger whose run's log is incomplete is never promoted, whatever its score."""
    reason = f"challenger run is incomplete ({missing})"
    return Decision(
        promoted=False,
        reason=reason,
        model_name=name,
        challenger_version=version,
        champion_version=None,
        metric=metric,
    )


def promotion_rule(e: Evidence) -> Decision:
    """Promote a complete challenger only if it strictly beats the baseline and the champion (a tie
    does not beat); the first one that beats the baseline becomes champion; a champion that
    cannot be scored blocks promotion."""
    known = dict(model_name=e.model_name, challenger_version=e.challenger_version, metric=e.metric)
    scored = dict(known, challenger_score=e.challenger_score, baseline_score=e.baseline_score)
    if e.champion_version == e.challenger_version:
        reason = "already the champion"
        return Decision(
            promoted=False,
            reason=reason,
            champion_version=e.challenger_version,
            champion_score=e.challenger_score,
            **scored,
        )
    if not beats(e.challenger_score, e.baseline_score, e.metric):
        reason = (
            f"challenger {e.metric}={e.challenger_score:.6g} does not beat the baseline {e.baseline_name} "
            f"{e.metric}={e.baseline_score:.6g} {e.where}"
        )
        return Decision(promoted=False, reason=reason, champion_version=e.champion_version, **scored)
    if e.champion_version is None:
        reason = f"first complete model of {e.model_name}"
        return Decision(promoted=True, reason=reason, champion_version=None, **scored)
    if e.champion_error is not None or e.champion_score is None:
        error = (e.champion_error or "not scored")[:BLOCKED_ERROR_CHARS]
        reason = (
            f"promotion blocked: champion v{e.champion_version} of {e.model_name} cannot be loaded or "
            f"score this test split: {error}"
        )
        return Decision(
            promoted=False, reason=reason, champion_version=e.champion_version, blocked=True, **scored
        )
    better = beats(e.challenger_score, e.champion_score, e.metric)
    verdict = "beats" if better else "does not beat"
    reason = (
        f"challenger {e.metric}={e.challenger_score:.6g} {verdict} champion v{e.champion_version} "
        f"{e.metric}={e.champion_score:.6g} {e.where}"
    )
    return Decision(
        promoted=better,
        reason=reason,
        champion_version=e.champion_version,
        champion_score=e.champion_score,
        **scored,
    )
