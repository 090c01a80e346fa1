"""experiment: the use cases, computed with ml/ and recorded with tracking/, one module per feature. Imports tracking/, ml/, core/; no Dagster."""
