"""``reproduce_job``: `experiments-dagster reproduce` from Dagster, with the MLflow run id as config.

Built by ``build_reproduce_job`` from a function that returns the location's ``experiment_job``
(resolved with its resources by ``definitions.py``), so this module never imports the Definitions
that include it.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.defs.jobs import reproduction_selection
from experiments_dagster.defs.resources import ExperimentData, MlflowTracking
from experiments_dagster.tracking.tags import REPRODUCTION_OF


class ReproduceConfig(dg.Config):
    """Which run to reproduce, and how strictly."""

    run_id: str = Field(description="The MLflow parent run to reproduce (its manifest.json is read).")
    strict: bool = Field(default=False, description="Fail on a package version difference.")


def in_process_rerun(
    instance: dg.DagsterInstance, data_dir: str, experiment_job: Callable[[], dg.JobDefinition]
):
    """Rerun by executing ``experiment_job`` (without promotion) in this process, tagged ``reproduction.of``."""

    def rerun(partition_key: str, original_run_id: str) -> bool:
        job = experiment_job()
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


def build_reproduce_job(experiment_job: Callable[[], dg.JobDefinition]) -> dg.JobDefinition:
    """``reproduce_job``, whose reruns execute what ``experiment_job()`` returns."""

    @dg.op
    def reproduce_run(
        context: dg.OpExecutionContext, config: ReproduceConfig, mlflow: MlflowTracking, data: ExperimentData
    ) -> dg.Output[dict[str, Any]]:
        """Check the run's manifest against now, rerun it, compare every param and metric; fail unless all match."""
        return reproduce_output(context, config, mlflow, data, experiment_job)

    @dg.job(
        description="Reproduce an MLflow run from its manifest (config: run_id) and compare with the original."
    )
    def reproduce_job() -> None:
        reproduce_run()

    return reproduce_job


def reproduce_output(
    context: dg.OpExecutionContext,
    config: ReproduceConfig,
    mlflow: MlflowTracking,
    data: ExperimentData,
    experiment_job: Callable[[], dg.JobDefinition],
) -> dg.Output[dict[str, Any]]:
    """The reproduction's report as the op's output; a dg.Failure unless every value matches."""
    from experiments_dagster.experiment.reproduce import format_report, reproduce

    report = reproduce(
        mlflow.tracker().client,
        config.run_id,
        in_process_rerun(context.instance, str(data.path()), experiment_job),
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
