"""Whether to draw a progress bar: only where standard error is a terminal (a log file gets no
carriage returns), and never once ``--no-progress`` (or ``trainer.progress_bar: false`` for
what a config drives) turned them off."""

from __future__ import annotations

import sys

_allowed = True


def allow_progress(allowed: bool) -> bool:
    """Allow or forbid progress bars from now on (``--no-progress`` forbids them for one
    command); returns the setting before."""
    global _allowed
    before, _allowed = _allowed, allowed
    return before


def show_progress(wanted: bool = True) -> bool:
    """Whether a bar that the caller ``wanted`` is drawn."""
    return wanted and _allowed and sys.stderr.isatty()
