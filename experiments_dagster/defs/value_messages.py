"""What the IO manager says when a stored value is missing, refused or cannot be stored."""

from typing import Any

import dagster as dg


def value_names(context: dg.InputContext, partition: str | None) -> tuple[str, str] | None:
    """("asset 'a' partition 'p'", "Materialize 'a' for partition 'p'"); None for an op output."""
    if not context.has_asset_key:
        return None
    asset = context.asset_key.to_user_string()
    of = f"asset {asset!r}" + (f" partition {partition!r}" if partition is not None else "")
    materialize = f"Materialize {asset!r}" + (
        f" for partition {partition!r}" if partition is not None else ""
    )
    return of, materialize


def op_output_name(context: dg.InputContext) -> str:
    upstream = context.upstream_output
    return f"output {upstream.name!r} of step {upstream.step_key!r}" if upstream else "the upstream output"


def missing_value_message(context: dg.InputContext, path: Any, partition: str | None) -> str:
    """What is missing, where it was looked for, and how to produce it."""
    names = value_names(context, partition)
    if names is None:
        return (
            f"No stored value for {op_output_name(context)}: {path} does not exist. "
            "Re-execute the run from its start."
        )
    of, materialize = names
    return (
        f"No stored value for {of}: {path} does not exist (never materialized here, or deleted). "
        f"{materialize} first (e.g. select it together with this asset), then run this step again."
    )


def replace_value(context: dg.InputContext, partition: str | None) -> tuple[str, str]:
    """(what the value is, how to store it anew) for a value that cannot be used."""
    names = value_names(context, partition)
    if names is None:
        return op_output_name(context), "Re-execute the run from its start"
    of, materialize = names
    return of, f"{materialize} again (and the assets downstream of it)"


def untrusted_value_message(context: dg.InputContext, path: Any, partition: str | None, why: str) -> str:
    """Why stored bytes were refused (not unpickled), and how to replace them."""
    of, fix = replace_value(context, partition)
    return (
        f"Refused the stored value of {of} at {path}: {why}, so it was not unpickled (a pickle can run "
        f"code). A value stored before values were signed, or by another deployment, is refused too. "
        f"{fix} to replace it with one this deployment signs."
    )


def stale_value_message(
    context: dg.InputContext, path: Any, partition: str | None, exc: BaseException
) -> str:
    """A signed value whose classes this code no longer has (stored before a module moved)."""
    of, fix = replace_value(context, partition)
    return (
        f"The stored value of {of} at {path} was written by another version of this code and cannot "
        f"be read by this one ({type(exc).__name__}: {exc}). {fix} to store it anew."
    )


def unpicklable_error(obj: Any, exc: BaseException) -> dg.DagsterInvariantViolationError:
    return dg.DagsterInvariantViolationError(
        f"A value of type {type(obj).__qualname__} cannot be pickled ({type(exc).__name__}: {exc}), so "
        "it cannot be stored for the next steps. Return a picklable value."
    )
