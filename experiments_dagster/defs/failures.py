"""User errors as Dagster failures: their message is what the UI shows first."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from experiments_dagster.core.errors import ExperimentInputError


@contextmanager
def input_errors_as_failures() -> Iterator[None]:
    """Re-raise an ``ExperimentInputError`` as ``dg.Failure`` with the same message.

    Dagster wraps any other exception of a step in "Error occurred while executing op", so the
    run's failure summary showed that line and a stack trace, with the user's message only behind
    "View full message". A ``Failure`` is reported as itself: its description leads the step's and
    the run's failure message.
    """
    try:
        yield
    except ExperimentInputError as exc:
        raise dg.Failure(
            description=str(exc), metadata={"error_type": type(exc).__name__}, allow_retries=False
        ) from exc
