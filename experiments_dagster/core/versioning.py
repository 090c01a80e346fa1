"""What makes an experiment attempt what it is: its data hash, resolved config and code version.

An experiment is up to date when a complete parent run exists with the same three; their
combination (the experiment key) is the `splits` asset's Dagster data version and a tag of the
parent run. The code version is the assets' Dagster ``code_version`` too, so the Dagster UI
shows versions trained by other code as out of date in its own way.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The tiers whose code decides what is trained and what is logged; the CLI (cli/) and the
# development stack (devstack/, outside the package) are left out, so editing them does not make
# every experiment out of date.
CODE_TIERS = ("core", "ml", "tracking", "experiment", "defs")
# Settings that steer when an experiment trains, not what it trains.
NOT_CONFIG = frozenset({"retrain_on_change"})


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (12 hex digits) of the contents of the code tiers' source files.

    The files' digests are hashed in sorted order, without their paths: moving or renaming a file
    leaves the version as it was; changing any line of it (its imports included) changes it.
    """
    files = (path for tier in CODE_TIERS for path in (PACKAGE_ROOT / tier).rglob("*.py"))
    digests = sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in files)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:12]


def config_hash(spec: dict[str, Any]) -> str:
    """sha256 (12 hex digits) of a resolved experiment config (``ExperimentSpec.model_dump(mode="json")``)."""
    relevant = {k: v for k, v in spec.items() if k not in NOT_CONFIG}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def experiment_key(data_sha256: str, config: str, code: str) -> str:
    """The identity of an attempt's inputs: data hash, config hash and code version in one string."""
    return f"{data_sha256[:12]}-{config}-{code}"


def expected_identity(dataset: str, version_path: Path, data_dir: Path) -> tuple[str, str]:
    """(MLflow experiment name, experiment key) a run of this version would have now, from
    experiment.yaml (no run-config overrides, as `experiments-dagster run` trains it)."""
    from experiments_dagster.core.catalog import dataset_dir
    from experiments_dagster.core.dataset import hash_file
    from experiments_dagster.core.spec import resolve_spec

    spec = resolve_spec(dataset, dataset_dir(data_dir, dataset), {})
    key = experiment_key(
        hash_file(version_path).sha256, config_hash(spec.model_dump(mode="json")), code_version()
    )
    return spec.experiment, key
