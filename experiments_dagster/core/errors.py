"""The exception types for problems a user can cause and fix."""


class ExperimentInputError(ValueError):
    """Bad input (file, column, config): the message names the problem and the fix."""


class UsageError(Exception):
    """Bad arguments or an unreachable store: the command exits 2."""
