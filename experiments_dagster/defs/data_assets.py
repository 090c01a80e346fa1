"""Assets that read and fingerprint a dataset version."""

import warnings

import dagster as dg
import pandas as pd

from experiments_dagster.core.catalog import version_file
from experiments_dagster.core.dataset import hash_file, load_table
from experiments_dagster.defs.failures import input_errors_as_failures
from experiments_dagster.defs.partitions import CODE_VERSION, GROUP, dataset_versions
from experiments_dagster.defs.resources import ExperimentData
from experiments_dagster.experiment.values import DataFingerprint
from experiments_dagster.tracking.liveness import worker_id

# `Output(data_version=...)` is Dagster's documented way to set an asset's data version, marked
# beta in 1.13, so every materialization of `data_hash` printed this BetaWarning. Only this one
# message, only in this category, is silenced; other beta warnings stay visible.
warnings.filterwarnings(
    "ignore", message="Parameter `data_version` of initializer `Output.__init__`", category=dg.BetaWarning
)


@dg.asset(code_version=CODE_VERSION, partitions_def=dataset_versions, group_name=GROUP, kinds={"pandas"})
def raw_data(context: dg.AssetExecutionContext, data: ExperimentData) -> dg.Output[pd.DataFrame]:
    """One dataset version, as read from `data/<dataset>/<version>.csv|.parquet`."""
    with input_errors_as_failures():
        found = version_file(data.path(), context.partition_key)
        frame = load_table(found.path)
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in frame.dtypes.items()])
    return dg.Output(
        frame,
        metadata={
            "path": dg.MetadataValue.path(str(found.path)),
            "worker": worker_id(),
            "dagster/row_count": len(frame),
            "columns": frame.shape[1],
            "dagster/column_schema": schema,
        },
    )


@dg.asset(code_version=CODE_VERSION, partitions_def=dataset_versions, group_name=GROUP, kinds={"python"})
def data_hash(
    context: dg.AssetExecutionContext, data: ExperimentData, raw_data: pd.DataFrame
) -> dg.Output[DataFingerprint]:
    """sha256 of the version file's bytes with size, shape and schema; it is the data version."""
    with input_errors_as_failures():
        found = version_file(data.path(), context.partition_key)
        digest = hash_file(found.path)
    fp = DataFingerprint(
        dataset=found.dataset,
        version=found.version,
        path=str(found.path),
        sha256=digest.sha256,
        size_bytes=digest.size_bytes,
        rows=len(raw_data),
        columns=raw_data.shape[1],
        schema={str(c): str(t) for c, t in raw_data.dtypes.items()},
    )
    return dg.Output(
        fp,
        data_version=dg.DataVersion(digest.sha256),
        metadata={
            "sha256": digest.sha256,
            "worker": worker_id(),
            "size_bytes": digest.size_bytes,
            "dagster/row_count": fp.rows,
            "columns": fp.columns,
        },
    )
