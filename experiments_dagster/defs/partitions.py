"""What every asset of the experiment graph shares: its group, and one partition per dataset version."""

import dagster as dg

GROUP = "experiment"
DATASET_VERSIONS = "dataset_versions"

# Keyed ``<dataset>/<version>``.
dataset_versions = dg.DynamicPartitionsDefinition(name=DATASET_VERSIONS)
