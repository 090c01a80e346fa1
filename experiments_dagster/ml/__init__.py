"""ml: plain ML functions, pandas/numpy/sklearn/matplotlib in, data out. Imports core/ only; no Dagster, no MLflow."""
