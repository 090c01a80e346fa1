"""Plain ML functions: pandas/numpy/sklearn/matplotlib in, data out. No Dagster, no MLflow."""
