"""One exception type for everything a user can get wrong.

CLIs catch :class:`DistillError` at the top and print its message as one line (no traceback)
with a non-zero exit; see :func:`distill.cli.one_line_errors`.
"""


class DistillError(Exception):
    """A user-facing error: the message names the file/line/field and what was expected."""


class DataError(DistillError):
    """Malformed or inconsistent input data."""


class CheckpointError(DistillError):
    """A checkpoint or export folder that cannot be (safely) loaded."""


class ConfigError(DistillError):
    """An invalid configuration value."""
