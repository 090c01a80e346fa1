"""The wheel ships the runtime package only: not the development stack (devstack/), nor its old home,
nor the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from experiments_dagster.core.paths import PROJECT_ROOT

# What `pip wheel .` reads: the build configuration and every package folder it could find.
SOURCES = ("pyproject.toml", "README.md", "experiments_dagster", "experiments_dagster_tests", "devstack")


@pytest.mark.slow
def test_the_wheel_holds_experiments_dagster_and_not_the_stack(tmp_path: Path):
    source = tmp_path / "source"  # a copy, so the build's build/ and egg-info stay out of the project
    source.mkdir()
    for name in SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(PROJECT_ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(PROJECT_ROOT / name, source / name)
    assert (source / "devstack" / "__main__.py").is_file()  # there to be left out
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("experiments_dagster-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    left_out = ("devstack/", "experiments_dagster/stack/", "experiments_dagster_tests/")
    assert [n for n in names if n.startswith(left_out)] == []
    assert "experiments_dagster/__init__.py" in names
    assert "experiments_dagster/cli/main.py" in names
    assert any(n.startswith("experiments_dagster/core/") for n in names)
