"""What ``reproduce`` takes from a run's ``manifest.json``: only what it verifies against the run.

The manifest is a file in the artifact store; the run's params and tags are in the tracking
store. Each field taken from the manifest (dataset, version, data sha256, resolved config,
seeds, git commit and dirty flag) must agree with the run's own record of it, and the commit
must be a full hex SHA: a manifest edited to name another dataset, config or code is refused
before anything is read or run. Where a rerun logs and registers (the experiment, the
registered model) is never taken from the manifest. Plain functions: no Dagster, no MLflow.
"""

from __future__ import annotations

import re
from typing import Any

from experiments_dagster.core.versioning import config_hash

FULL_SHA = re.compile(r"[0-9a-f]{40}")
SEEDS = ("split", "cv", "model", "numpy")


class ManifestError(ValueError):
    """The manifest lacks a field, has one of the wrong type, or disagrees with its run."""


def _field(manifest: dict[str, Any], section: str, key: str, kind: type = str) -> Any:
    part = manifest.get(section)
    value = part.get(key) if isinstance(part, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ManifestError(f"its `{section}.{key}` is missing or not a {kind.__name__}")
    return value


def taken_fields(manifest: Any) -> dict[str, Any]:
    """The fields reproduce uses, in the manifest's own layout; ManifestError if one is malformed."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"it holds a {type(manifest).__name__}, not a JSON object")
    packages = manifest.get("packages")
    if packages is not None and not (
        isinstance(packages, list) and all(isinstance(p, str) for p in packages)
    ):
        raise ManifestError("its `packages` is not a list of strings")
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError("its `spec` is missing or not an object")
    return {
        "dataset": {k: _field(manifest, "dataset", k) for k in ("dataset", "version", "sha256")},
        "spec": spec,
        "seeds": {k: _field(manifest, "seeds", k, int) for k in SEEDS},
        "code": {k: _field(manifest, "code", k) for k in ("git.commit", "git.dirty")},
        "packages": packages,
    }


def disagreements(taken: dict[str, Any], params: dict[str, str], tags: dict[str, str]) -> list[str]:
    """Each field of ``taken`` that its run records otherwise, as ``field (manifest X, run Y)``."""
    dataset, code, spec = taken["dataset"], taken["code"], taken["spec"]
    pairs = {
        "dataset.dataset": (dataset["dataset"], params.get("dataset.name")),
        "dataset.version": (dataset["version"], params.get("dataset.version")),
        "dataset.sha256": (dataset["sha256"], params.get("data.hash")),
        "spec (config.hash)": (config_hash(spec), tags.get("config.hash")),
        "spec.dataset": (spec.get("dataset"), params.get("dataset.name")),
        "spec.target": (spec.get("target"), params.get("target")),
        "code.git.commit": (code["git.commit"], tags.get("git.commit")),
        "code.git.dirty": (code["git.dirty"], tags.get("git.dirty")),
        **{f"seeds.{k}": (str(taken["seeds"][k]), params.get(f"seed.{k}")) for k in SEEDS},
    }
    out = [
        f"{name} (manifest {str(mine)[:80]!r}, run {str(theirs)[:80]!r})"
        for name, (mine, theirs) in pairs.items()
        if mine != theirs
    ]
    commit = code["git.commit"]
    if not FULL_SHA.fullmatch(commit):
        out.append(f"code.git.commit ({commit[:80]!r} is not a full 40-hex-digit commit SHA)")
    return out
