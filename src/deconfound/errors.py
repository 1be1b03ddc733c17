"""The one exception type users see: a one-line message naming the cause and the fix."""

import re


class DeconfoundError(Exception):
    """A problem with the user's input (data, config, checkpoint) rather than a bug.

    The command-line tool prints the message on one line and exits with status 2.
    """


class DataError(DeconfoundError):
    """A data set file is missing, unreadable or malformed."""


class ConfigError(DeconfoundError):
    """A config file or override is malformed or names an unknown option."""


class Stopped(BaseException):
    """A command stopped by a signal: Ctrl-C (SIGINT, exit status 130) or SIGTERM (what SLURM
    and Kubernetes send, 143). The message says what was kept. Not an ``Exception``, so that
    no ``except Exception`` on the way swallows it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    An error raised in a DataLoader worker process comes back re-raised by torch with the
    worker's whole traceback as its message; its own message is the traceback's last line
    (after the exception's name), which is what this returns for it.
    """
    text = str(error)
    if _WORKER.match(text):
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        name, sep, message = last.partition(": ")
        text = message if sep and re.fullmatch(r"[\w.]+", name) else last
    return " ".join(text.split())
