"""What every asset of the experiment graph shares: its group, and one partition per dataset version."""

import dagster as dg

from experiments_dagster.core.versioning import code_version

GROUP = "experiment"
DATASET_VERSIONS = "dataset_versions"

# Keyed ``<dataset>/<version>``.
dataset_versions = dg.DynamicPartitionsDefinition(name=DATASET_VERSIONS)

# The training and logging code's version (versioning.py): every experiment asset carries it, so
# Dagster's UI marks partitions materialized by other code as out of date.
CODE_VERSION = code_version()
