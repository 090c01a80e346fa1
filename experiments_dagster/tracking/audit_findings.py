"""What the audit finds on a run, item by item, and the table it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["present", "missing", "malformed", "n/a"]


@dataclass(frozen=True)
class Finding:
    """One item of the standard, as found on a run."""

    kind: str
    name: str
    asset: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("present", "n/a")


@dataclass
class RunAudit:
    """Every finding for one run; complete when nothing is missing or malformed."""

    run_id: str
    run_name: str
    task: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "task": self.task,
            "complete": self.complete,
            "findings": [f.__dict__ for f in self.findings],
        }


def format_audit(audit: RunAudit) -> str:
    """A plain-text table of one run's findings."""
    verdict = "COMPLETE" if audit.complete else f"INCOMPLETE ({len(audit.problems)} problems)"
    lines = [f"run {audit.run_id} ({audit.run_name}, {audit.task}): {verdict}"]
    width = max((len(f"{f.kind} {f.name}") for f in audit.findings), default=10)
    for f in audit.findings:
        lines.append(f"  {f.kind + ' ' + f.name:<{width}}  {f.status:<9}  {f.detail}".rstrip())
    return "\n".join(lines)
