"""One partition per dataset version, keyed ``<dataset>/<version>``."""

import dagster as dg

DATASET_VERSIONS = "dataset_versions"

dataset_versions = dg.DynamicPartitionsDefinition(name=DATASET_VERSIONS)
