"""experiments_dagster: complete, reproducible MLflow experiments as Dagster assets.

The package is six tiers; each imports only the tiers below it (``make lint`` checks it):

- ``cli/``: argparse and printing; the ``experiments-dagster`` command.
- ``defs/``: Dagster definitions only (assets, checks, jobs, sensors, resources, the IO manager).
- ``experiment/``: the use cases: compute with ``ml/``, record with ``tracking/``.
- ``tracking/``: the MLflow adapter; the only tier that talks to MLflow's clients.
- ``ml/``: plain functions over pandas, numpy and scikit-learn; no Dagster, no MLflow.
- ``core/``: the spec, the dataset catalog, versioning, errors and settings.

The public API is what this module exports.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["mlflow_completeness_checks"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import experiments_dagster.ml.cv` must not load Dagster and MLflow.
    if name == "mlflow_completeness_checks":
        from experiments_dagster.defs.completeness_checks import mlflow_completeness_checks

        return mlflow_completeness_checks
    raise AttributeError(f"module 'experiments_dagster' has no attribute {name!r}")
