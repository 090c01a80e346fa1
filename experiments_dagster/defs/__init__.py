"""Dagster wiring: the code location loaded by ``workspace.yaml``."""

from experiments_dagster.defs.definitions import defs

__all__ = ["defs"]
