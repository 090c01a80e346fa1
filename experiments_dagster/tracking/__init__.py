"""tracking: the MLflow adapter (runs, artifacts, models, registry, the audit). Imports ml/ and core/; no Dagster."""
