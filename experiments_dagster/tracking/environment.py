"""Facts about the code and machine an experiment ran on: git, Python, OS, packages."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from experiments_dagster.core.paths import PROJECT_ROOT

# Distributions the logged model needs at load time. Each entry lists the distribution names
# that can provide the import (xgboost-cpu and xgboost both install `xgboost`); the first
# installed one is pinned. Looking them up by name costs microseconds, where
# importlib.metadata.packages_distributions() scans every installed file (~1.7 s here).
# skops loads the preprocessor, which every model has.
MODEL_DISTRIBUTIONS = (
    ("mlflow",),
    ("scikit-learn",),
    ("skops",),
    ("xgboost-cpu", "xgboost"),
    ("pandas",),
    ("numpy",),
    ("scipy",),
)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Commit, dirty flag and branch of the project's own repository (not of ``sys.argv[0]``)."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return {"commit": "unknown", "dirty": "unknown", "branch": "unknown"}
    porcelain = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": "unknown" if porcelain is None else str(bool(porcelain)).lower(),
        "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "unknown",
    }


def platform_facts() -> dict[str, str]:
    """Python and OS details."""
    return {
        "python.version": platform.python_version(),
        "python.implementation": platform.python_implementation(),
        "python.executable": sys.executable,
        "os.platform": platform.platform(),
        "os.system": platform.system(),
        "os.release": platform.release(),
        "os.machine": platform.machine(),
    }


def _name_version(dist: md.Distribution) -> tuple[str, str] | None:
    """Name and Version from the metadata's header block only.

    ``dist.metadata`` runs the email parser over the whole file (long READMEs included) and
    ``dist.version`` does it again: ~0.5 s over a venv, for two header lines.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    if fields.get("Name") and fields.get("Version"):
        return fields["Name"], fields["Version"]
    return None


@lru_cache(maxsize=1)
def installed_requirements() -> str:
    """``name==version`` for every installed distribution, sorted: the exact set."""
    pins = {"==".join(nv) for nv in map(_name_version, md.distributions()) if nv}
    return "\n".join(sorted(pins, key=str.lower)) + "\n"


@lru_cache(maxsize=1)
def model_requirements() -> tuple[str, ...]:
    """Pinned distributions that provide the model's imports (e.g. ``xgboost-cpu==3.2.0``)."""
    pins = []
    for candidates in MODEL_DISTRIBUTIONS:
        for dist in candidates:
            try:
                pins.append(f"{dist}=={md.version(dist)}")
                break
            except md.PackageNotFoundError:
                continue
    return tuple(sorted(pins, key=str.lower))
