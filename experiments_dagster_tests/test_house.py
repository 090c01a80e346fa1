"""House rule: no function of the package is over 60 lines (a long function becomes named steps)."""

from __future__ import annotations

import ast
from pathlib import Path

import experiments_dagster

PACKAGE = Path(experiments_dagster.__file__).parent
MAX_FUNCTION_LINES = 60


def long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name length`` of every function or method under ``root`` longer than ``limit``
    lines, counted from its ``def`` line to its last line (decorators not counted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} {length}")
    return found


def test_no_function_is_over_60_lines() -> None:
    too_long = long_functions()
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_a_long_function_is_named_with_its_file_line_and_length(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/long.py:5 long 62"]
