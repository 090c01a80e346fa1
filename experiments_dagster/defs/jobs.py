"""The job that materializes one experiment (one dataset version) end to end."""

import dagster as dg

from experiments_dagster.defs.partitions import GROUP, dataset_versions

experiment_job = dg.define_asset_job(
    "experiment_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=dataset_versions,
    description="Every asset of one dataset version: data, CV, final model, plots, manifest.",
)
