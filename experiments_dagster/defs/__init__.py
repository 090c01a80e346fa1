"""defs: Dagster definitions only, the code location loaded by ``workspace.yaml``. Imports experiment/ and below."""

from experiments_dagster.defs.definitions import defs

__all__ = ["defs"]
