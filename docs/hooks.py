"""MkDocs hooks: reference tables generated from the code, so the documentation and the code
cannot drift apart. A page asks for one with a marker line, e.g. ``<!-- generated: cli -->``.

- ``experiment-yaml``: every key of ``experiment.yaml`` from ``spec.ExperimentSpec`` (the same
  fields the launchpad config is generated from), nested sections included;
- ``cli``: every ``experiments-dagster`` subcommand and option from its argparse parser;
- ``definitions``: the code location's assets, asset checks, jobs and sensors from ``defs``;
- ``environment``: every environment variable from ``core.settings.SETTINGS``.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.is_required():
        return "required"
    if hasattr(info.default, "model_dump"):
        return "its keys below"
    if info.default_factory is not None:
        return f"`{info.default_factory()!r}`"
    return "unset" if info.default in (None, PydanticUndefined) else f"`{info.default!r}`"


def _bounds(info: Any) -> str:
    found = []
    for item in info.metadata:
        for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, name, None) is not None:
                found.append(f"{sign} {getattr(item, name)}")
    return ", ".join(found)


def experiment_yaml() -> str:
    from pydantic import BaseModel

    from experiments_dagster.core.spec import ExperimentSpec

    rows = ["| key | default | bounds | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            rows.append(f"| `{key}` | {_default(info)} | {_bounds(info)} | {_cell(info.description or '')} |")
            for arg in getattr(info.annotation, "__args__", ()) + (info.annotation,):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{key}.")
                    break

    walk(ExperimentSpec, "")
    return "\n".join(rows)


def cli() -> str:
    """Each subcommand's own ``--help``, as argparse prints it (argparse has no public API to walk
    a parser's actions, so the help text is the source)."""
    from experiments_dagster.cli.main import build_parser

    usage = build_parser().format_usage()
    names = re.search(r"\{([a-z,-]+)\}", usage).group(1).split(",")
    out = []
    for name in names:
        text = io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
            build_parser().parse_args([name, "--help"])
        out += [f"### `experiments-dagster {name}`", "", "```text", text.getvalue().strip(), "```", ""]
    return "\n".join(out)


def definitions() -> str:
    from experiments_dagster.defs import defs

    graph = defs.resolve_asset_graph()
    out = ["| asset | upstream | description |", "|---|---|---|"]
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        parents = ", ".join(f"`{p.to_user_string()}`" for p in sorted(node.parent_keys, key=str))
        out.append(f"| `{key.to_user_string()}` | {parents} | {_cell(node.description or '')} |")
    out += ["", "| asset check | on asset | blocking | description |", "|---|---|---|---|"]
    for check in sorted(graph.asset_check_keys, key=lambda k: k.name):
        spec = graph.get_check_spec(check)
        blocking = "yes" if spec.blocking else "no"
        out.append(
            f"| `{check.name}` | `{check.asset_key.to_user_string()}` | {blocking} | {_cell(spec.description or '')} |"
        )
    out += ["", "| job | description |", "|---|---|"]
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if not job.name.startswith("__"):
            out.append(f"| `{job.name}` | {_cell(job.description or '')} |")
    out += ["", "| sensor | description |", "|---|---|"]
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        out.append(f"| `{sensor.name}` | {_cell(sensor.description or '')} |")
    return "\n".join(out)


def environment() -> str:
    from experiments_dagster.core.settings import SETTINGS

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {_cell(s.default)} | {_cell(s.meaning)} |" for s in SETTINGS]
    return "\n".join(rows)


GENERATORS = {
    "experiment-yaml": experiment_yaml,
    "cli": cli,
    "definitions": definitions,
    "environment": environment,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker line with its generated table (an unknown marker fails the build)."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: unknown generated section {name!r}")
        return GENERATORS[name]()

    return MARKER.sub(expand, markdown)
