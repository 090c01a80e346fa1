"""The tracking layer: MLflow run lifecycle, batching, the logging standard and the audit."""
