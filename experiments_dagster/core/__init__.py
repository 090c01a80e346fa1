"""core: the spec, the dataset catalog, versioning, errors and settings. Imports no other tier, no Dagster, no MLflow."""
