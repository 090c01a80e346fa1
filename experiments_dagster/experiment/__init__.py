"""experiment: the use cases, computed with ml/ and recorded with tracking/, one module per feature. No Dagster."""
