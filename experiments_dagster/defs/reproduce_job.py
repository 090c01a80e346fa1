"""``reproduce_job``: `experiments-dagster reproduce` from Dagster, with the MLflow run id as config."""

from typing import Any

import dagster as dg
from pydantic import Field

from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.paths import PROJECT_ROOT
from experiments_dagster.tracking.tags import REPRODUCTION_OF


class ReproduceConfig(dg.Config):
    """Which run to reproduce, and how strictly."""

    run_id: str = Field(description="The MLflow parent run to reproduce (its manifest.json is read).")
    strict: bool = Field(default=False, description="Fail on a package version difference.")


def in_process_rerun(instance: dg.DagsterInstance, data_dir: str):
    """Rerun by executing ``experiment_job`` (without promotion) in this process, tagged ``reproduction.of``."""

    def rerun(partition_key: str, original_run_id: str) -> bool:
        from experiments_dagster.defs.definitions import defs  # it imports this module
        from experiments_dagster.defs.jobs import reproduction_selection

        job = defs.resolve_job_def("experiment_job")
        result = job.execute_in_process(
            partition_key=partition_key,
            instance=instance,
            tags={REPRODUCTION_OF: original_run_id},
            asset_selection=reproduction_selection(job),
            run_config={"resources": {"data": {"config": {"data_dir": data_dir}}}},
            raise_on_error=False,
        )
        return result.success

    return rerun


@dg.op
def reproduce_run(
    context: dg.OpExecutionContext, config: ReproduceConfig, mlflow: MlflowTracking, data: ExperimentData
) -> dg.Output[dict[str, Any]]:
    """Check the run's manifest against now, rerun it, compare every param and metric; fail unless all match."""
    from experiments_dagster.reproducing import format_report, reproduce

    report = reproduce(
        mlflow.tracker().client,
        config.run_id,
        in_process_rerun(context.instance, str(data.path())),
        repo=PROJECT_ROOT,
        data_dir=data.path(),
        strict=config.strict,
        at_commit=False,
    )
    for finding in report.findings:
        (context.log.error if finding.blocking else context.log.warning)(finding.message)
    metadata = {
        "verdict": report.verdict,
        "reproduction_run_id": report.rerun_id or "none",
        "comparison": dg.MetadataValue.md(f"```\n{format_report(report)}\n```"),
    }
    if report.exit_code != 0:
        raise dg.Failure(description=f"Run {config.run_id}: {report.verdict}", metadata=metadata)
    return dg.Output(report.to_dict(), metadata=metadata)


@dg.job(
    description="Reproduce an MLflow run from its manifest (config: run_id) and compare with the original."
)
def reproduce_job() -> None:
    reproduce_run()
