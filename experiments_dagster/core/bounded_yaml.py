"""Reading a small YAML settings file with bounds checked before anything is built from it.

``yaml.safe_load`` expands aliases (a 3 KB file of nested aliases becomes gigabytes of lists)
and builds nested values recursively (100,000 levels of ``[`` end in a ``RecursionError``). Here
the size is checked before the file is read, and the parser's event stream (flat: the parser is
a state machine, not a recursion) is walked first: an anchor or alias, or nesting deeper than
``MAX_DEPTH``, stops it at once. Only then are the values built. Errors name the file and say
what is wrong in one line (``from None``: the row of a failed run shows the innermost cause).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments_dagster.core.errors import ExperimentInputError

MAX_BYTES = 256 * 1024
MAX_DEPTH = 20

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def read_bounded(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The text of ``path`` if it is at most ``max_bytes`` bytes of UTF-8 (checked before reading)."""
    try:
        size = path.stat().st_size
        if size <= max_bytes:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)  # the file may grow after the stat
            size = max(size, len(data))
    except OSError as exc:
        raise ExperimentInputError(f"{path} cannot be read: {exc.strerror or exc}.") from None
    if size > max_bytes:
        raise ExperimentInputError(
            f"{path} is {size:,} bytes, more than the {max_bytes:,} bytes a settings file may have; "
            "it is not read."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentInputError(f"{path} is not UTF-8 text: {exc}.") from None


def check_shape(text: str, path: Path, max_depth: int = MAX_DEPTH) -> None:
    """Refuse anchors, aliases, several documents and nesting deeper than ``max_depth``."""
    depth = documents = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                mark = f" (line {event.start_mark.line + 1})" if event.start_mark else ""
                raise ExperimentInputError(
                    f"{path} uses a YAML anchor or alias{mark}; write each value out instead "
                    "(aliases are refused: a few of them can expand to gigabytes)."
                )
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
            elif isinstance(event, _OPENING):
                depth += 1
                if depth > max_depth:
                    raise ExperimentInputError(
                        f"{path} nests lists or mappings more than {max_depth} levels deep "
                        f"(line {event.start_mark.line + 1}); settings need far fewer."
                    )
            elif isinstance(event, _CLOSING):
                depth -= 1
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's scanner looks ahead through flow `[[[`
            raise ExperimentInputError(
                f"{path} nests lists or mappings more than {max_depth} levels deep; settings need far fewer."
            ) from None
        raise ExperimentInputError(f"{path} is not valid YAML: {exc}") from None
    if documents > 1:
        raise ExperimentInputError(f"{path} holds {documents} YAML documents; it must hold one.")


def load_bounded(path: Path, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The value in the YAML file ``path``, refused (naming it) if too big, aliased or too deep."""
    text = read_bounded(path, max_bytes)
    check_shape(text, path, max_depth)
    try:
        return yaml.load(text, Loader=_LOADER)  # CSafeLoader or SafeLoader
    except yaml.YAMLError as exc:
        raise ExperimentInputError(f"{path} is not valid YAML: {exc}") from None
