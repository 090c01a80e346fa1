"""The job that materializes one experiment (one dataset version) end to end."""

import dagster as dg

from experiments_dagster.defs.partitions import GROUP

experiment_job = dg.define_asset_job(
    "experiment_job",
    selection=dg.AssetSelection.groups(GROUP),
    # Partitioned by `dataset_versions`, inferred from the assets (Dagster 1.13 deprecates naming it).
    description="Every asset of one dataset version: data, CV, final model, plots, manifest.",
)


def reproduction_selection(job: dg.JobDefinition) -> list[dg.AssetKey]:
    """Every asset of ``job`` but ``model_promotion``: a reproduction trains and logs everything
    and never moves the champion alias."""
    keys = job.asset_layer.asset_graph.get_all_asset_keys()
    return [k for k in keys if k.path != ["model_promotion"]]
