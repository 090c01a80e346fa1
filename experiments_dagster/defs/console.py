"""The console logger of every job: step starts and ends, check results and INFO messages, not every
DEBUG step event (inputs, outputs, handled values), unless its level is set to DEBUG."""

from __future__ import annotations

import logging
import sys

import dagster as dg

from experiments_dagster.core import settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.settings import LOG_LEVEL_ENV

# Dagster instantiates a job's custom logger only when the run config names it; runs that name
# none (launched from the UI) use Dagster's console at dagster.yaml's `python_logs.python_log_level`.
CONSOLE_RUN_CONFIG = {"loggers": {"console": {}}}

# Dagster logs every event at DEBUG; these are the ones a user follows a run by.
SHOWN_EVENTS = frozenset(
    {
        dg.DagsterEventType.RUN_START.value,
        dg.DagsterEventType.RUN_SUCCESS.value,
        dg.DagsterEventType.RUN_FAILURE.value,
        dg.DagsterEventType.RUN_CANCELED.value,
        dg.DagsterEventType.STEP_START.value,
        dg.DagsterEventType.STEP_SUCCESS.value,
        dg.DagsterEventType.STEP_FAILURE.value,
        dg.DagsterEventType.STEP_SKIPPED.value,
        dg.DagsterEventType.ASSET_MATERIALIZATION.value,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION.value,
    }
)


def event_type_of(record: logging.LogRecord) -> str | None:
    """The Dagster event type a log record carries, if any (Dagster's console loggers get records
    with a ``dagster_meta`` mapping whose ``dagster_event`` is a ``dg.DagsterEvent`` or None)."""
    meta = getattr(record, "dagster_meta", None)
    event = meta.get("dagster_event") if isinstance(meta, dict) else None
    return event.event_type_value if isinstance(event, dg.DagsterEvent) else None


class UserFacingEvents(logging.Filter):
    """Records at ``level`` or above, and the events of ``SHOWN_EVENTS`` whatever their level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or event_type_of(record) in SHOWN_EVENTS


@dg.logger(
    config_schema={
        "log_level": dg.Field(
            str,
            is_required=False,
            default_value=settings.log_level(),
            description=(
                "INFO (default, or $EXPERIMENTS_LOG_LEVEL): step starts and ends, check results, "
                "MLflow links and warnings; DEBUG: every Dagster event."
            ),
        )
    },
    description="Console logger: step starts/ends, check results and INFO messages (DEBUG: everything).",
)
def experiment_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A stderr logger that filters Dagster's DEBUG events down to the user-facing ones."""
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    if not isinstance(level, int):
        raise ExperimentInputError(
            f"Console log_level {init_context.logger_config['log_level']!r} is not a logging level: "
            f"set {LOG_LEVEL_ENV} or the launchpad's loggers.console.config.log_level to DEBUG, INFO, "
            "WARNING or ERROR."
        )
    logger = logging.Logger("dagster", level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - dagster - %(levelname)s - %(message)s"))
    handler.addFilter(UserFacingEvents(level))
    logger.addHandler(handler)
    return logger
