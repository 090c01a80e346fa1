"""The one exception type for problems a user can cause and fix."""


class ExperimentInputError(ValueError):
    """Bad input (file, column, config): the message names the problem and the fix."""
