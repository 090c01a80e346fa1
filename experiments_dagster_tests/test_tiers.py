"""The tiers' import contract (pyproject.toml, [tool.importlinter]) holds, and fails on a scratch
upward import or a Dagster import below defs/: run on a copy of the package, so the check is real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TIERS = ("core", "ml", "tracking", "experiment", "defs", "cli")


def lint_copy(tmp_path: Path, scratch: dict[str, str]) -> subprocess.CompletedProcess:
    """`lint-imports` on a copy of the package with ``scratch`` lines appended to its files."""
    shutil.copytree(ROOT / "experiments_dagster", tmp_path / "experiments_dagster")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for relative, line in scratch.items():
        with open(tmp_path / "experiments_dagster" / relative, "a") as file:
            file.write(f"\n{line}\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tmp_path / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_module_is_in_a_tier_or_the_public_face():
    loose = sorted(p.name for p in (ROOT / "experiments_dagster").glob("*.py"))
    assert loose == ["__init__.py", "checks.py"]  # the public face: the package and the old path
    folders = sorted(
        p.name for p in (ROOT / "experiments_dagster").iterdir() if p.is_dir() and p.name != "__pycache__"
    )
    assert folders == sorted(TIERS)
    for tier in TIERS:  # each tier's one-line rule is its package docstring
        doc = (ROOT / "experiments_dagster" / tier / "__init__.py").read_text()
        assert doc.startswith(f'"""{tier}: ') and " Imports " in doc.splitlines()[0], doc


def test_the_contract_holds_on_the_package_as_it_is(tmp_path: Path):
    result = lint_copy(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("scratch", "broken", "named"),
    [
        (
            {"core/errors.py": "from experiments_dagster.cli import main  # noqa"},
            "Tiers: cli > defs > experiment > tracking > ml > core; no import runs up BROKEN",
            "experiments_dagster.core.errors -> experiments_dagster.cli.main",
        ),
        (
            {"ml/drift.py": "import dagster  # noqa"},
            "Dagster only in defs/ and cli/ BROKEN",
            "experiments_dagster.ml.drift -> dagster",
        ),
        (
            {"core/catalog.py": "import mlflow  # noqa"},
            "MLflow only from tracking/ up BROKEN",
            "experiments_dagster.core.catalog -> mlflow",
        ),
    ],
)
def test_the_contract_fails_on_a_scratch_import(tmp_path: Path, scratch, broken, named):
    result = lint_copy(tmp_path, scratch)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout
    assert named in " ".join(result.stdout.split()), result.stdout


def test_the_public_face_exports_the_checks_without_loading_dagster_for_the_lower_tiers():
    code = (
        "import sys, experiments_dagster.ml.cv, experiments_dagster.core.spec\n"
        "assert 'dagster' not in sys.modules and 'mlflow' not in sys.modules, 'loaded too early'\n"
        "import experiments_dagster, experiments_dagster.checks as old\n"
        "assert experiments_dagster.mlflow_completeness_checks is old.mlflow_completeness_checks\n"
        "print(experiments_dagster.mlflow_completeness_checks.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "experiments_dagster.defs.completeness_checks"
