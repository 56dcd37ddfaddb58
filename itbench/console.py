"""What itbench prints to a person: progress bars only where a person is watching.

Bars redraw a line many times a second; in a log file or CI output that is
noise, so they show only when stderr is a terminal. The sandboxed child's
stderr is always a pipe, so the runner passes the parent's answer down in
``ITBENCH_PROGRESS`` (``1`` show, ``0`` hide); it can also be set by hand.
"""

from __future__ import annotations

import os
import sys


def show_progress() -> bool:
    """Whether to draw progress bars (``ITBENCH_PROGRESS`` wins, else: is stderr a terminal)."""
    forced = os.environ.get("ITBENCH_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()
