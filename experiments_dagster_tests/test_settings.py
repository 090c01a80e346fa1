"""core/settings.py is the one reader of the environment, and it declares every name it reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import experiments_dagster
from experiments_dagster.core import cpus, settings

PACKAGE = Path(experiments_dagster.__file__).parent
SETTINGS_MODULE = PACKAGE / "core" / "settings.py"
CLI = PACKAGE / "cli"


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch ``os.environ``/``os.getenv``/``os.putenv`` or import them from ``os``."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"environ", "getenv", "putenv", "environb", "unsetenv"}
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in {"environ", "getenv", "putenv", "environb"} for alias in node.names):
                lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == SETTINGS_MODULE or CLI in path.parents:
            continue
        lines = environment_reads(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert found == {}, f"read the environment through experiments_dagster.core.settings instead: {found}"


def test_the_scan_sees_each_form_of_reading() -> None:
    source = "import os\nfrom os import getenv\na = os.environ['X']\nb = os.getenv('Y')\n"
    assert sorted(environment_reads(ast.parse(source))) == [2, 3, 4]


def test_every_name_constant_is_declared_once_with_a_meaning() -> None:
    names = [s.name for s in settings.SETTINGS]
    assert len(names) == len(set(names))
    constants = {value for key, value in vars(settings).items() if key.endswith("_ENV")}
    assert constants == set(names)
    assert all(s.meaning and s.default for s in settings.SETTINGS)


def test_an_undeclared_name_is_refused() -> None:
    with pytest.raises(KeyError, match="EXPERIMENTS_NO_SUCH_SETTING is not declared"):
        settings.raw("EXPERIMENTS_NO_SUCH_SETTING")


def test_integer_settings_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.CACHE_ENV, " 64 ")
    assert settings.io_cache_mb() == 64
    monkeypatch.setenv(settings.CACHE_ENV, "-1")
    with pytest.raises(Exception, match=r"EXPERIMENTS_IO_CACHE_MB='-1' is not valid"):
        settings.io_cache_mb()


def test_fold_budget_reads_the_memory_only_without_a_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.delenv(settings.CPUS_ENV, raising=False)
    monkeypatch.setenv(settings.CV_MEMORY_ENV, "lots")  # not read while a worker count is set
    monkeypatch.setenv(settings.CV_WORKERS_ENV, "2")
    assert cpus.fold_budget() == {"cpus": 4, "workers": 2, "memory_mb": 0}
    monkeypatch.delenv(settings.CV_WORKERS_ENV)
    monkeypatch.setenv(settings.CV_MEMORY_ENV, "64")
    assert cpus.fold_budget() == {"cpus": 4, "workers": 0, "memory_mb": 64}
