"""The one exception type users see: a one-line message naming the cause and the fix."""


class DeconfoundError(Exception):
    """A problem with the user's input (data, config, checkpoint) rather than a bug.

    The command-line tool prints the message on one line and exits with status 2.
    """


class DataError(DeconfoundError):
    """A data set file is missing, unreadable or malformed."""


class ConfigError(DeconfoundError):
    """A config file or override is malformed or names an unknown option."""
