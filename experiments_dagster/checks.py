"""The documented import path of ``mlflow_completeness_checks`` before the tiers; it stays for
users' code (``from experiments_dagster import mlflow_completeness_checks`` is the same function)."""

from experiments_dagster.defs.completeness_checks import mlflow_completeness_checks, standard_items

__all__ = ["mlflow_completeness_checks", "standard_items"]
