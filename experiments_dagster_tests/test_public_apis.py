"""The package uses Dagster, MLflow, scikit-learn and the standard library through public names only.

A private name (``from dagster._core ...``, ``mlflow.tracking._tracking_service``, an
``_``-prefixed function or attribute of an imported module) is a fork to re-prove at every
upgrade. ``ALLOWED`` names each exception and why no public path exists; keep it empty.
"""

from __future__ import annotations

import ast
from pathlib import Path

from experiments_dagster.core.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "experiments_dagster"
DEVSTACK = PROJECT_ROOT / "devstack"  # the local stack: outside the package, same rule
WATCHED = (
    "dagster",
    "dagster_postgres",
    "dagster_celery",
    "dagster_mlflow",
    "mlflow",
    "sklearn",
    "optuna",
    "skops",
    "xgboost",
    "celery",
)

# (file relative to the project, private name) -> why there is no public path.
ALLOWED: dict[tuple[str, str], str] = {}


def _private(dotted: str) -> bool:
    return any(
        part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
        for part in dotted.split(".")
    )


def private_uses(path: Path) -> list[str]:
    """Every private library name the module imports or reaches through an imported module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    modules: set[str] = set()  # local names bound to imported modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in WATCHED and _private(alias.name):
                    found.append(alias.name)
                modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root in WATCHED:
                if _private(node.module):
                    found.append(node.module)
                found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
    for node in ast.walk(tree):
        # module._name (os._exit, atexit._run_exitfuncs, mlflow.tracking._tracking_service ...)
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules:
                found.append(".".join([value.id, *reversed(chain)]))
    return found


def test_private_name_detector_finds_each_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport mlflow\nfrom dagster._core.storage import x\nfrom sklearn.utils import _safe\n"
        "import mlflow.tracking._tracking_service\nfrom mlflow.utils.validation import MAX_TAG_VAL_LENGTH\n"
        "os._exit(0)\nmlflow.tracking._tracking_service.utils\nself_like = object()\nself_like._x\n"
    )
    assert private_uses(sample) == [
        "dagster._core.storage",
        "sklearn.utils._safe",
        "mlflow.tracking._tracking_service",
        "os._exit",
        "mlflow.tracking._tracking_service",
    ]


def test_package_imports_no_private_library_name() -> None:
    uses = {
        (str(path.relative_to(PROJECT_ROOT)), name)
        for path in sorted([*PACKAGE.rglob("*.py"), *DEVSTACK.rglob("*.py")])
        for name in private_uses(path)
    }
    assert sorted(uses - set(ALLOWED)) == []
    assert sorted(set(ALLOWED) - uses) == [], "an allow-list entry is no longer needed: remove it"
