"""Launchpad config for an experiment, generated from the experiment.yaml schema (spec.py).

Every key experiment.yaml accepts is a field here with the same description, so the launchpad and
the file cannot drift apart. Every field is optional: one left unset comes from experiment.yaml.
"""

from functools import cache
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import dagster as dg
from pydantic import BaseModel, Field, create_model

from experiments_dagster.core.spec import ExperimentSpec

# Set from the dataset's folder, never by a user.
NOT_CONFIGURABLE = frozenset({"dataset"})


def launchpad_type(annotation: Any) -> Any:
    """The type Dagster's config system can show for a spec field's annotation."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        inner = [a for a in args if a is not NoneType]
        if len(inner) != 1:
            raise TypeError(f"Only `X | None` unions are supported in the spec, got {annotation}.")
        return launchpad_type(inner[0])
    if origin is Literal:
        return str  # Dagster has no optional Literal; the spec validates the value and names it
    if origin is tuple:
        return list[launchpad_type(args[0])]
    if origin is list:
        return list[launchpad_type(args[0])]
    if origin is dict:
        return dict[args[0], launchpad_type(args[1])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return launchpad_config(annotation)
    return annotation


@cache
def launchpad_config(model: type[BaseModel]) -> type[dg.Config]:
    """A Dagster Config with every field of ``model``, optional, described as in the spec."""
    fields: dict[str, Any] = {
        name: (launchpad_type(info.annotation) | None, Field(default=None, description=info.description))
        for name, info in model.model_fields.items()
        if name not in NOT_CONFIGURABLE
    }
    name = model.__name__.removesuffix("Spec") + "Config"
    return create_model(name, __base__=dg.Config, __doc__=model.__doc__, __module__=__name__, **fields)


_Generated = launchpad_config(ExperimentSpec)


class ExperimentConfig(_Generated):
    """Overrides of the dataset's experiment.yaml for this run (set on `splits`, travels downstream)."""

    def overrides(self) -> dict[str, Any]:
        """The fields the user set (nested ones too), as spec overrides."""
        return self.model_dump(exclude_none=True)
