"""experiments_dagster: complete, reproducible MLflow experiments as Dagster assets."""

__version__ = "0.1.0"
