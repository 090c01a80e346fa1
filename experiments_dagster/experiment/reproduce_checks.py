"""Checks before reproducing a run from its manifest, and the param/metric comparison after.

Plain functions over the manifest (a dict), files and git: no Dagster, no MLflow.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments_dagster.core.catalog import version_file
from experiments_dagster.core.dataset import hash_file
from experiments_dagster.core.errors import ExperimentInputError

# Metrics equal within this are "within tolerance": float noise of a different summation order
# (e.g. another BLAS build), never a model that learned something else.
REL_TOLERANCE = 1e-9
ABS_TOLERANCE = 1e-12
# Wall-clock measurements differ on every run; they are listed but not compared.
TIMING_SUFFIX = "_seconds"
# Logged by the promotion step, which a reproduction leaves out (it never moves the champion).
PROMOTION_PREFIX = "baseline_"

IDENTICAL, WITHIN, DIFFERENT = "identical", "within tolerance", "different"
TIMING, PROMOTION = "timing (not compared)", "promotion (not rerun)"


@dataclass(frozen=True)
class Finding:
    """One result of a check: ``blocking`` ones stop the reproduction (exit 2)."""

    check: str  # data, commit, packages, worktree, config
    blocking: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    """One param or metric of the original run next to the rerun's."""

    kind: str  # param or metric
    name: str
    original: str
    rerun: str
    result: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_data(manifest: dict[str, Any], data_dir: Path) -> list[Finding]:
    """The version file is still there with the logged sha256 (else a blocking finding)."""
    logged = manifest["dataset"]
    key = f"{logged['dataset']}/{logged['version']}"
    where = (
        f"The original bytes were read from {logged['path']} (the run's dataset source, sha256 "
        f"{logged['sha256']}); restore them from there, a backup or the data's version control"
    )
    try:
        found = version_file(data_dir, key)
    except ExperimentInputError as exc:
        return [Finding("data", True, f"The data of {key} is not available: {exc} {where}.")]
    now = hash_file(found.path).sha256
    if now != logged["sha256"]:
        return [
            Finding(
                "data",
                True,
                f"{found.path} changed since the run: sha256 logged {logged['sha256']}, now {now}. "
                f"{where}, or train the new data as a new version file.",
            )
        ]
    return []


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git -C repo args`` (not raising; ``returncode`` says how it went)."""
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)


def check_commit(manifest: dict[str, Any], repo: Path, at_commit: bool) -> list[Finding]:
    """The logged commit exists in ``repo`` (blocking); another HEAD or a dirty tree are warnings."""
    code = manifest.get("code", {})
    commit = code.get("git.commit", "unknown")
    if commit == "unknown" or git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return [
            Finding(
                "commit",
                True,
                f"Commit {commit} of the run is not in the repository {repo}. Fetch it (git fetch "
                "--all) or reproduce from a clone that has it.",
            )
        ]
    out: list[Finding] = []
    if code.get("git.dirty") == "true":
        out.append(
            Finding(
                "worktree",
                False,
                f"The run was trained from a dirty working tree at {commit}: its uncommitted changes "
                "are not in any commit and cannot be restored.",
            )
        )
    if at_commit:
        return out
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    if head != commit:
        out.append(
            Finding(
                "worktree",
                False,
                f"The working tree {repo} is at {head}, the run was trained at {commit}: the rerun uses "
                "this checkout's code. Pass --at-commit to run the logged commit's code.",
            )
        )
    if git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip():
        out.append(
            Finding(
                "worktree", False, f"The working tree {repo} has uncommitted changes; the rerun uses them."
            )
        )
    return out


def parse_requirements(text: str) -> dict[str, str]:
    """``name==version`` lines as {normalized name: version}."""
    out = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            out[name.lower().replace("_", "-")] = version
    return out


def check_packages(logged: str, installed: str, strict: bool) -> list[Finding]:
    """Each package whose installed version differs from the logged one (``strict``: blocking)."""
    was, now = parse_requirements(logged), parse_requirements(installed)
    diffs = [
        f"{name} logged {was.get(name, 'not installed')}, installed {now.get(name, 'not installed')}"
        for name in sorted(was.keys() | now.keys())
        if was.get(name) != now.get(name)
    ]
    if not diffs:
        return []
    fix = "" if strict else " (--strict stops on this)"
    return [Finding("packages", strict, f"Package versions differ{fix}: {'; '.join(diffs)}.")]


def check_config(logged: dict[str, Any], current: dict[str, Any] | None, where: Path) -> list[Finding]:
    """A warning when experiment.yaml no longer resolves to the logged config (the rerun uses the logged one)."""
    if current is None or current == logged:
        return []
    changed = sorted(k for k in logged.keys() | current.keys() if logged.get(k) != current.get(k))
    return [
        Finding(
            "config",
            False,
            f"{where} now differs from the run's config in {', '.join(changed)}; the rerun uses the logged config.",
        )
    ]


def _number(value: float | None) -> str:
    return "(missing)" if value is None else repr(value)


def compare_metric(name: str, a: float | None, b: float | None) -> Row:
    """Identical, within ``REL_TOLERANCE``/``ABS_TOLERANCE`` or different; timings and the
    promotion's baseline (not rerun) are listed but not compared."""
    if name.endswith(TIMING_SUFFIX):
        result = TIMING
    elif name.startswith(PROMOTION_PREFIX) and b is None:
        result = PROMOTION
    elif a is None or b is None:
        result = DIFFERENT
    elif a == b or (math.isnan(a) and math.isnan(b)):
        result = IDENTICAL
    elif math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE):
        result = WITHIN
    else:
        result = DIFFERENT
    return Row("metric", name, _number(a), _number(b), result)


def compare(
    params: tuple[dict[str, str], dict[str, str]], metrics: tuple[dict[str, float], dict[str, float]]
) -> list[Row]:
    """Every param (text, compared exactly) and metric of either run, original first."""
    (pa, pb), (ma, mb) = params, metrics
    rows = [
        Row(
            "param",
            k,
            pa.get(k, "(missing)"),
            pb.get(k, "(missing)"),
            IDENTICAL if pa.get(k) == pb.get(k) else DIFFERENT,
        )
        for k in sorted(pa.keys() | pb.keys())
    ]
    return rows + [compare_metric(k, ma.get(k), mb.get(k)) for k in sorted(ma.keys() | mb.keys())]


def verdict(rows: list[Row]) -> str:
    """``different`` if any row differs, else ``within tolerance`` if any is, else ``identical``."""
    results = {r.result for r in rows}
    return DIFFERENT if DIFFERENT in results else WITHIN if WITHIN in results else IDENTICAL


def format_table(rows: list[Row]) -> str:
    """The comparison as an aligned text table."""
    head = ("kind", "name", "original", "rerun", "result")
    table = [head, *[(r.kind, r.name, r.original, r.rerun, r.result) for r in rows]]
    widths = [min(max(len(str(row[i])) for row in table), 40) for i in range(4)]
    return "\n".join(
        "  ".join(f"{str(v):<{w}}" for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in table
    )
