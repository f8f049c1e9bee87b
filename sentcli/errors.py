"""Errors the library raises for bad usage or bad input; the CLI maps them to exit code 2
(1 for a run that failed)."""


class SentcliError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class ConfigError(SentcliError):
    """Invalid options or configuration values."""


class DiskFullError(ConfigError):
    """A write ran out of disk: the machine's state, not a bug (one line, exit 2)."""


class DataError(SentcliError):
    """A data source that cannot be read or holds bad rows."""


class TokenizerError(SentcliError):
    """A tokenizer file that is missing, unreadable or does not fit."""


class CheckpointError(SentcliError):
    """A run folder that is missing files, is corrupt or does not fit."""


class TrainingError(SentcliError):
    """Training stopped on a non-finite loss (the last good checkpoint is kept); exit 1."""

    exit_code = 1
